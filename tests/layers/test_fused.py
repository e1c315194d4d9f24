"""The fused CPU inference kernel (ssconv.kernels.fused) against nn.Conv2d and the masked path."""

from pathlib import Path

import pytest
import torch
from torch import nn

from ssconv import SSConv2d
from ssconv.kernels import fused

from .test_ssconv import CONFIGS, _close, spec_masked_pair

needs_kernel = pytest.mark.skipif(
    not fused.available(), reason=f"fused kernel not built: {fused.build_error()}"
)


@needs_kernel
@pytest.mark.parametrize("cfg", CONFIGS)
def test_fused_matches_conv2d_with_spec_masked_weight(cfg):
    c_in = cfg[0]
    conv, layer = spec_masked_pair(cfg, "fused")
    with torch.no_grad():
        conv.bias.normal_()
        layer.bias.copy_(conv.bias)
    for memory_format in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(3, c_in, 10, 9).contiguous(memory_format=memory_format)
        with torch.no_grad():
            y = layer(x)
            ref = conv(x)
        _close(y, ref)
        # The output keeps the input's memory format, as nn.Conv2d does.
        assert y.is_contiguous(memory_format=memory_format)


@needs_kernel
@pytest.mark.parametrize(
    "shape",
    [
        # c_in, c_out, size, stride, groups, period, pointwise, spatial
        (64, 64, 8, 1, 1, 4, True, "full"),  # classes of 16 channels: 16-lane blocks
        (32, 64, 9, 2, 1, 8, True, "full"),  # classes of 8: 8-lane blocks
        (64, 48, 5, 1, 2, 4, False, "full"),
        (32, 32, 1, 1, 1, 4, True, "checkerboard"),  # 1 x 1 image: every tap but the centre is off
        (24, 40, 3, 1, 1, 3, True, "full"),  # 40 outputs: a partly filled last block
        # Small maps: pixels tiled by the set of taps inside the input, outside taps skipped
        # (tiles of 6 pixels straddle the sets' boundaries: batch 5).
        (128, 128, 2, 1, 2, 4, True, "full"),
        (64, 64, 4, 2, 1, 4, True, "full"),
        (64, 64, 4, 1, 1, 8, True, "checkerboard"),
    ],
)
def test_fused_equals_masked_on_wide_layers(shape):
    c_in, c_out, size, stride, groups, period, pointwise, spatial = shape
    layer = SSConv2d(
        c_in,
        c_out,
        3,
        stride,
        1,
        groups=groups,
        period=period,
        pointwise=pointwise,
        spatial=spatial,
    )
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(5, c_in, size, size).contiguous(memory_format=torch.channels_last)
    layer.backend = "masked"
    ref = layer(x)
    layer.backend = "fused"
    with torch.inference_mode():
        _close(layer(x), ref)


@needs_kernel
def test_executed_macs_equal_effective_when_classes_fill_blocks():
    # 64 outputs, period 4: residue classes of 16 filters, one 16-lane block each.
    layer = SSConv2d(64, 64, 3, padding=1, period=4)
    packed = fused.pack(layer.to_dense(), layer.pattern.dense_mask(), layer.bias, layer.groups)
    assert packed.vb == 16
    assert packed.executed_per_pixel == layer.num_params
    # A 16-lane block over classes of 4 filters holds the union of 4 supports.
    narrow = SSConv2d(16, 16, 3, padding=1, period=4)
    mask = narrow.pattern.dense_mask()
    wide = fused.pack(narrow.to_dense(), mask, None, 1, vb=16)
    assert wide.executed_per_pixel > narrow.num_params
    assert fused.pack(narrow.to_dense(), mask, None, 1, vb=4).executed_per_pixel == (
        narrow.num_params
    )


@needs_kernel
def test_auto_uses_fused_in_inference_only():
    layer = SSConv2d(64, 64, 3, padding=1, period=4)
    assert layer.resolved_backend(inference=True) == "fused"
    assert layer.resolved_backend() == "decomposed"  # what gradient-needing calls run
    assert SSConv2d(16, 16, 3, period=4).resolved_backend(inference=True) == "masked"
    assert SSConv2d(64, 64, 3, period=1).resolved_backend(inference=True) == "decomposed"
    # Residue classes of 4 checkerboard filters waste lanes: stock kernels below 64 channels.
    narrow = SSConv2d(32, 32, 3, groups=2, period=4, spatial="checkerboard")
    assert narrow.fused_waste() > 2.0
    assert narrow.resolved_backend(inference=True) == "masked"
    wide = SSConv2d(64, 64, 3, groups=2, period=4, spatial="checkerboard")
    assert wide.resolved_backend(inference=True) == "fused"
    # A depthwise-like spatial part (period = channels) keeps oneDNN's depthwise kernels.
    assert SSConv2d(64, 64, 3, period=64).resolved_backend(inference=True) == "decomposed"
    x = torch.randn(2, 64, 6, 6, requires_grad=True)
    out = layer(x)  # training call: the fused training kernels, gradients flow
    out.sum().backward()
    assert x.grad is not None and layer.weight_spatial.grad is not None
    with torch.no_grad():
        _close(layer(x), out.detach())


@needs_kernel
def test_fused_sees_weight_updates():
    layer = SSConv2d(32, 32, 3, padding=1, period=4, backend="fused").eval()
    x = torch.randn(2, 32, 6, 6)
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    with torch.no_grad():
        before = layer(x)
    layer(x).square().mean().backward()  # a training call (stock kernels)
    opt.step()
    with torch.no_grad():
        after = layer(x)
    assert not torch.allclose(before, after)
    layer.backend = "masked"
    _close(after, layer(x).detach())
    # load_state_dict copies in place: the packed weights follow too.
    other = SSConv2d(32, 32, 3, padding=1, period=4)
    layer.load_state_dict(other.state_dict())
    layer.backend = "fused"
    with torch.no_grad():
        _close(layer(x), other(x))


@needs_kernel
def test_trace_falls_back_to_stock_kernels():
    layer = SSConv2d(32, 32, 3, padding=1, period=4).eval()
    x = torch.randn(1, 32, 5, 5)
    with torch.no_grad():
        traced = torch.jit.trace(layer, x)
        y = torch.randn(1, 32, 5, 5)
        _close(traced(y), layer(y))  # a traced opaque kernel would have frozen the output
    graph = str(traced.graph)
    assert "conv" in graph


