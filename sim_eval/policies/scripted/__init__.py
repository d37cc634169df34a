"""Privileged scripted expert for LIBERO (a policy like any other: ``policy=scripted``)."""

from sim_eval.policies.scripted.expert import ScriptedExpert

__all__ = ["ScriptedExpert"]
