"""Policies sim_eval evaluates: the protocol (``base``), the cache controller and the engines behind it."""
