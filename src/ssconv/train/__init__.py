"""Training: the config (dataclass with help text), the loop with checkpoints and exact resume,
the method builder (dense, SSC or a rival at the same budget) and sweeps of runs."""
