import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssconv.kernels import fused
from ssconv.layers.pooling import MaxPool2d, fast_pooling

needs_kernel = pytest.mark.skipif(not fused.available(), reason="fused CPU kernel not built")


def _input(shape, seed=0, ties=True, nans=0):
    torch.manual_seed(seed)
    x = torch.randn(*shape)
    if ties:
        x = x.clamp_min(0)  # after a ReLU: ties of zeros in most windows
        x[..., ::3, :] = x[..., ::3, :].round()  # ties between positive values too
    if nans:
        x.view(-1)[torch.randperm(x.numel())[:nans]] = float("nan")
    return x


def _both(x, pool_kw=None):
    """Output and input gradient of nn.MaxPool2d and of the fast one, on the same data."""
    ref = nn.MaxPool2d(**(pool_kw or {"kernel_size": 2}))
    fast = copy.deepcopy(ref)
    assert fast_pooling(fast) == 1 and type(fast) is MaxPool2d
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = ref(xa), fast(xb)
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    return (ya, xa.grad), (yb, xb.grad)


def _equal(a, b):
    assert a.shape == b.shape
    assert torch.equal(a.isnan(), b.isnan())
    assert torch.equal(a.nan_to_num(), b.nan_to_num())


@needs_kernel
@pytest.mark.parametrize(
    "shape",
    [
        (4, 8, 32, 32),  # 16-wide output rows (the 16-lane path)
        (3, 5, 16, 16),  # 8-wide
        (3, 5, 8, 8),  # 4-wide
        (2, 16, 4, 4),  # 2-wide: the plane read as one row pair
        (2, 16, 2, 2),
        (2, 3, 7, 9),  # odd sides: the last row and column are read by no window
        (2, 3, 5, 42),  # a vector block and a scalar tail in one row
        (1, 2, 6, 4),
        (1, 1, 2, 200),
    ],
)
@pytest.mark.parametrize("nans", [0, 7])
def test_values_and_gradients_equal_pytorch(shape, nans):
    nans = min(nans, shape[2] * shape[3])
    (ya, ga), (yb, gb) = _both(_input(shape, nans=nans))
    _equal(yb, ya)
    # The gradient goes to the same position of every window, ties and NaN included.
    assert torch.equal(gb, ga)


@needs_kernel
def test_kernel_runs_in_inference_and_training(monkeypatch):
    calls = []
    mod = fused._built()

    class Spy:
        def maxpool2x2(self, x, with_index):
            calls.append(("forward", with_index))
            return mod.maxpool2x2(x, with_index)

        def maxpool2x2_backward(self, *args):
            calls.append(("backward",))
            return mod.maxpool2x2_backward(*args)

    monkeypatch.setattr(fused, "_built", lambda: Spy())
    pool = MaxPool2d(2)
    x = torch.randn(2, 4, 8, 8)
    with torch.inference_mode():
        pool(x)
    assert calls == [("forward", False)]  # no argmax kept without gradients
    calls.clear()
    pool(x.requires_grad_(True)).sum().backward()
    assert calls == [("forward", True), ("backward",)]


@pytest.mark.parametrize(
    "pool_kw, make",
    [
        ({"kernel_size": 3, "stride": 2, "padding": 1}, lambda x: x),  # ResNet's stem pool
        ({"kernel_size": 2, "stride": 1}, lambda x: x),
        ({"kernel_size": 2, "ceil_mode": True}, lambda x: x[..., :7, :7].contiguous()),
        ({"kernel_size": 2}, lambda x: x.contiguous(memory_format=torch.channels_last)),
        ({"kernel_size": 2}, lambda x: x.double()),
        ({"kernel_size": 2}, lambda x: x.transpose(2, 3)),  # not contiguous
    ],
)
def test_other_windows_dtypes_and_layouts_run_pytorch(pool_kw, make, monkeypatch):
    def refuse():
        raise AssertionError("the kernel must not run here")

    monkeypatch.setattr(fused, "_built", refuse)
    (ya, ga), (yb, gb) = _both(make(_input((2, 3, 8, 8))), pool_kw)
    _equal(yb, ya)
    assert torch.equal(gb, ga)


@needs_kernel
def test_ceil_mode_on_even_sides_runs_the_kernel():
    (ya, ga), (yb, gb) = _both(_input((2, 3, 8, 6)), {"kernel_size": 2, "ceil_mode": True})
    _equal(yb, ya)
    assert torch.equal(gb, ga)


