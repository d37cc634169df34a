"""sim_eval: closed-loop LIBERO evaluation of Pi0.5 prefix-cache modes."""
