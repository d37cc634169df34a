"""Demonstrations for training the embedded model: the recorder (held-out start layouts, DART noise, workers) and the
demo files it writes."""
