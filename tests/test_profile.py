import json

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from ssconv import SSConv2d, profile


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.grouped = nn.Conv2d(16, 32, 3, stride=2, padding=1, groups=4, bias=False)
        self.depthwise = nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False)
        self.ssc = SSConv2d(32, 32, 3, padding=1, period=4, pointwise=True, bias=False)
        self.cb = SSConv2d(
            32, 32, 3, padding=1, period=2, pointwise=False, spatial="checkerboard", bias=False
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.cb(self.ssc(self.depthwise(self.grouped(self.stem(x)))))
        return self.fc(self.pool(x).flatten(1))


def test_counts_are_exact_per_layer():
    result = profile(Net(), (3, 16, 16))
    rows = {layer.name: layer for layer in result.layers}
    hw = 8 * 8
    assert rows["stem"].params == 16 * 3 * 9
    assert rows["stem"].effective_macs == 16 * 3 * 9 * 16 * 16
    assert rows["grouped"].params == 32 * 4 * 9
    assert rows["grouped"].effective_macs == 32 * 4 * 9 * hw
    assert rows["depthwise"].params == 32 * 9
    assert rows["depthwise"].executed_macs == 32 * 9 * hw
    ssc_params = int(32 * 32 * (9 / 4 + 3 / 4))
    assert rows["ssc"].params == ssc_params
    assert rows["ssc"].effective_macs == ssc_params * hw
    assert rows["cb"].params == 32 * 16 * 9 // 2
    assert rows["fc"].params == 320 and rows["fc"].effective_macs == 320
    # Dense layers execute exactly what they hold (measured by FlopCounterMode).
    for name in ("stem", "grouped", "depthwise", "fc"):
        assert rows[name].executed_macs == rows[name].effective_macs


def test_executed_macs_follow_the_backend():
    net = Net()
    net.ssc.backend = "masked"
    masked = {r.name: r for r in profile(net, (3, 16, 16)).layers}["ssc"]
    assert masked.executed_macs == 32 * 32 * 9 * 64  # dense conv
    net.ssc.backend = "decomposed"
    fast = {r.name: r for r in profile(net, (3, 16, 16)).layers}["ssc"]
    # Grouped 3x3 (32 x 8 x 9) plus the 1 x 1 (32 x 32), per output pixel.
    assert fast.executed_macs == (32 * 8 * 9 + 32 * 32) * 64
    assert fast.executed_macs == net.ssc.pattern.executed_params * 64


def test_totals_density_and_json():
    net = Net()
    result = profile(net, (2, 3, 16, 16))
    assert result.input_size == (2, 3, 16, 16)
    assert result.weight_params == sum(r.params for r in result.layers)
    # The dense count of a grouped / depthwise nn.Conv2d is its own weight (as in pruning
    # papers); SSC layers count against the dense conv they stand for.
    dense = 16 * 27 + 32 * 4 * 9 + 32 * 9 + 32 * 32 * 9 * 2 + 320
    assert result.dense_weight_params == dense
    assert result.density == pytest.approx(result.weight_params / dense)
    assert result.total_params == sum(p.numel() for p in net.parameters())
    data = json.loads(result.to_json())
    assert data["totals"]["weight_params"] == result.weight_params
    assert data["layers"][0]["name"] == "stem"
    text = result.table()
    assert "ssc" in text and "G=1 P=4 pw full" in text and "total" in text


def test_masked_layer_counts_nonzeros_but_executes_dense():
    net = nn.Sequential(nn.Conv2d(4, 8, 3, bias=False))
    mask = torch.zeros(8, 4, 3, 3)
    mask[:, :, 1, 1] = 1
    prune.custom_from_mask(net[0], "weight", mask)
    (row,) = profile(net, (4, 5, 5)).layers
    assert row.params == 32 and row.dense_params == 288
    assert row.executed_macs == 288 * 9
    assert "masked" in row.settings


def test_profile_restores_training_mode_and_validates():
    net = Net().train()
    profile(net, (3, 8, 8))
    assert net.training
    with pytest.raises(ValueError, match="input_size"):
        profile(net)
    with pytest.raises(ValueError, match="input_size must be"):
        profile(net, (3, 0, 8))


_PATH_METHODS = {
    "_forward_fused_train": "fused_train",
    "_forward_pixels": "pixels",
    "_forward_fused": "fused",
    "_forward_decomposed": "decomposed",  # also "split", which it branches into
}


def _ran(layer, x, monkeypatch):
    """Which of the layer's kernels ``layer(x)`` really ran ("masked": none of the others)."""
    ran = []
    for method, path in _PATH_METHODS.items():
        original = getattr(layer, method)

        def spy(*args, _path=path, _original=original):
            ran.append(_path)
            return _original(*args)

        monkeypatch.setattr(layer, method, spy)
    layer(x)
    monkeypatch.undo()
    return ran[0] if ran else "masked"


def _same(predicted, ran):
    return predicted == ran or (predicted, ran) == ("split", "decomposed")


@pytest.mark.parametrize(
    "shape, kwargs, width",
    [
        ((16, 16), {"period": 4, "groups": 2, "shuffle": True}, 16),  # narrow: pixel kernels
        ((32, 32), {"period": 4, "spatial": "checkerboard", "stride": 2}, 8),  # strided, small
        ((64, 64), {"period": 4}, 4),  # wide, tiny rows
        ((64, 64), {"period": 8, "groups": 2}, 16),
    ],
)
@pytest.mark.parametrize("backend", ["auto", "masked", "decomposed"])
def test_call_path_names_the_kernels_forward_runs(shape, kwargs, width, backend, monkeypatch):
    layer = SSConv2d(*shape, 3, padding=1, bias=False, backend=backend, **kwargs)
    x = torch.randn(2, shape[0], width, width)
    with torch.no_grad():
        assert _same(layer.call_path(x), _ran(layer, x, monkeypatch))
    assert _same(layer.call_path(x), _ran(layer, x, monkeypatch))  # with gradients
    if backend != "auto":
        assert layer.call_path(x) in (backend, "split", "fused_train")


def test_table_names_each_ssc_layers_path_and_explains_zeros():
    net = Net()
    net.ssc.backend = "masked"
    result = profile(net, (3, 16, 16))
    rows = {r.name: r for r in result.layers}
    assert rows["ssc"].path == "masked" and rows["stem"].path == ""
    with torch.no_grad():  # profile runs the model without gradients
        assert rows["cb"].path == net.cb.call_path(torch.zeros(1, 32, 8, 8))
    text = result.table()
    assert "runs on" in text.splitlines()[0]
    assert "execute more than their effective MACs" in text
    assert "ssc (masked)" in text and "one dense convolution with the pattern's zeros" in text
    exact = nn.Sequential(SSConv2d(16, 16, 3, padding=1, period=4, groups=2, bias=False))
    result = profile(exact, (16, 16, 16))
    (row,) = result.layers
    if row.path == "pixels":  # the kernel is built: it executes exactly the effective MACs
        assert row.executed_macs == row.effective_macs
        assert "execute more than" not in result.table()
