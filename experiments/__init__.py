"""Hydra entry points, the experiment runner and report writing."""
