import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssconv import SSConv2d

from .spec_oracle import spec_dense_mask

TOL = 1e-5


def _copy_from_dense(conv: nn.Conv2d, **ssc) -> SSConv2d:
    return SSConv2d.from_conv2d(conv, copy_weights=True, **ssc)


def _close(a, b, tol=TOL):
    assert a.shape == b.shape
    assert (a - b).abs().max().item() <= tol * max(1.0, b.abs().max().item())


# --------------------------------------------------------------- special cases (spec table)
@pytest.mark.parametrize("backend", ["masked", "decomposed", "split", "auto"])
@pytest.mark.parametrize("pointwise", [True, False])
def test_standard_conv(backend, pointwise):
    conv = nn.Conv2d(8, 12, 3, stride=2, padding=1)
    layer = _copy_from_dense(conv, period=1, pointwise=pointwise, backend=backend)
    x = torch.randn(2, 8, 11, 9)
    _close(layer(x), conv(x))
    assert layer.num_params == conv.weight.numel()


@pytest.mark.parametrize("backend", ["masked", "decomposed"])
@pytest.mark.parametrize("groups", [2, 4])
def test_groupwise_conv(backend, groups):
    conv = nn.Conv2d(8, 16, 3, padding=1, groups=groups, bias=False)
    layer = _copy_from_dense(conv, period=1, backend=backend)
    x = torch.randn(2, 8, 7, 7)
    _close(layer(x), conv(x))


@pytest.mark.parametrize("backend", ["masked", "decomposed"])
def test_depthwise_conv(backend):
    conv = nn.Conv2d(6, 6, 5, padding=2, groups=6)
    layer = _copy_from_dense(conv, period=1, backend=backend)
    x = torch.randn(3, 6, 9, 9)
    _close(layer(x), conv(x))
    assert layer.groups == 6 and layer.density == pytest.approx(1 / 6)


@pytest.mark.parametrize("backend", ["masked", "decomposed"])
@pytest.mark.parametrize("groups", [1, 2])
def test_pointwise_conv(backend, groups):
    conv1x1 = nn.Conv2d(8, 6, 1, groups=groups)
    layer = SSConv2d(
        8, 6, 3, padding=1, groups=groups, period=None, pointwise=True, backend=backend
    )
    with torch.no_grad():
        layer.weight_point.copy_(conv1x1.weight.view(6, -1))
        layer.bias.copy_(conv1x1.bias)
    x = torch.randn(2, 8, 7, 5)
    _close(layer(x), conv1x1(x))
    assert layer.num_params == conv1x1.weight.numel()


@pytest.mark.parametrize("backend", ["masked", "decomposed", "split"])
@pytest.mark.parametrize("period", [2, 4, 8])
def test_hetconv(backend, period):
    """HetConv (Singh et al., CVPR 2019): K x K on (i - o) mod P == 0, 1 x 1 elsewhere."""
    c_in, c_out = 8, 8
    weight = torch.randn(c_out, c_in, 3, 3)
    for o in range(c_out):
        for i in range(c_in):
            if (i - o) % period:
                centre = weight[o, i, 1, 1].clone()
                weight[o, i].zero_()
                weight[o, i, 1, 1] = centre
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(weight)
    layer = _copy_from_dense(conv, period=period, pointwise=True, backend=backend)
    x = torch.randn(2, c_in, 8, 8).contiguous(memory_format=torch.channels_last)
    _close(layer(x), conv(x))
    assert torch.equal(layer.to_dense(), weight)


# ----------------------------------------------------- general configurations, both backends
CONFIGS = [
    # c_in, c_out, k, groups, period, pointwise, spatial, conv kwargs
    (8, 12, 3, 1, 4, True, "full", {}),
    (8, 10, 3, 2, 2, True, "full", {"stride": 2}),
    (12, 6, 3, 3, 2, False, "checkerboard", {"padding": 1}),
    (16, 16, 5, 2, 4, True, "checkerboard", {"padding": 2, "dilation": 2}),
    (6, 9, 3, 3, 2, True, "checkerboard", {"padding": 3, "padding_mode": "reflect"}),
    (16, 24, 3, 2, 4, True, "full", {"padding": 1, "stride": (1, 2)}),
    (8, 8, (3, 5), 1, 2, True, "full", {"padding": (1, 2)}),
    (8, 8, 3, 1, None, True, "full", {"padding": 0}),
    (16, 16, 3, 1, 16, True, "full", {"padding": "same"}),
]


