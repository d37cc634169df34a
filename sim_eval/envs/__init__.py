"""Simulator environments."""
