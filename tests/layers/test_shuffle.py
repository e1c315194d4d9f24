"""SSConv2d(shuffle=True): ShuffleNet's channel shuffle folded into the layer.

Exact against the explicit module (ChannelShuffle in front of the unshuffled layer) and against
``nn.Conv2d`` with the spec-masked weight read through the permutation, on every backend,
forward and both gradients; counting, conversion, freeze, ONNX, old state_dicts and the config
resolution (with the digests of existing run folders pinned).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from ssconv.conversion import check_coverage, convert
from ssconv.kernels import fused
from ssconv.layers import SSConv2d
from ssconv.layers.factory import SSCFactory
from ssconv.sparsity.mixing import ChannelShuffle
from ssconv.train.config import TrainConfig
from ssconv.train.methods import build_model, ssc_shuffle

from .spec_oracle import spec_dense_mask

ROOT = Path(__file__).resolve().parents[2]

# (C_in, C_out, groups, period, pointwise, spatial, stride)
PATTERNS = [
    (16, 16, 4, 2, True, "full", 1),
    (16, 24, 2, 4, True, "full", 1),
    (16, 32, 2, 2, False, "full", 2),
    (16, 16, 4, 1, True, "full", 1),
    (16, 16, 2, 2, True, "checkerboard", 1),
    (16, 16, 4, None, True, "full", 1),
]
needs_fused = pytest.mark.skipif(not fused.available(), reason="fused CPU kernel not built")


def _pair(cin, cout, g, p, pw, sp, stride, backend):
    torch.manual_seed(0)
    kw = dict(groups=g, period=p, pointwise=pw, spatial=sp)
    ref = SSConv2d(cin, cout, 3, stride, 1, backend="masked", **kw)
    layer = SSConv2d(cin, cout, 3, stride, 1, backend=backend, shuffle=True, **kw)
    layer.load_state_dict(ref.state_dict())
    return ref, layer


def test_in_index_is_shufflenets_permutation():
    layer = SSConv2d(6, 6, 3, padding=1, groups=2, period=1, shuffle=True)
    # Logical input h * 3 + j reads channel j * 2 + h: group 0 reads 0, 2, 4 (one per block).
    assert layer.in_index.tolist() == [0, 2, 4, 1, 3, 5]
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert ChannelShuffle(2)(x).flatten().tolist() == layer.in_index.float().tolist()
    # One group: nothing to shuffle, the flag is normalized away.
    assert not SSConv2d(6, 6, 3, groups=1, period=2, shuffle=True).shuffle


@pytest.mark.parametrize("backend", ["masked", "decomposed", "split", "auto", "fused"])
@pytest.mark.parametrize("pattern", PATTERNS, ids=lambda p: "-".join(map(str, p)))
def test_shuffled_layer_equals_shuffle_module_then_layer(pattern, backend):
    if backend == "fused" and not fused.available():
        pytest.skip("fused CPU kernel not built")
    cin, cout, g, *_ = pattern
    ref, layer = _pair(*pattern, backend)
    x = torch.randn(2, cin, 10, 10)
    if backend == "split":
        x = x.to(memory_format=torch.channels_last)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ref(ChannelShuffle(g)(xa)), layer(xb)
    gy = torch.randn_like(ya)
    ya.backward(gy)
    yb.backward(gy)
    torch.testing.assert_close(yb, ya, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-5, atol=1e-5)
    for pa, pb in zip(ref.parameters(), layer.parameters()):
        torch.testing.assert_close(pb.grad, pa.grad, rtol=1e-5, atol=1e-4)
    with torch.no_grad():  # inference (the fused inference kernel where it applies)
        torch.testing.assert_close(layer(x), ref(ChannelShuffle(g)(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pattern", PATTERNS, ids=lambda p: "-".join(map(str, p)))
def test_to_conv2d_is_conv2d_with_the_spec_mask_read_through_the_shuffle(pattern):
    cin, cout, g, p, pw, sp, stride = pattern
    _, layer = _pair(*pattern, "auto")
    conv = layer.to_conv2d()
    assert conv.groups == 1
    # The spec mask over logical inputs, scattered to the input channels the layer reads.
    spec = fused.full_weight(spec_dense_mask(cin, cout, 3, g, p, pw, sp).float(), g)
    mask = torch.zeros_like(spec).index_copy(1, layer.in_index, spec).view_as(conv.weight)
    assert torch.equal(layer.full_mask(), mask.bool())
    assert torch.all(conv.weight[~mask.bool()] == 0)
    assert int(layer.full_mask().sum()) == layer.num_params
    x = torch.randn(2, cin, 9, 9)
    torch.testing.assert_close(layer(x), conv(x), rtol=1e-5, atol=1e-5)


def test_counting_is_the_unshuffled_layers():
    a = SSConv2d(32, 32, 3, groups=4, period=4)
    b = SSConv2d(32, 32, 3, groups=4, period=4, shuffle=True)
    assert (a.num_params, a.density, a.effective_fan_in) == (
        b.num_params,
        b.density,
        b.effective_fan_in,
    )
    assert b.fused_waste() == a.fused_waste()


@needs_fused
def test_fused_training_kernels_gradcheck_with_shuffle():
    torch.manual_seed(0)
    layer = SSConv2d(
        8, 8, 3, padding=1, groups=2, period=2, backend="fused", shuffle=True, dtype=torch.float64
    )
    plan, plan_t = layer._train_plans()
    x = torch.randn(1, 8, 5, 9, dtype=torch.float64, requires_grad=True)
    w = layer.to_dense().detach().requires_grad_()
    b = layer.bias.detach().clone().requires_grad_()

    def f(x, w, b):
        geometry = ((3, 3), (1, 1), (1, 1), (1, 1))
        return fused.fused_conv2d_train(x, w, b, plan, plan_t, *geometry)

    assert torch.autograd.gradcheck(f, (x, w, b), eps=1e-6, atol=1e-6)


def test_plan_rejects_an_in_order_that_is_not_a_permutation():
    mask = SSConv2d(8, 8, 3, groups=2, period=2).pattern.dense_mask()
    with pytest.raises(ValueError, match="permutation"):
        fused.make_plan(mask, 2, in_order=torch.zeros(8, dtype=torch.long))


def test_from_conv2d_copies_weights_through_the_shuffle():
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 16, 3, padding=1)
    layer = SSConv2d.from_conv2d(conv, groups=4, period=2, copy_weights=True, shuffle=True)
    dense = layer.to_conv2d().weight
    mask = layer.full_mask()
    torch.testing.assert_close(dense[mask], conv.weight.detach()[mask])
    grouped = nn.Conv2d(16, 16, 3, groups=2)
    with pytest.raises(ValueError, match="ungrouped conv"):
        SSConv2d.from_conv2d(grouped, groups=4, period=2, shuffle=True)


def test_shuffle_mixes_groups_and_leaves_no_input_uncovered():
    layer = SSConv2d(8, 8, 3, padding=1, groups=2, period=2, bias=False, shuffle=True)
    x = torch.randn(1, 8, 5, 5)
    grad = torch.autograd.functional.jacobian(lambda t: layer(t)[0, :4].sum(), x)[0]
    # Output group 0 reads channels 0, 2, 4, 6: one from each of the input's blocks.
    assert grad[[0, 2, 4, 6]].abs().sum() > 0 and grad[[1, 3, 5, 7]].abs().sum() == 0
    assert check_coverage(layer, "layer") == []


def test_convert_and_factory_shuffle_by_default_but_never_grouped_convs():
    model = nn.Sequential(
        nn.Conv2d(16, 16, 3, padding=1),
        nn.Conv2d(16, 16, 3, padding=1, groups=2),
    )
    on = convert(model, groups=4, period=2, keep=())
    off = convert(model, groups=4, period=2, keep=(), shuffle=False)
    shuffled = [m.shuffle for m in on.model.modules() if isinstance(m, SSConv2d)]
    assert shuffled == [True, False]  # the grouped conv keeps its own groups apart
    assert not any(m.shuffle for m in off.model.modules() if isinstance(m, SSConv2d))
    assert "shuffled" in on.layers[0].settings and "shuffled" not in on.layers[1].settings
    assert SSCFactory(groups=2, period=2)(16, 16, 3, padding=1).shuffle
    assert not SSCFactory(groups=2, period=2, shuffle=False)(16, 16, 3, padding=1).shuffle


def test_frozen_and_onnx_shuffled_model_match(tmp_path):
    from ssconv.deploy import export_onnx, freeze

    torch.manual_seed(0)
    model = nn.Sequential(
        SSConv2d(8, 16, 3, padding=1, groups=2, period=2, shuffle=True),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        SSConv2d(16, 16, 3, padding=1, groups=4, period=4, shuffle=True),
        SSConv2d(16, 16, 3, padding=1, groups=4, period=1, shuffle=True),
    ).eval()
    x = torch.randn(2, 8, 8, 8)
    with torch.no_grad():
        y = model(x)
        frozen = freeze(model)
        torch.testing.assert_close(frozen(x), y, rtol=1e-5, atol=1e-5)
        for layer in frozen.modules():  # the stock operators (what export runs)
            if hasattr(layer, "fused"):
                layer.fused = False
        torch.testing.assert_close(frozen(x), y, rtol=1e-5, atol=1e-5)
    ort = pytest.importorskip("onnxruntime")
    path = tmp_path / "m.onnx"
    export_onnx(model, path, (8, 8, 8))
    session = ort.InferenceSession(str(path))
    out = session.run(None, {session.get_inputs()[0].name: x[:1].numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(out), y[:1], rtol=1e-4, atol=1e-5)


def test_state_dict_of_the_explicit_shuffle_module_loads():
    """Runs made with the first form (nn.Sequential(ChannelShuffle, SSConv2d) -> keys
    ``<name>.1.weight_*``) load into the folded layer and compute the same function."""
    torch.manual_seed(0)
    old = nn.Sequential(
        nn.Sequential(ChannelShuffle(2), SSConv2d(8, 8, 3, padding=1, groups=2, period=2))
    )
    assert "0.1.weight_spatial" in old.state_dict()
    new = nn.Sequential(SSConv2d(8, 8, 3, padding=1, groups=2, period=2, shuffle=True))
    new.load_state_dict(old.state_dict())
    x = torch.randn(2, 8, 6, 6)
    torch.testing.assert_close(new(x), old(x))


def test_config_resolution_presets_win_and_ssc_mixes_by_default():
    cfg = lambda **kw: TrainConfig.from_dict({"density": 0.1, **kw})  # noqa: E731
    assert ssc_shuffle(cfg(method="ssc"))
    assert not ssc_shuffle(cfg(method="ssc", ssc_shuffle=False))
    assert not ssc_shuffle(cfg(method="ssc_unshuffled", ssc_shuffle=True))
    assert ssc_shuffle(cfg(method="ssc_shuffled", ssc_shuffle=False))
    assert not ssc_shuffle(cfg(method="group_conv"))  # the baseline as usually built
    model, info = build_model(cfg(method="ssc", model_kwargs={"width": 8}), 10, 3, (3, 16, 16))
    assert info["shuffle"] and any(m.shuffle for m in model.modules() if isinstance(m, SSConv2d))


def test_existing_regime_runs_keep_their_config_digests():
    """The regime grid pins ssc_shuffle: false, so the folders trained before mixing became
    the default keep their digests (read from their final.json on 2026-12-02)."""
    from ssconv.train.sweep import load_sweep

    cells = load_sweep(ROOT / "configs" / "fashion_mnist_regime.yaml").cells()
    digest = {c.label(): c.config.digest() for c in cells}
    assert digest["method=ssc density=0.1 seed=0"] == "957a3572fa"
    assert digest["method=ssc_shuffled density=0.1 seed=0"] == "e55e33a7b2"
    assert digest["method=erk density=0.1 seed=0"] == "43475e9785"


def test_shuffle_key_changes_only_ssc_digests():
    """Dense and pruned runs do not read ssc_shuffle: their digests ignore it, so runs made
    before its default changed resume; SSC runs on the old default get a new digest."""
    cfg = lambda **kw: TrainConfig.from_dict({"density": 0.1, **kw})  # noqa: E731
    for method in ("erk", "snip", "dw_separable"):
        assert cfg(method=method).digest() == cfg(method=method, ssc_shuffle=False).digest()
    assert cfg(method="dense", density=None).digest() == (
        cfg(method="dense", density=None, ssc_shuffle=True).digest()
    )
    assert cfg(method="ssc").digest() != cfg(method="ssc", ssc_shuffle=False).digest()