def spec_masked_pair(cfg, backend: str) -> tuple[nn.Conv2d, SSConv2d]:
    """An ``nn.Conv2d`` whose weight carries the spec's mask for ``cfg`` (a CONFIGS row), and
    the ``SSConv2d`` with the given backend built from it."""
    c_in, c_out, k, groups, period, pointwise, spatial, kw = cfg
    mask = spec_dense_mask(c_in, c_out, k, groups, period, pointwise, spatial)
    conv = nn.Conv2d(c_in, c_out, k, groups=groups, **kw)
    with torch.no_grad():
        conv.weight.mul_(mask)
    layer = SSConv2d.from_conv2d(
        conv,
        groups=groups,
        period=period,
        pointwise=pointwise,
        spatial=spatial,
        backend=backend,
        copy_weights=True,
    )
    return conv, layer


@pytest.mark.parametrize("cfg", CONFIGS)
def test_matches_conv2d_with_spec_masked_weight(cfg):
    c_in = cfg[0]
    for backend in ("masked", "decomposed", "split"):
        conv, layer = spec_masked_pair(cfg, backend)
        assert torch.equal(layer.to_dense(), conv.weight)
        for memory_format in (torch.contiguous_format, torch.channels_last):
            x = torch.randn(2, c_in, 10, 9).contiguous(memory_format=memory_format)
            _close(layer(x), conv(x))


@pytest.mark.parametrize("cfg", CONFIGS)
def test_backends_agree_forward_and_backward(cfg):
    c_in, c_out, k, groups, period, pointwise, spatial, kw = cfg
    layer = SSConv2d(
        c_in, c_out, k, groups=groups, period=period, pointwise=pointwise, spatial=spatial, **kw
    )
    x = torch.randn(3, c_in, 12, 11)
    results = {}
    for backend in ("masked", "decomposed", "split"):
        layer.backend = backend
        for memory_format in (torch.contiguous_format, torch.channels_last):
            xi = x.clone().contiguous(memory_format=memory_format).requires_grad_(True)
            out = layer(xi)
            grads = torch.autograd.grad(out.square().sum(), [xi, *layer.parameters()])
            results[(backend, memory_format)] = (out, grads)
    ref_out, ref_grads = results[("masked", torch.contiguous_format)]
    for out, grads in results.values():
        _close(out, ref_out)
        for g, r in zip(grads, ref_grads):
            _close(g, r)


def test_only_pattern_weights_are_stored():
    layer = SSConv2d(64, 64, 3, period=8, pointwise=True, bias=False)
    stored = sum(p.numel() for p in layer.parameters())
    assert stored == layer.num_params == 64 * 64 * (9 / 8 + 7 / 8)
    cb = SSConv2d(64, 64, 3, period=8, pointwise=False, spatial="checkerboard", bias=False)
    assert sum(p.numel() for p in cb.parameters()) == cb.num_params == 64 * 8 * 9 // 2
    assert cb.weight_spatial.dim() == 1


def test_gradients_reach_only_stored_weights_and_dense_zeros_stay_zero():
    layer = SSConv2d(8, 8, 3, padding=1, period=4, pointwise=True, spatial="checkerboard")
    opt = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    zeros = layer.to_dense() == 0
    for _ in range(3):
        opt.zero_grad()
        layer(torch.randn(2, 8, 6, 6)).square().mean().backward()
        opt.step()
    assert (layer.to_dense()[zeros] == 0).all()