def test_explicit_fused_without_kernel_says_why(monkeypatch):
    monkeypatch.setattr(fused, "_tried", True)
    monkeypatch.setattr(fused, "_module", None)
    monkeypatch.setattr(fused, "_error", "CalledProcessError: no compiler")
    layer = SSConv2d(32, 32, 3, padding=1, period=4, backend="fused")
    with torch.no_grad(), pytest.raises(RuntimeError, match="not available: .*no compiler"):
        layer(torch.randn(1, 32, 4, 4))
    # auto falls back to stock kernels silently
    layer.backend = "auto"
    assert layer.resolved_backend(inference=True) == "masked"  # the stock choice
    with torch.no_grad():
        assert layer(torch.randn(1, 32, 4, 4)).shape == (1, 32, 4, 4)


def test_env_var_disables_the_kernel(monkeypatch):
    monkeypatch.setenv("SSCONV_NO_FUSED", "1")
    monkeypatch.setattr(fused, "_tried", False)
    monkeypatch.setattr(fused, "_module", None)
    monkeypatch.setattr(fused, "_error", None)
    assert not fused.available()
    assert "SSCONV_NO_FUSED" in fused.build_error()


def test_pack_rejects_unknown_block_width():
    layer = SSConv2d(8, 8, 3, period=2)
    with pytest.raises(ValueError, match="vb must be one of"):
        fused.pack(layer.to_dense(), layer.pattern.dense_mask(), None, 1, vb=12)


@needs_kernel
@pytest.mark.parametrize("groups", [1, 2])
def test_frozen_layer_runs_fused_in_residue_order(groups):
    from ssconv.layers.channel_order import residue_permutation
    from ssconv.layers.inference import SSConv2dInference

    layer = SSConv2d(64, 32, 3, padding=1, groups=groups, period=4)
    with torch.no_grad():
        layer.bias.normal_()
    frozen = SSConv2dInference(layer)
    assert frozen.fused
    assert torch.equal(frozen.dense_weight(), layer.to_dense().detach())
    frozen.use_residue_order()
    x = torch.randn(2, 64, 6, 5).contiguous(memory_format=torch.channels_last)
    xr = x[:, residue_permutation(groups, 4, 64)]  # the physical order the layer now reads
    with torch.no_grad():
        y = frozen(xr)
        with fused.disabled():
            stock = frozen(xr)
        ref = layer(x)[:, residue_permutation(groups, 4, 32)]
    _close(y, stock)
    _close(y, ref)
    # The packed weights follow the buffers: load another layer's frozen weights.
    other = SSConv2dInference(SSConv2d(64, 32, 3, padding=1, groups=groups, period=4))
    other.use_residue_order()
    frozen.load_state_dict(other.state_dict())
    with torch.no_grad():
        _close(frozen(xr), other(xr))
        with fused.disabled():
            _close(frozen(xr), other(xr))


@needs_kernel
@pytest.mark.parametrize(
    "kwargs",
    [
        {"period": 3},  # 32 outputs / 3: padded residue classes (no residue order)
        {"period": 4, "spatial": "checkerboard", "stride": 2},
        {"period": 4, "pointwise": False, "groups": 2},
    ],
)
def test_frozen_dense_weight_matches_the_layer(kwargs):
    from ssconv.layers.inference import SSConv2dInference

    layer = SSConv2d(48, 32, 3, padding=1, **kwargs)
    frozen = SSConv2dInference(layer)
    assert torch.equal(frozen.dense_weight(), layer.to_dense().detach())
    x = torch.randn(2, 48, 7, 7)
    with torch.no_grad():
        _close(frozen(x), layer(x))


@needs_kernel
def test_flop_counter_sees_the_fused_kernel():
    from ssconv import profile

    model = nn.Sequential(SSConv2d(64, 64, 3, padding=1, period=4, bias=False))
    report = profile(model, (64, 8, 8))
    layer = model[0]
    assert layer.resolved_backend(inference=True) == "fused"
    # Residue classes of 16 fill the 16-lane blocks: executed = effective MACs.
    assert (
        report.layers[0].executed_macs == layer.num_params * 64 == report.layers[0].effective_macs
    )


@needs_kernel
def test_fused_checks_channels_and_handles_empty_batches():
    layer = SSConv2d(32, 32, 3, padding=1, period=4, backend="fused")
    with torch.no_grad():
        with pytest.raises(RuntimeError, match=r"expected input of shape \(N, 32, H, W\)"):
            layer(torch.randn(2, 16, 5, 5))
        assert layer(torch.randn(0, 32, 5, 5)).shape == (0, 32, 5, 5)


def test_build_failures_are_explained_in_one_line():
    assert "pip install ninja" in fused._explain(RuntimeError("Ninja is required to load C++"))
    long = RuntimeError("Error building extension 'x': [1/2] c++ -O3 ...\nFAILED: x.o\n" * 20)
    assert "compiler" in fused._explain(long) and "\n" not in fused._explain(long)


@needs_kernel
def test_autocast_runs_stock_kernels():
    layer = SSConv2d(64, 64, 3, padding=1, period=4).eval()
    x = torch.randn(1, 64, 6, 6)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.bfloat16  # the fused kernel is float32 only


# ------------------------------------------------------------------ training kernels
TRAIN_SHAPES = [
    # c_in, c_out, k, groups, period, pointwise, spatial, conv kwargs (stride 1)
    (16, 16, 3, 1, 4, True, "full", {"padding": 1}),
    (32, 48, 3, 2, 4, False, "full", {"padding": 1}),
    (24, 40, 3, 1, 3, True, "checkerboard", {"padding": 2, "dilation": 2}),
    (16, 16, 5, 2, 4, True, "checkerboard", {"padding": 2}),
    (8, 8, (3, 5), 1, 2, True, "full", {"padding": (1, 2)}),
    (12, 6, 3, 3, 2, False, "checkerboard", {"padding": 0}),
    (6, 9, 3, 3, 2, True, "checkerboard", {"padding": 3, "padding_mode": "reflect"}),
    (64, 64, 3, 1, 8, True, "full", {"padding": 1}),
    # Strided: the input gradient runs one stride-1 call per output phase.
    (16, 32, 3, 1, 4, True, "full", {"padding": 1, "stride": 2}),
    (16, 24, 3, 4, 4, True, "checkerboard", {"padding": 1, "stride": 2}),
    (8, 8, 5, 2, 2, True, "full", {"padding": 4, "stride": (2, 3), "dilation": 2}),
    (8, 12, 3, 2, 2, False, "full", {"padding": 0, "stride": 3}),
    (8, 8, 1, 2, None, True, "full", {"stride": 2}),  # phases no weight reaches: zero gradient
]


