"""Sparsity rules shared by SSC and the pruned baselines (initialization scale, mixing)."""

from ssconv.sparsity.init import DEFAULT_INIT_SCALE, INIT_SCALES, rescale_init

__all__ = ["DEFAULT_INIT_SCALE", "INIT_SCALES", "rescale_init"]