# ------------------------------------------------------------------ conversion round trips
@pytest.mark.parametrize("cfg", CONFIGS)
def test_to_conv2d_round_trip(cfg):
    c_in, c_out, k, groups, period, pointwise, spatial, kw = cfg
    layer = SSConv2d(
        c_in, c_out, k, groups=groups, period=period, pointwise=pointwise, spatial=spatial, **kw
    )
    conv = layer.to_conv2d()
    assert isinstance(conv, nn.Conv2d) and conv.groups == groups
    x = torch.randn(2, c_in, 10, 10)
    _close(layer(x), conv(x))
    back = SSConv2d.from_conv2d(
        conv, groups=groups, period=period, pointwise=pointwise, spatial=spatial, copy_weights=True
    )
    for name, p in layer.named_parameters():
        assert torch.equal(p, dict(back.named_parameters())[name])


def test_from_conv2d_regroups_a_grouped_conv():
    conv = nn.Conv2d(8, 8, 3, padding=1, groups=2, bias=False)
    layer = SSConv2d.from_conv2d(conv, groups=4, period=1, copy_weights=True)
    dense = layer.to_conv2d()
    x = torch.randn(1, 8, 5, 5)
    masked = nn.Conv2d(8, 8, 3, padding=1, groups=2, bias=False)
    w = conv.weight.detach().clone()
    # Keep only the 4-group block diagonal of the 2-group weight.
    for o in range(8):
        for i_loc in range(4):
            i = (o // 4) * 4 + i_loc
            if i // 2 != o // 2:
                w[o, i_loc] = 0
    with torch.no_grad():
        masked.weight.copy_(w)
    _close(dense(x), masked(x))


def test_state_dict_save_load(tmp_path):
    a = SSConv2d(8, 8, 3, padding=1, period=4, spatial="checkerboard")
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert set(state) == {"weight_spatial", "weight_point", "bias"}
    b = SSConv2d(8, 8, 3, padding=1, period=4, spatial="checkerboard")
    b.load_state_dict(state)
    x = torch.randn(2, 8, 5, 5)
    assert torch.equal(a(x), b(x))
    c = SSConv2d(8, 8, 3, padding=1, period=2)
    with pytest.raises(RuntimeError, match="size mismatch"):
        c.load_state_dict(state)


# ---------------------------------------------------------------------- init and repr
def test_init_scales_with_effective_fan_in():
    layer = SSConv2d(256, 256, 3, period=16, pointwise=False, bias=False)
    fan_in = 256 / 16 * 9
    assert layer.effective_fan_in == fan_in
    assert layer.weight_spatial.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.05)
    # Signal is preserved through ReLU layers: E[y^2] ~ 2 E[x^2] / 2.
    x = torch.randn(8, 256, 8, 8)
    y = layer(x)
    assert y.var().item() == pytest.approx(2.0, rel=0.15)