def _train_pair(cfg, dtype=torch.float32):
    c_in, c_out, k, groups, period, pointwise, spatial, kw = cfg
    layer = SSConv2d(
        c_in,
        c_out,
        k,
        groups=groups,
        period=period,
        pointwise=pointwise,
        spatial=spatial,
        backend="fused",
        **kw,
    ).to(dtype)
    with torch.no_grad():
        layer.bias.normal_()
    ref = SSConv2d(
        c_in,
        c_out,
        k,
        groups=groups,
        period=period,
        pointwise=pointwise,
        spatial=spatial,
        backend="masked",
        **kw,
    ).to(dtype)
    ref.load_state_dict(layer.state_dict())
    return layer, ref


@needs_kernel
@pytest.mark.parametrize("cfg", TRAIN_SHAPES)
def test_fused_training_equals_masked_forward_and_gradients(cfg):
    layer, ref = _train_pair(cfg)
    assert_trains_like(layer, layer, ref, cfg[0], grad_fn="FusedConvTrain")


def assert_trains_like(run, layer, ref, c_in, grad_fn=None, size=(9, 10)):
    """``run`` (``layer`` or a compiled form of it) gives the masked ``ref``'s outputs and
    gradients (float32 1e-5) in both memory formats on inputs of ``size``, and keeps the
    input's format."""
    for memory_format in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(3, c_in, *size).contiguous(memory_format=memory_format)
        xa = x.clone().requires_grad_(True)
        xb = x.clone().requires_grad_(True)
        ya, yb = run(xa), ref(xb)
        if grad_fn is not None:
            assert ya.grad_fn is not None and grad_fn in type(ya.grad_fn).__name__
        g = torch.randn_like(yb)
        (ya * g).sum().backward()
        (yb * g).sum().backward()
        _close(ya, yb, 1e-5)
        _close(xa.grad, xb.grad, 1e-5)
        assert ya.is_contiguous(memory_format=memory_format)
        assert xa.grad.is_contiguous(memory_format=memory_format)
        for pa, pb in zip(layer.parameters(), ref.parameters()):
            _close(pa.grad, pb.grad, 1e-5)
        layer.zero_grad()
        ref.zero_grad()


@needs_kernel
@pytest.mark.parametrize(
    "cfg",
    [
        (8, 8, 3, 1, 4, True, "full", {"padding": 1}),
        (8, 12, 3, 2, 2, True, "checkerboard", {"padding": 2, "dilation": 2}),
        (6, 6, (3, 5), 1, 2, True, "full", {"padding": (1, 2)}),
        (6, 6, 3, 3, 2, False, "checkerboard", {"padding": 0}),
        (6, 6, 3, 3, 2, True, "checkerboard", {"padding": 1, "stride": 2}),
        (4, 8, (3, 5), 1, 2, True, "full", {"padding": (1, 2), "stride": (2, 3)}),
    ],
)
def test_fused_training_passes_gradcheck_in_float64(cfg):
    layer, _ = _train_pair(cfg, torch.float64)
    names = [n for n, _ in layer.named_parameters()]
    x = torch.randn(2, cfg[0], 4, 5, dtype=torch.float64, requires_grad=True)

    def f(x, *ps):
        return torch.func.functional_call(layer, dict(zip(names, ps)), (x,))

    inputs = (x, *[p.detach().clone().requires_grad_(True) for p in layer.parameters()])
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7)


@needs_kernel
def test_strided_input_gradient_runs_one_phase_per_stride_offset():
    layer = SSConv2d(16, 32, 3, stride=2, padding=1, period=4, backend="fused")
    plan, phases = layer._train_plans()
    assert isinstance(phases, fused.PhasePlans)
    assert phases.phases == [(0, 0), (0, 1), (1, 0), (1, 1)]
    # Taps 0 and 2 reach the odd input pixels, tap 1 the even ones; every weight is in
    # exactly one phase, so the input gradient executes the effective MACs.
    assert phases.taps == [([0, 2], [0, 2]), ([0, 2], [1]), ([1], [0, 2]), ([1], [1])]
    nnz = sum(int((p.src < layer.to_dense().numel()).sum()) for p in phases.plans)
    assert nnz == layer.num_params
    # A plan of the wrong kind for the stride is refused.
    x = torch.randn(2, 16, 8, 8)
    w = layer.to_dense()
    with pytest.raises(ValueError, match="PhasePlans"):
        fused.fused_conv2d_train(x, w, None, plan, plan, (3, 3), (2, 2), (1, 1), (1, 1))
    with pytest.raises(ValueError, match="another stride"):
        fused.fused_conv2d_train(x, w, None, plan, phases, (3, 3), (2, 2), (0, 0), (1, 1))


@needs_kernel
def test_fused_training_follows_optimizer_steps():
    torch.manual_seed(1)
    layer = SSConv2d(16, 16, 3, padding=1, period=4, backend="fused")
    ref = SSConv2d(16, 16, 3, padding=1, period=4, backend="masked")
    ref.load_state_dict(layer.state_dict())
    opts = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (layer, ref)]
    x = torch.randn(4, 16, 6, 6)
    for _ in range(3):
        for m, opt in zip((layer, ref), opts):
            opt.zero_grad()
            m(x).square().mean().backward()
            opt.step()
    for pa, pb in zip(layer.parameters(), ref.parameters()):
        _close(pa, pb, 1e-5)


@needs_kernel
def test_kernels_reject_out_of_range_packing():
    layer = SSConv2d(16, 16, 3, padding=1, period=4)
    packed = fused.pack(layer.to_dense(), layer.pattern.dense_mask(), None, 1)
    bad = packed.ch.clone()
    bad[0] = 10_000
    geometry = [3, 3, 1, 1, 1, 1, 1, 1]
    args = (packed.seg_tap, packed.seg_beg, packed.blk_seg, packed.out_idx, packed.blk_base)
    x = torch.randn(1, 16, 4, 4)
    with pytest.raises(RuntimeError, match="ch out of range"):
        fused._fused_op(x, packed.w, bad, *args, packed.bias, 16, 16, geometry, packed.vb)
    gy = torch.randn(1, 16, 4, 4)
    with pytest.raises(RuntimeError, match="ch out of range"):
        fused._wgrad_op(x, gy, bad, *args, 16, 16, geometry, packed.vb)
    with pytest.raises(RuntimeError, match="grad_output"):
        fused._wgrad_op(x, gy[:, :8], packed.ch, *args, 16, 16, geometry, packed.vb)


