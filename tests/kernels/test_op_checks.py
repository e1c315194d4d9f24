"""The public custom op ``torch.ops.ssconv.fused_conv2d`` checks every tensor it receives
(dtype, device, contiguity, sizes, index ranges) before the kernel reads it through a raw
pointer: a bad argument raises instead of reading or writing out of bounds."""

import pytest
import torch

from ssconv import SSConv2d
from ssconv.kernels import fused

needs_kernel = pytest.mark.skipif(
    not fused.available(), reason=f"fused kernel not built: {fused.build_error()}"
)

GEOMETRY = [3, 3, 1, 1, 1, 1, 1, 1]  # kh, kw, sh, sw, ph, pw, dh, dw
NAMES = ("x", "w", "ch", "seg_tap", "seg_beg", "blk_seg", "out_idx", "blk_base", "bias")


def _args():
    layer = SSConv2d(16, 16, 3, padding=1, period=4, bias=True)
    packed = fused.pack(layer.to_dense(), layer.pattern.dense_mask(), layer.bias, 1)
    tensors = {
        "x": torch.randn(2, 16, 5, 5),
        "w": packed.w,
        "ch": packed.ch,
        "seg_tap": packed.seg_tap,
        "seg_beg": packed.seg_beg,
        "blk_seg": packed.blk_seg,
        "out_idx": packed.out_idx,
        "blk_base": packed.blk_base,
        "bias": packed.bias,
    }
    return tensors, packed.vb


def _call(tensors, vb, geometry=GEOMETRY, in_channels=16):
    return torch.ops.ssconv.fused_conv2d(
        *(tensors[n] for n in NAMES), in_channels, 16, geometry, vb
    )


def _strided(t):
    """The same values, not contiguous."""
    return torch.stack([t, t], -1)[..., 0]


@needs_kernel
def test_good_arguments_run():
    tensors, vb = _args()
    assert _call(tensors, vb).shape == (2, 16, 5, 5)


BAD = {
    "x int64": ("x", lambda t: t.long(), "x must be a 4-D float32 or float64 CPU tensor"),
    "x 3-D": ("x", lambda t: t[0], "x must be a 4-D"),
    "x channels": ("x", lambda t: t[:, :8], "expected 16 input channels, got 8"),
    "w dtype": ("w", lambda t: t.double(), "w must be a contiguous"),
    "w strided": ("w", _strided, "w must be a contiguous"),
    "w shape": ("w", lambda t: t[:-1], "w must be a contiguous"),
    "ch dtype": ("ch", lambda t: t.long(), "ch must be a contiguous 1-D Int CPU tensor"),
    "ch strided": ("ch", _strided, "ch must be a contiguous"),
    "ch range": ("ch", lambda t: t.clone().fill_(16), "ch out of range"),
    "ch negative": ("ch", lambda t: t.clone().fill_(-1), "ch out of range"),
    "seg_tap dtype": ("seg_tap", lambda t: t.long(), "seg_tap must be a contiguous"),
    "seg_tap range": ("seg_tap", lambda t: t.clone().fill_(9), "seg_tap out of range"),
    "seg_beg dtype": ("seg_beg", lambda t: t.int(), "seg_beg must be a contiguous 1-D Long"),
    "seg_beg size": ("seg_beg", lambda t: t[:-1], "inconsistent packing sizes"),
    "seg_beg end": ("seg_beg", lambda t: t.clone().fill_(0), "seg_beg must run from 0"),
    "blk_seg strided": ("blk_seg", _strided, "blk_seg must be a contiguous"),
    "blk_seg size": ("blk_seg", lambda t: t[:-1], "inconsistent packing sizes"),
    "out_idx dtype": ("out_idx", lambda t: t.long(), "out_idx must be a contiguous"),
    "out_idx range": ("out_idx", lambda t: t.clone().fill_(16), "out_idx out of range"),
    "blk_base range": ("blk_base", lambda t: t.clone().fill_(15), "blk_base out of range"),
    "blk_base 2-D": ("blk_base", lambda t: t.view(1, -1), "blk_base must be a contiguous 1-D"),
    "bias size": ("bias", lambda t: t[:-1], "bias must be a contiguous"),
    "bias dtype": ("bias", lambda t: t.double(), "bias must be a contiguous"),
}


@needs_kernel
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_tensor_raises(case):
    name, corrupt, message = BAD[case]
    tensors, vb = _args()
    tensors[name] = corrupt(tensors[name])
    with pytest.raises(RuntimeError, match=message):
        _call(tensors, vb)


@needs_kernel
@pytest.mark.parametrize(
    ("geometry", "vb", "message"),
    [
        ([3, 3, 0, 1, 1, 1, 1, 1], None, "bad stride, padding or dilation"),
        ([3, 3, 1, 1, -1, 1, 1, 1], None, "bad stride, padding or dilation"),
        ([3, 3, 1, 1, 0, 0, 9, 9], None, "input too small for the kernel"),
        (GEOMETRY, 5, "vb must be 4, 8 or 16"),
    ],
)
def test_bad_geometry_raises(geometry, vb, message):
    tensors, packed_vb = _args()
    with pytest.raises(RuntimeError, match=message):
        _call(tensors, vb or packed_vb, geometry)


@needs_kernel
def test_in_channels_must_match_the_input():
    tensors, vb = _args()
    with pytest.raises(RuntimeError, match="expected 12 input channels, got 16"):
        _call(tensors, vb, in_channels=12)