def test_extra_repr_shows_ssc_settings_and_non_defaults():
    text = repr(SSConv2d(8, 16, 3, padding=1, period=4, spatial="checkerboard", bias=False))
    assert "period=4" in text and "pointwise=True" in text and "spatial=checkerboard" in text
    assert "padding=(1, 1)" in text and "bias=False" in text and "density=" in text
    assert "dilation" not in text and "groups" not in text


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"period": 3}, "period=3 must divide"),
        ({"kernel_size": 4}, "kernel_size must be odd"),
        ({"spatial": "dots"}, "spatial must be one of"),
        ({"backend": "fast"}, "backend must be one of"),
        ({"padding": "full"}, "padding must be"),
        ({"padding": "same", "stride": 2}, "padding='same'"),
        ({"padding_mode": "mirror"}, "padding_mode must be one of"),
        ({"stride": 0}, "stride must be positive"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    args = {"in_channels": 8, "out_channels": 8, "kernel_size": 3, "period": 2}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        SSConv2d(**args)


def test_backend_setter_validates():
    layer = SSConv2d(8, 8, 3)
    with pytest.raises(ValueError, match="backend must be one of"):
        layer.backend = "cuda"


def test_auto_backend_choice():
    assert SSConv2d(8, 8, 3, period=1).resolved_backend() == "decomposed"  # a plain conv
    assert SSConv2d(64, 64, 3, period=2).resolved_backend() == "masked"  # density 0.56
    assert SSConv2d(32, 32, 3, period=4).resolved_backend() == "masked"  # a small layer
    assert SSConv2d(128, 128, 3, period=32).resolved_backend() == "masked"  # groups of 4
    assert SSConv2d(128, 128, 3, period=4).resolved_backend() == "decomposed"
    # A depthwise spatial part (one channel in and out per residue group) runs decomposed
    # at any width; with two outputs per group it is an ordinary narrow grouped conv again.
    assert SSConv2d(16, 16, 3, period=16).resolved_backend() == "decomposed"
    assert SSConv2d(16, 16, 3, groups=2, period=8).resolved_backend() == "decomposed"
    assert SSConv2d(16, 32, 3, period=16).resolved_backend() == "masked"
    # ... except in CPU inference below 32 channels (measured in whole frozen models).
    assert SSConv2d(16, 16, 3, groups=2, period=8).resolved_backend(inference=True) == "masked"
    narrow_dw = SSConv2d(32, 32, 3, groups=2, period=16)
    assert narrow_dw.resolved_backend(inference=True) in ("decomposed", "fused")


# --------------------------------------------------------- tracing, export, compile, dtypes
def test_jit_trace_and_torch_export():
    layer = SSConv2d(
        8, 8, 3, padding=1, period=4, spatial="checkerboard", backend="decomposed"
    ).eval()
    x = torch.randn(2, 8, 6, 6)
    traced = torch.jit.trace(layer, x)
    _close(traced(x), layer(x))
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    buffer.seek(0)
    _close(torch.jit.load(buffer)(x), layer(x))
    exported = torch.export.export(layer, (x,))
    _close(exported.module()(x), layer(x))


@pytest.mark.slow
def test_torch_compile_matches_eager():
    layer = SSConv2d(8, 8, 3, padding=1, period=4, backend="decomposed")
    x = torch.randn(2, 8, 6, 6)
    try:
        compiled = torch.compile(layer)
        out = compiled(x)
    except Exception as exc:  # no C++ compiler on this machine
        pytest.skip(f"torch.compile unavailable: {exc}")
    _close(out, layer(x))
    out.sum().backward()
    assert layer.weight_spatial.grad is not None


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_cpu(dtype):
    layer = SSConv2d(16, 16, 3, padding=1, period=4, backend="decomposed")
    x = torch.randn(2, 16, 8, 8).contiguous(memory_format=torch.channels_last)
    ref = layer(x)
    try:
        with torch.autocast("cpu", dtype=dtype):
            out = layer(x)
    except RuntimeError as exc:
        pytest.skip(f"autocast {dtype} unsupported on this CPU: {exc}")
    assert out.dtype == dtype
    _close(out.float(), ref, tol=5e-2)
    out.float().sum().backward()


def test_double_and_half_storage():
    layer = SSConv2d(8, 8, 3, padding=1, period=2, dtype=torch.float64)
    assert layer.weight_spatial.dtype == torch.float64
    x = torch.randn(1, 8, 5, 5, dtype=torch.float64)
    _close(layer(x), F.conv2d(x, layer.to_dense(), layer.bias, padding=1), tol=1e-12)
    layer.to(torch.bfloat16)
    assert layer(x.bfloat16()).dtype == torch.bfloat16


@pytest.mark.gpu
def test_cuda_backends_agree():
    layer = SSConv2d(32, 32, 3, padding=1, period=4, spatial="checkerboard").cuda()
    x = torch.randn(4, 32, 16, 16, device="cuda")
    outs = []
    for backend in ("masked", "decomposed", "split"):
        layer.backend = backend
        outs.append(layer(x.contiguous(memory_format=torch.channels_last)))
    for out in outs[1:]:
        _close(out, outs[0], tol=1e-4)
    with torch.autocast("cuda", dtype=torch.float16):
        assert layer(x).dtype == torch.float16
