"""What a run writes and keeps: episode records (schema, kill-safe log, dedupe, arm names), the run's identity and
manifest, and episode videos."""