@needs_kernel
@pytest.mark.parametrize("kernel", fused.KERNELS)
@pytest.mark.parametrize("vb", [None, 4])
def test_both_training_kernels_equal_conv2d(kernel, vb):
    # Classes of one filter (16 channels, 2 groups, period 8) and of several (period 4).
    for groups, period, size in ((2, 8, (13, 30)), (1, 4, (7, 7))):
        layer = SSConv2d(16, 24, 3, padding=1, groups=groups, period=period)
        mask = layer.pattern.dense_mask()
        plan = fused.make_plan(mask, groups, vb=vb, kernel=kernel)
        plan_t = fused.make_plan(mask, groups, transpose=True, kernel=kernel)
        assert plan.kernel == plan_t.kernel == kernel
        w = layer.to_dense().detach().requires_grad_(True)
        b = torch.randn(24, requires_grad=True)
        x = torch.randn(3, 16, *size, requires_grad=True)
        y = fused.fused_conv2d_train(x, w, b, plan, plan_t, (3, 3), (1, 1), (1, 1), (1, 1))
        w2, b2, x2 = (t.detach().clone().requires_grad_(True) for t in (w, b, x))
        y2 = torch.nn.functional.conv2d(x2, w2, b2, 1, 1, 1, groups)
        g = torch.randn_like(y2)
        (y * g).sum().backward()
        (y2 * g).sum().backward()
        _close(y, y2, 1e-5)
        _close(x.grad, x2.grad, 1e-5)
        _close(b.grad, b2.grad, 1e-5)
        _close(w.grad * mask, w2.grad * mask, 1e-5)
        assert not (w.grad * ~mask).any()  # nothing off the pattern


@needs_kernel
def test_pixel_plans_execute_no_zeros_for_one_filter_classes():
    layer = SSConv2d(16, 16, 3, padding=1, groups=2, period=8)  # classes of one filter
    mask = layer.pattern.dense_mask()
    assert fused.make_plan(mask, 2, kernel="pixels").executed_per_pixel == layer.num_params
    assert fused.make_plan(mask, 2).executed_per_pixel > 2 * layer.num_params
    with pytest.raises(ValueError, match="vb must be one of"):
        fused.make_plan(mask, 2, vb=8, kernel="pixels")
    with pytest.raises(ValueError, match="kernel must be one of"):
        fused.make_plan(mask, 2, kernel="rows")


@needs_kernel
def test_auto_trains_stride1_layers_on_the_fused_kernels():
    layer = SSConv2d(16, 16, 3, padding=1, period=4)
    assert layer.trains_fused()
    x = torch.randn(2, 16, 7, 7, requires_grad=True)
    assert "FusedConvTrain" in type(layer(x).grad_fn).__name__
    # Rows too short for the pixel vectors: stock kernels, unless the layer is narrow enough.
    assert layer.trains_fused(7) and not layer.trains_fused(6)
    wide = SSConv2d(128, 128, 3, padding=1, period=4)
    assert wide.trains_fused(16) and not wide.trains_fused(14)  # 14: neither kernel's rule
    assert "FusedConvTrain" not in type(wide(torch.randn(1, 128, 14, 14)).grad_fn).__name__
    assert "FusedConvTrain" in type(wide(torch.randn(1, 128, 16, 16)).grad_fn).__name__
    dbl = SSConv2d(16, 16, 3, padding=1, period=4).double()  # auto, float64: stock kernels
    assert "FusedConvTrain" not in type(dbl(x.double()).grad_fn).__name__
    # Strided layers: output rows of at least AUTO_FUSED_STRIDED_MIN_WIDTH pixels.
    strided = SSConv2d(16, 32, 3, stride=2, padding=1, period=4)
    assert strided.trains_fused(28) and not strided.trains_fused(16)
    xs = torch.randn(2, 16, 28, 28, requires_grad=True)
    assert "FusedConvTrain" in type(strided(xs).grad_fn).__name__
    assert "FusedConvTrain" not in type(strided(xs[:, :, :16, :16]).grad_fn).__name__
    # Inference takes the pixel kernel from narrower strided rows (8 output pixels).
    from ssconv.layers import dispatch

    assert dispatch.trains_fused(strided, 16, inference=True)
    assert not dispatch.trains_fused(strided, 14, inference=True)
    assert not SSConv2d(16, 16, 3, padding=1, period=4, backend="decomposed").trains_fused()
    assert not SSConv2d(16, 16, 1, period=None).trains_fused()  # no spatial part: one GEMM
    with torch.no_grad():
        assert layer(x).grad_fn is None


@needs_kernel
@pytest.mark.parametrize(
    "cfg,size",
    [
        ((128, 128, 3, 1, 4, True, "full", {"padding": 1}), 8),
        ((128, 160, 3, 2, 4, True, "checkerboard", {"padding": 1}), 4),
        ((128, 128, 3, 2, 8, True, "full", {"padding": 1, "shuffle": True}), 2),
        ((144, 128, 3, 1, 16, True, "full", {"padding": 1}), 3),
    ],
)
def test_auto_trains_short_rows_of_wide_layers_on_the_channel_lane_kernels(cfg, size):
    # Rows too short for the pixel kernels (VGG-19's 8-, 4- and 2-pixel layers): the
    # channel-lane forward, input gradient and weight gradient, exact in both layouts.
    from ssconv.layers import dispatch

    layer, ref = _train_pair(cfg)
    layer.backend = "auto"
    assert dispatch.train_kernel(layer, size) == "channels" and layer.trains_fused(size)
    assert not dispatch.trains_fused(layer, size)  # the pixel kernels' rule
    assert_trains_like(layer, layer, ref, cfg[0], grad_fn="FusedConvTrain", size=(size, size))
    assert "channels" in layer.__dict__["_fused_train_plans"]


@needs_kernel
@pytest.mark.parametrize("size", [4, 2])
def test_channel_lane_weight_gradient_skips_padding_over_many_chunks(size):
    # Small maps take the border order in the weight gradient too (pixels grouped by their
    # inside taps, over chunks of 64 pixels and two threads): the same gradients.
    torch.manual_seed(5)
    layer, ref = _train_pair((128, 128, 3, 2, 4, True, "checkerboard", {"padding": 1}))
    layer.backend = "auto"
    x = torch.randn(21, 128, size, size)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        g = torch.randn(21, 128, size, size)
        (layer(xa) * g).sum().backward()
        (ref(xb) * g).sum().backward()
    finally:
        torch.set_num_threads(threads)
    _close(xa.grad, xb.grad, 1e-5)
    for pa, pb in zip(layer.parameters(), ref.parameters()):
        _close(pa.grad, pb.grad, 1e-5)


