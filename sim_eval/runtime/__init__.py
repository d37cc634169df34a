"""Running an evaluation: the job (plan, resume, evaluate), the episode runner, the control loop (rollout), worker
processes, the batched policy server, device pinning and the experiment loggers."""
