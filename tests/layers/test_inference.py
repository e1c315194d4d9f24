"""The frozen twin of SSConv2d matches the layer, in both modes."""

import pytest
import torch

from ssconv import SSConv2d
from ssconv.layers.inference import SSConv2dInference


@pytest.mark.parametrize(
    "kwargs",
    [
        {"period": 4, "padding": 1},
        {"period": 2, "pointwise": False, "stride": 2, "padding": 0, "bias": True},
        {"period": 3, "groups": 2, "padding": 2, "dilation": 2, "padding_mode": "reflect"},
        {"period": 4, "padding": 1, "spatial": "checkerboard", "bias": False},
        {"period": None, "padding": 1},
        {"period": 1, "groups": 2, "padding": 1},
    ],
)
def test_inference_layer_matches_ssconv(kwargs):
    c_out = 12 if kwargs.get("period") != 3 else 10  # 3 does not divide 10 / 2: padded rows
    layer = SSConv2d(12, c_out, 3, **kwargs)
    x = torch.randn(2, 12, 9, 9)
    for mode in ("decomposed", "dense"):
        frozen = SSConv2dInference(layer, mode)
        assert torch.allclose(frozen(x), layer(x), atol=1e-5)
        assert frozen.num_params == layer.num_params