def test_channel_lane_training_rule():
    from ssconv.layers import dispatch

    wide = SSConv2d(128, 128, 3, padding=1, period=4)
    if not fused.available():
        assert dispatch.train_kernel(wide, 8) is None
        return
    assert dispatch.train_kernel(wide, 16) == "pixels"
    assert dispatch.train_kernel(wide, 8) == "channels"
    assert dispatch.train_kernel(wide, 2) == "channels"
    assert dispatch.train_kernel(wide, 9) is None  # over AUTO_CHANNELS_TRAIN_MAX_WIDTH
    assert dispatch.train_kernel(wide, None) == "pixels"  # no width: the pixel kernels' answer
    narrow = SSConv2d(96, 128, 3, padding=1, period=4)  # under AUTO_CHANNELS_TRAIN_MIN_CHANNELS
    assert dispatch.train_kernel(narrow, 8) is None
    strided = SSConv2d(128, 128, 3, stride=2, padding=1, period=4)
    assert dispatch.train_kernel(strided, 8) is None
    no_point = SSConv2d(128, 128, 3, padding=1, period=4, pointwise=False)
    assert dispatch.train_kernel(no_point, 8) is None  # its stock path is one grouped conv
    wide.backend = "decomposed"
    assert dispatch.train_kernel(wide, 8) is None
    wide.backend = "fused"  # an explicit choice keeps the pixel kernels
    assert dispatch.train_kernel(wide, 8) == "pixels"


def test_auto_trains_on_stock_kernels_without_the_kernel(monkeypatch):
    monkeypatch.setattr(fused, "_tried", True)
    monkeypatch.setattr(fused, "_module", None)
    monkeypatch.setattr(fused, "_error", "CalledProcessError: no compiler")
    layer = SSConv2d(16, 16, 3, padding=1, period=4)
    assert not layer.trains_fused()
    x = torch.randn(2, 16, 6, 6, requires_grad=True)
    layer(x).sum().backward()
    assert x.grad is not None
    layer.backend = "fused"
    with pytest.raises(RuntimeError, match="not available: .*no compiler"):
        layer(x)


@needs_kernel
def test_training_kernels_respect_the_thread_count():
    # Two threads split the batch (and sum their weight-gradient partials): same results.
    layer = SSConv2d(16, 16, 3, padding=1, groups=2, period=8)
    x = torch.randn(5, 16, 9, 9)
    grads = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        layer.zero_grad()
        xi = x.clone().requires_grad_(True)
        layer(xi).square().sum().backward()
        grads.append((xi.grad, layer.weight_spatial.grad.clone()))
    _close(grads[0][0], grads[1][0], 1e-6)
    _close(grads[0][1], grads[1][1], 1e-5)


def test_build_notice_only_when_ninja_has_work(tmp_path, monkeypatch, caplog):
    import shutil
    import subprocess

    if shutil.which("ninja") is None:
        pytest.skip("ninja not installed")
    (tmp_path / "build.ninja").write_text(
        "rule copy\n  command = cp $in $out\nbuild out.txt: copy in.txt\n"
    )
    (tmp_path / "in.txt").write_text("x")
    assert fused._ninja_has_work(str(tmp_path))
    subprocess.run(["ninja", "-C", str(tmp_path)], check=True, capture_output=True)
    assert not fused._ninja_has_work(str(tmp_path))
    assert fused._ninja_has_work(str(tmp_path / "missing"))  # unsure: say so

    calls = []

    class FakeCppExtension:
        @staticmethod
        def _run_ninja_build(build_directory, verbose, error_prefix):
            calls.append(build_directory)

    fake = FakeCppExtension()

    for up_to_date, expected in ((True, []), (False, [fused._BUILD_NOTICE])):
        monkeypatch.setattr(fused, "_ninja_has_work", lambda d, u=up_to_date: not u)
        caplog.clear()
        with caplog.at_level("WARNING", logger=fused.log.name), fused._build_notice(fake):
            fake._run_ninja_build("dir", False, "prefix")
        assert [r.getMessage() for r in caplog.records] == expected
    assert calls == ["dir", "dir"] and "run_ninja_build" in fake._run_ninja_build.__qualname__


def test_build_notice_is_logged_once_and_says_how_to_build_ahead(tmp_path, monkeypatch, caplog):
    """The first float32 forward may still compile the kernel (documented); the notice goes
    through logging, once per process, and names ``ssconv kernels build``."""
    monkeypatch.delenv("SSCONV_NO_FUSED", raising=False)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(fused, "_tried", False)
    monkeypatch.setattr(fused, "_module", None)
    monkeypatch.setattr(fused, "_error", None)
    monkeypatch.setattr(fused, "_ninja_has_work", lambda d: True)
    loads = []

    class FakeCppExtension:
        @staticmethod
        def _run_ninja_build(build_directory, verbose, error_prefix):
            pass

        def load(self, name, build_directory, **kwargs):
            loads.append(name)
            self._run_ninja_build(build_directory, False, "prefix")
            return "module"

    fake = FakeCppExtension()
    monkeypatch.setattr(fused, "_import_cpp_extension", lambda: fake)
    with caplog.at_level("WARNING", logger=fused.log.name):
        assert fused.available() and fused.available()
    notices = [r for r in caplog.records if r.getMessage() == fused._BUILD_NOTICE]
    assert len(loads) == 1 and len(notices) == 1
    assert "`ssconv kernels build`" in fused._BUILD_NOTICE
    assert fused.status().state == "built"  # loaded in this process


