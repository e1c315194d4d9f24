"""An independent, loop-by-loop reading of SSC_SPEC.md section 1, used as the tests' oracle."""

from __future__ import annotations

import torch


def spec_kernel_type(
    o: int, i: int, c_in: int, c_out: int, groups: int, period, pointwise: bool, point_groups=None
):
    """'S', 'P' or 'E' for the pair (o, i), straight from the spec's wording; with
    ``point_groups`` (docs/ssc.md's extension) a 1 x 1 pair also needs ``o`` and ``i`` in the
    same of ``point_groups`` equal blocks."""
    cin_g, cout_g = c_in // groups, c_out // groups
    if o // cout_g != i // cin_g:
        return "E"
    i_loc, o_loc = i % cin_g, o % cout_g
    if period is not None and (i_loc - o_loc) % period == 0:
        return "S"
    if point_groups is not None and o // (c_out // point_groups) != i // (c_in // point_groups):
        return "E"
    return "P" if pointwise else "E"


def spec_dense_mask(c_in, c_out, k, groups, period, pointwise, spatial, point_groups=None):
    """(C_out, C_in/G, kh, kw) bool mask of the taps the spec allows."""
    kh, kw = (k, k) if isinstance(k, int) else k
    cin_g = c_in // groups
    mask = torch.zeros(c_out, cin_g, kh, kw, dtype=torch.bool)
    for o in range(c_out):
        o_loc = o % (c_out // groups)
        g = o // (c_out // groups)
        for i_loc in range(cin_g):
            i = g * cin_g + i_loc
            t = spec_kernel_type(o, i, c_in, c_out, groups, period, pointwise, point_groups)
            if t == "P":
                mask[o, i_loc, kh // 2, kw // 2] = True
            elif t == "S":
                if spatial == "full":
                    mask[o, i_loc] = True
                else:
                    j = ((i_loc - o_loc) % cin_g) // period
                    parity = (j + o_loc) % 2
                    for u in range(kh):
                        for v in range(kw):
                            if (u + v) % 2 == parity:
                                mask[o, i_loc, u, v] = True
    return mask


def spec_params(c_in, c_out, k, groups, period, pointwise, spatial) -> float:
    """The spec's section-2 formula (checkerboard: exact count from the mask)."""
    if spatial == "checkerboard":
        return int(spec_dense_mask(c_in, c_out, k, groups, period, pointwise, spatial).sum())
    kh, kw = (k, k) if isinstance(k, int) else k
    inv_p = 0.0 if period is None else 1.0 / period
    return c_out * (c_in / groups) * (kh * kw * inv_p + (1.0 if pointwise else 0.0) * (1 - inv_p))