@needs_kernel
@pytest.mark.parametrize(
    "pool_kw",
    [
        {"kernel_size": 3, "stride": 2, "padding": 1},  # ResNet's stem pool
        {"kernel_size": 3, "stride": 1, "padding": 1},
        {"kernel_size": 2, "stride": 1},
        {"kernel_size": 3, "stride": 3},  # a stride without vector code
        {"kernel_size": 5, "stride": 2, "padding": 2},
        {"kernel_size": 3, "stride": 2, "padding": 1, "dilation": 2},
        {"kernel_size": (2, 3), "stride": (1, 2), "padding": (1, 1)},
        {"kernel_size": 3, "stride": 2, "ceil_mode": True},
        {"kernel_size": 2, "ceil_mode": True},  # odd sides: partial windows
    ],
)
@pytest.mark.parametrize("shape", [(2, 3, 17, 20), (1, 2, 56, 56), (2, 2, 5, 7), (1, 1, 4, 70)])
def test_inference_of_any_window_equals_pytorch(pool_kw, shape, monkeypatch):
    x = _input(shape, nans=3)
    pool = MaxPool2d(**pool_kw)
    try:
        ref = F.max_pool2d(x, **pool_kw)
    except RuntimeError:
        pytest.skip("PyTorch refuses this window on this shape")
    calls = []
    mod = fused._built()

    class Spy:
        def __getattr__(self, name):
            calls.append(name)
            return getattr(mod, name)

    monkeypatch.setattr(fused, "_built", lambda: Spy())
    with torch.no_grad():
        _equal(pool(x), ref)
    assert calls and calls[0] in ("maxpool_infer", "maxpool2x2")


@needs_kernel
def test_second_derivatives_raise_instead_of_going_wrong():
    x = _input((1, 2, 4, 4)).requires_grad_(True)
    (g,) = torch.autograd.grad(MaxPool2d(2)(x).pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError):
        g.sum().backward()


def test_return_indices_keeps_pytorch_behaviour():
    pool = MaxPool2d(2, return_indices=True)
    y, idx = pool(torch.randn(1, 2, 4, 4))
    assert idx.dtype == torch.int64 and y.shape == idx.shape == (1, 2, 2, 2)


def test_fast_pooling_swaps_only_plain_max_pools():
    class Sub(nn.MaxPool2d):
        pass

    model = nn.Sequential(nn.MaxPool2d(2), nn.AvgPool2d(2), Sub(2), nn.MaxPool2d(3, 2, 1))
    assert fast_pooling(model) == 2
    assert [type(m) for m in model] == [MaxPool2d, nn.AvgPool2d, Sub, MaxPool2d]
    assert fast_pooling(model) == 0
    assert model.state_dict() == {}


def test_models_with_fast_pooling_trace_and_stay_equal():
    from ssconv.layers.ssconv import symbolic_trace
    from ssconv.models import create_model

    model = create_model("vgg11_bn", num_classes=10, width_mult=0.125).eval()
    ref = copy.deepcopy(model)
    assert fast_pooling(model) == 4  # CIFAR VGG: four pools, then a global average
    x = torch.randn(2, 3, 32, 32)
    leaves = {n.target for n in symbolic_trace(model).graph.nodes if n.op == "call_module"}
    assert "features.3" in leaves  # the first pool, one node as nn.MaxPool2d is
    with torch.no_grad():
        _equal(symbolic_trace(model)(x), ref(x))
        _equal(torch.fx.symbolic_trace(model)(x), ref(x))  # PyTorch's tracer: its own code
        _equal(model(x), ref(x))


def test_freeze_uses_fast_pooling_for_torch_but_not_for_onnxruntime():
    from ssconv.deploy import freeze
    from ssconv.models import create_model

    model = create_model("vgg11_bn", num_classes=10, width_mult=0.125).eval()
    pools = lambda m: [type(p) for p in m.modules() if isinstance(p, nn.MaxPool2d)]  # noqa: E731
    assert set(pools(freeze(model))) == {MaxPool2d}
    assert set(pools(freeze(model, target="onnxruntime"))) == {nn.MaxPool2d}
    assert set(pools(freeze(model, fast_pooling=False))) == {nn.MaxPool2d}
    assert set(pools(model)) == {nn.MaxPool2d}  # freeze works on a copy
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        _equal(freeze(model)(x), freeze(model, fast_pooling=False)(x))


def test_scripted_and_exported_pools_use_pytorch_code():
    pool = MaxPool2d(2)
    x = _input((1, 2, 8, 8))
    traced = torch.jit.trace(pool, (x,))
    assert "max_pool2d" in str(traced.graph)
    _equal(traced(x), F.max_pool2d(x, 2))
    exported = torch.export.export(pool, (x,))
    assert "max_pool2d" in str(exported.graph)
    _equal(exported.module()(x), F.max_pool2d(x, 2))