def test_failed_build_is_logged_once_with_its_reason(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("SSCONV_NO_FUSED", raising=False)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(fused, "_tried", False)
    monkeypatch.setattr(fused, "_module", None)
    monkeypatch.setattr(fused, "_error", None)

    class FakeCppExtension:
        @staticmethod
        def _run_ninja_build(*args):  # torch checks for ninja before it runs it
            raise AssertionError("not reached")

        def load(self, **kwargs):
            raise RuntimeError("Ninja is required to load C++ extensions")

    monkeypatch.setattr(fused, "_import_cpp_extension", FakeCppExtension)
    with caplog.at_level("WARNING", logger=fused.log.name):
        assert not fused.available() and not fused.available()
    messages = [r.getMessage() for r in caplog.records if r.name == fused.log.name]
    assert messages == [
        "fused SSC kernel unavailable: ninja not found (pip install ninja); using stock kernels"
    ]
    st = fused.status()
    assert st.state == "unavailable" and "ninja" in st.reason
    assert st.line() == "fused CPU kernel: unavailable: ninja not found (pip install ninja)"


def _fresh_status_env(monkeypatch, tmp_path):
    """No kernel tried in this process, an empty build folder, the tools present, and a
    loader that must not be called."""
    monkeypatch.delenv("SSCONV_NO_FUSED", raising=False)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(fused, "_tried", False)
    monkeypatch.setattr(fused, "_module", None)
    monkeypatch.setattr(fused, "_error", None)
    monkeypatch.setattr(fused, "_missing_tool", lambda: None)

    def no_build(*args, **kwargs):
        raise AssertionError("status() must not build or load the kernel")

    monkeypatch.setattr(fused, "_load", no_build)
    monkeypatch.setattr(fused, "_import_cpp_extension", no_build)


def test_status_never_builds_and_finds_a_finished_build(tmp_path, monkeypatch):
    _fresh_status_env(monkeypatch, tmp_path)
    monkeypatch.setattr(fused.sys, "platform", "linux")
    st = fused.status()
    name, build_dir, staged = fused._build_spec()
    assert (st.state, st.reason, st.name, st.build_dir) == ("not built", None, name, str(build_dir))
    assert st.line().startswith("fused CPU kernel: not built (would compile on first use")
    assert st.cpu_capability == torch.backends.cpu.get_cpu_capability()
    assert not build_dir.exists()  # nothing staged or created
    build_dir.mkdir(parents=True)
    (build_dir / f"{name}.so").write_bytes(b"")
    assert fused.status().state == "not built"  # no staged source next to it
    fused._stage_source(fused._SOURCE, staged)
    assert fused.status().built and fused.status().line() == "fused CPU kernel: built"
    staged.write_bytes(b"// another version\n")
    assert fused.status().state == "not built"


def test_status_disabled_unavailable_and_platform_note(tmp_path, monkeypatch):
    _fresh_status_env(monkeypatch, tmp_path)
    monkeypatch.setattr(fused.sys, "platform", "darwin")
    st = fused.status()
    assert st.state == "not built" and "macOS" in st.line()
    monkeypatch.setattr(fused, "_missing_tool", lambda: "ninja not found (pip install ninja)")
    assert (
        fused.status().line()
        == "fused CPU kernel: unavailable: ninja not found (pip install ninja)"
    )
    monkeypatch.setenv("SSCONV_NO_FUSED", "1")
    st = fused.status()
    assert st.state == "disabled" and st.line() == "fused CPU kernel: disabled by SSCONV_NO_FUSED"
    assert st.to_dict()["state"] == "disabled"


def test_cpp_extension_import_drops_only_the_cuda_home_warning():
    import logging

    logger = logging.getLogger("torch.utils.cpp_extension")
    quiet = fused._DropCudaHomeWarning()

    def record(msg):
        return logging.LogRecord(logger.name, logging.WARNING, __file__, 1, msg, ("/x",), None)

    assert not quiet.filter(record("No CUDA runtime is found, using CUDA_HOME='%s'"))
    assert quiet.filter(record("something else: %s"))
    fused._import_cpp_extension()
    assert quiet not in logger.filters and not any(
        isinstance(f, fused._DropCudaHomeWarning) for f in logger.filters
    )


def test_kernel_build_is_keyed_by_content_not_by_checkout(tmp_path, monkeypatch):
    """Two checkouts of the same source share one build folder and one staged source path
    (ninja's build.ninja then stays the same, so nothing is rebuilt when a second checkout
    loads the kernel); a changed source gets its own build."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    copies = []
    for name in ("checkout_a", "checkout_b"):
        src = tmp_path / name / "ssc_fused.cpp"
        src.parent.mkdir()
        src.write_bytes(fused._SOURCE.read_bytes())
        copies.append(src)
    spec_a, spec_b = fused._build_spec(copies[0]), fused._build_spec(copies[1])
    assert spec_a == spec_b
    name, build_dir, staged = spec_a
    assert build_dir.is_relative_to(tmp_path / "ext") and staged.parent == build_dir
    fused._stage_source(copies[0], staged)
    mtime = staged.stat().st_mtime_ns
    fused._stage_source(copies[1], staged)  # same content: left alone (ninja sees no change)
    assert staged.stat().st_mtime_ns == mtime and staged.read_bytes() == copies[0].read_bytes()
    copies[1].write_bytes(copies[1].read_bytes() + b"\n// changed\n")
    assert fused._build_spec(copies[1])[0] != name
    # Another environment (another torch install, other header paths) builds elsewhere too.
    monkeypatch.setattr(torch, "__file__", str(tmp_path / "venv2" / "torch" / "__init__.py"))
    assert fused._build_spec(copies[0])[0] != name


@needs_kernel
@pytest.mark.parametrize("shuffle", [False, True])
def test_inference_of_narrow_stride1_layers_runs_the_pixel_kernel(shuffle):
    """No-grad float32 NCHW calls of stride-1 layers run ssconv::pix_conv2d (the layer and its
    frozen twin, residue channel order included), exactly; channels_last inputs of narrow
    layers too (their output stays channels_last), of wider ones not."""
    from torch.utils.flop_counter import FlopCounterMode

    from ssconv.deploy import freeze

    torch.manual_seed(0)
    model = nn.Sequential(
        SSConv2d(16, 16, 3, padding=1, groups=2, period=8, shuffle=shuffle),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        SSConv2d(16, 16, 3, padding=1, groups=2, period=8, shuffle=shuffle),
    ).eval()
    x = torch.randn(2, 16, 12, 12)
    ref = [m for m in model.modules() if isinstance(m, SSConv2d)]
    with torch.no_grad():
        masked = nn.Sequential(*[m for m in model])  # same modules
        for m in ref:
            m.backend = "masked"
        expected = masked(x)
        for m in ref:
            m.backend = "auto"
        frozen = freeze(model)
        for run in (model, frozen):
            with FlopCounterMode(display=False) as counter:
                y = run(x)
            ops = {str(k) for k in counter.get_flop_counts()["Global"]}
            assert any("pix_conv2d" in k for k in ops), ops
            torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
        with FlopCounterMode(display=False) as counter:
            y = model(x.to(memory_format=torch.channels_last))
        assert any("pix_conv2d" in str(k) for k in counter.get_flop_counts()["Global"])
        assert y.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
        wide = SSConv2d(64, 64, 3, padding=1, groups=2, period=4, shuffle=shuffle).eval()
        xw = torch.randn(2, 64, 16, 16).to(memory_format=torch.channels_last)
        with FlopCounterMode(display=False) as counter:
            y = wide(xw)
        assert not any("pix_conv2d" in str(k) for k in counter.get_flop_counts()["Global"])
        wide.backend = "masked"
        torch.testing.assert_close(y, wide(xw), rtol=1e-5, atol=1e-5)


_PORTABLE_TESTS = (
    "matches_conv2d_with_spec_masked_weight or equals_masked_on_wide_layers or "
    "training_equals_masked or gradcheck or both_training_kernels or the_pixel_kernel or "
    "loaded_kernel_is_the_portable_build or values_and_gradients_equal_pytorch or "
    "relu_in_the_kernels_store"
)


@pytest.mark.slow
@pytest.mark.skipif(
    fused.portable(), reason="this process runs the portable build: its tests run here"
)
def test_portable_build_passes_the_exactness_tests():
    # The build macOS / Windows get (no OpenMP, the vector types as plain arrays), compiled
    # here with GCC: a child process reruns the kernel's exactness and gradient tests on it.
    import os
    import subprocess
    import sys

    env = {**os.environ, "SSCONV_PORTABLE_KERNEL": "1"}
    env.pop("SSCONV_NO_FUSED", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-x",
            "-p",
            "no:cacheprovider",
            __file__,
            str(Path(__file__).with_name("test_pooling.py")),  # the max-pool kernel
            "-k",
            _PORTABLE_TESTS,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout.splitlines()[-1]


@pytest.mark.skipif(not fused.portable(), reason="only in a portable-build process")
def test_loaded_kernel_is_the_portable_build():
    assert fused.available(), fused.build_error()
    assert fused.is_portable_build()
    assert "_portable_" in fused._build_spec()[0]


def test_failed_native_build_is_retried_portable_once(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("SSCONV_NO_FUSED", raising=False)
    monkeypatch.delenv("SSCONV_PORTABLE_KERNEL", raising=False)
    monkeypatch.setattr(fused.sys, "platform", "linux")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(fused, "_tried", False)
    monkeypatch.setattr(fused, "_module", None)
    monkeypatch.setattr(fused, "_error", None)
    monkeypatch.setattr(fused, "_portable_loaded", False)
    calls = []

    class FakeCppExtension:
        @staticmethod
        def _run_ninja_build(*args):
            raise AssertionError("not reached")

        def load(self, **kwargs):
            calls.append((kwargs["name"], kwargs["extra_cflags"], kwargs["extra_ldflags"]))
            if "-fopenmp" in kwargs["extra_cflags"]:
                raise RuntimeError("Error building extension 'x'")
            return "module"

    monkeypatch.setattr(fused, "_import_cpp_extension", FakeCppExtension)
    with caplog.at_level("WARNING", logger=fused.log.name):
        assert fused.available() and fused.available()
    assert len(calls) == 2 and "_portable_" in calls[1][0] and "_portable_" not in calls[0][0]
    assert calls[1][1] == ["-O3", "-DSSCONV_PORTABLE"] and calls[1][2] == []
    assert fused.is_portable_build()
    messages = [r.getMessage() for r in caplog.records if r.name == fused.log.name]
    assert len(messages) == 1 and "the portable one (no OpenMP: one thread)" in messages[0]


@needs_kernel
@pytest.mark.parametrize("shuffle", [False, True])
def test_inference_of_strided_layers_runs_the_pixel_kernel(shuffle):
    """A strided layer with output rows wide enough (AUTO_PIXELS_STRIDED_INFER_MIN_WIDTH, 8:
    narrower than training's AUTO_FUSED_STRIDED_MIN_WIDTH) infers on the pixel kernel through
    its phase planes, the layer and its frozen twin, exactly; with narrower rows it does not."""
    from torch.utils.flop_counter import FlopCounterMode

    from ssconv.deploy import freeze

    torch.manual_seed(0)
    layer = SSConv2d(16, 32, 3, stride=2, padding=1, groups=2, period=4, shuffle=shuffle).eval()
    frozen = freeze(nn.Sequential(layer))
    conv = layer.to_conv2d()
    for size, on_pixels in ((28, True), (29, True), (16, True), (14, False)):
        x = torch.randn(2, 16, size, size)
        with torch.no_grad():
            expected = conv(x)
            for run in (layer, frozen):
                with FlopCounterMode(display=False) as counter:
                    y = run(x)
                ops = {str(k) for k in counter.get_flop_counts()["Global"]}
                assert any("pix_conv2d" in k for k in ops) == on_pixels, (size, ops)
                torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)


@needs_kernel
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_training_after_an_inference_mode_call_matches_masked(memory_format):
    # An evaluation under torch.inference_mode() before training (Lightning's sanity check)
    # used to cache the kernels' index plans as inference tensors, and the next training step
    # failed ("Inference tensors cannot be saved for backward").
    torch.manual_seed(2)
    layer = SSConv2d(16, 32, 3, padding=1, period=4, shuffle=True)
    ref = SSConv2d(16, 32, 3, padding=1, period=4, shuffle=True, backend="masked")
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(2, 16, 9, 9).contiguous(memory_format=memory_format)
    with torch.inference_mode():
        _close(layer(x), ref(x), 1e-5)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = layer(xa), ref(xb)
    assert "FusedConvTrain" in type(ya.grad_fn).__name__
    ya.square().sum().backward()
    yb.square().sum().backward()
    _close(xa.grad, xb.grad, 1e-5)
    for pa, pb in zip(layer.parameters(), ref.parameters()):
        _close(pa.grad, pb.grad, 1e-5)


@needs_kernel
@pytest.mark.parametrize("width", [8, 14, 16, 23, 28, 33])
@pytest.mark.parametrize("stride", [1, 2])
def test_pixel_kernels_equal_conv2d_at_every_row_width(width, stride):
    # Row widths on both sides of the rule that picks 16-pixel vectors on AVX-512 builds
    # (rows that 16 lanes pad no wider than 8 do: 14, 16, 28, 33 -> wide; 8, 23 -> narrow),
    # for every pixel block width, forward and both gradients.
    torch.manual_seed(width + stride)
    layer = SSConv2d(16, 16, 3, stride=stride, padding=1, groups=2, period=4)
    mask = layer.pattern.dense_mask()
    for vb in fused.PIX_VB:
        plan = fused.make_plan(mask, 2, vb=vb, kernel="pixels")
        plan_t = fused.input_grad_plan(mask, 2, (stride, stride), (1, 1), (1, 1))
        w = layer.to_dense().detach().requires_grad_(True)
        x = torch.randn(2, 16, width + 1, width, requires_grad=True)
        y = fused.fused_conv2d_train(
            x, w, None, plan, plan_t, (3, 3), (stride, stride), (1, 1), (1, 1)
        )
        w2, x2 = (t.detach().clone().requires_grad_(True) for t in (w, x))
        y2 = torch.nn.functional.conv2d(x2, w2, None, stride, 1, 1, 2)
        g = torch.randn_like(y2)
        (y * g).sum().backward()
        (y2 * g).sum().backward()
        _close(y, y2, 1e-5)
        _close(x.grad, x2.grad, 1e-5)
        _close(w.grad * mask, w2.grad * mask, 1e-5)


@needs_kernel
def test_the_build_reports_the_vectors_it_was_compiled_for(monkeypatch):
    fused.available()
    built = fused.vector_isa()
    assert built == fused._module.isa()
    assert fused.status().to_dict()["vectors"] == built
    if not fused.is_portable_build():
        cap = torch.backends.cpu.get_cpu_capability()
        assert built == {"AVX512": "avx512", "AVX2": "avx2"}.get(cap, "generic")
    # SSCONV_NO_AVX512 selects the 8-lane build: another set of flags, so another build key.
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    wide_flags = fused._flags(False)
    monkeypatch.setenv("SSCONV_NO_AVX512", "1")
    narrow_flags = fused._flags(False)
    assert "-mavx512f" in wide_flags and "-mavx512f" not in narrow_flags
    assert "-mavx2" in narrow_flags


@pytest.mark.parametrize(
    "kwargs",
    [
        {"period": 4},
        {"period": 4, "spatial": "checkerboard", "groups": 2},
        {"period": 4, "shuffle": True, "groups": 2},
        {"period": 4, "point_groups": 4},
        {"period": 2, "pointwise": False, "groups": 2},
        {"period": None},
        {"period": 4, "stride": 2},
    ],
)
def test_parameter_maps_pack_exactly_what_to_dense_packs(kwargs):
    # The training step packs the parameters with one gather through these maps instead of
    # to_dense() + gather(); both must give the same packed weights, bit for bit.
    torch.manual_seed(0)
    layer = SSConv2d(16, 32, 3, padding=1, **kwargs)
    plan, plan_t = layer._train_plans()
    maps = layer._param_maps()
    assert maps is not None
    params = [p for p in (layer.weight_spatial, layer.weight_point) if p is not None]
    flat = torch.cat([params[0].new_zeros(1), *(p.detach().reshape(-1) for p in params)])
    dense = layer.to_dense().detach()
    assert torch.equal(flat[maps.forward], fused.gather(dense, plan))
    if isinstance(plan_t, fused.PhasePlans):
        assert torch.equal(flat[maps.transposed], dense)
    else:
        assert torch.equal(flat[maps.transposed], fused.gather(dense, plan_t))
    # The inverse map returns every parameter from its place in the packed weight.
    assert torch.equal(fused.gather(dense, plan).reshape(-1)[maps.inverse], flat[1:])


def test_parameter_maps_refuse_weights_that_are_not_placements():
    # A dense weight that sums or scales parameters has no one-gather packing: param_maps
    # says so, and the layer then packs through to_dense() as before.
    layer = SSConv2d(8, 8, 3, padding=1, period=2)
    plan, plan_t = layer._train_plans()
    shapes = [tuple(layer.weight_spatial.shape), tuple(layer.weight_point.shape)]

    def doubled(ws, wp):
        return 2 * layer._dense(ws, wp)

    def summed(ws, wp):
        d = layer._dense(ws, wp)
        return d + d.flip(0)

    assert fused.param_maps(doubled, shapes, plan, plan_t) is None
    assert fused.param_maps(summed, shapes, plan, plan_t) is None


@needs_kernel
@pytest.mark.parametrize("maps", [True, False])
def test_training_packs_from_parameters_or_through_to_dense_alike(maps):
    torch.manual_seed(3)
    cfg = (16, 24, 3, 4, 4, True, "checkerboard", {"padding": 1, "stride": 2})
    layer, ref = _train_pair(cfg)
    if not maps:
        # as param_maps answers for a non-placement
        layer.__dict__["_fused_param_maps"] = {"pixels": None}
    name = "FusedConvTrainParams" if maps else "FusedConvTrainBackward"
    assert_trains_like(layer, layer, ref, cfg[0], grad_fn=name)


@needs_kernel
@pytest.mark.parametrize("width", [8, 6])  # rows of whole vectors (gradient read in place), not
@pytest.mark.parametrize("threads", [1, 2])
def test_weight_gradient_over_image_groups_and_their_remainder(width, threads):
    # The pixel kernels' weight gradient sums over groups of up to 8 small images per pass;
    # a batch of 19 leaves a partial group on every thread.
    torch.manual_seed(width)
    cfg = (32, 32, 3, 2, 4, True, "full", {"padding": 1})
    layer, ref = _train_pair(cfg)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = torch.randn(19, 32, width, width)
        xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        ya, yb = layer(xa), ref(xb)
        assert "FusedConvTrain" in type(ya.grad_fn).__name__
        g = torch.randn_like(yb)
        (ya * g).sum().backward()
        (yb * g).sum().backward()
    finally:
        torch.set_num_threads(previous)
    _close(xa.grad, xb.grad, 1e-5)
    for pa, pb in zip(layer.parameters(), ref.parameters()):
        _close(pa.grad, pb.grad, 1e-5)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kernel", fused.KERNELS)
def test_relu_in_the_kernels_store_equals_torch_relu(kernel, dtype):
    # Frozen layers whose output only a ReLU reads apply it in the forward's store
    # (ssconv.deploy.fuse_relu): the same values as torch.relu after the kernel, bit for bit,
    # NaN kept, for every block width and row width on both sides of the 16-pixel rule.
    torch.manual_seed(5)
    layer = SSConv2d(16, 24, 3, padding=1, groups=2, period=4)
    mask = layer.pattern.dense_mask()
    weight = layer.to_dense().detach().to(dtype)
    vbs = fused.PIX_VB if kernel == "pixels" else fused.VB_CHOICES
    for vb in vbs:
        plan = fused.make_plan(mask, 2, vb=vb, kernel=kernel)
        w = fused.gather(weight, plan).contiguous()
        bias = fused.lane_values(torch.randn(24, dtype=dtype), plan, w)
        for width in (2, 8, 14, 28):
            x = torch.randn(2, 16, 5, width, dtype=dtype)
            x[0, 3, 2, 1] = float("nan")  # reaches every output channel that reads channel 3
            geometry = [3, 3, 1, 1, 1, 1, 1, 1]
            fused_relu = fused._run_forward(x, w, bias, plan, geometry, relu=True)
            after = torch.relu(fused._run_forward(x, w, bias, plan, geometry))
            assert fused_relu.isnan().any()
            torch.testing.assert_close(fused_relu, after, rtol=0, atol=0, equal_nan=True)
