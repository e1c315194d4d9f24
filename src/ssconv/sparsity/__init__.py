"""Sparsity rules shared by SSC and the pruned baselines (initialization scale)."""

from ssconv.sparsity.init import INIT_SCALES, rescale_init

__all__ = ["INIT_SCALES", "rescale_init"]
