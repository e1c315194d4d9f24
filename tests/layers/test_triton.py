"""The Triton kernels (ssconv.kernels.triton_ssc) against the masked reference.

CPU tests run the kernels in Triton's interpreter: the ``interpret`` fixture sets
``TRITON_INTERPRET=1`` for each test (the kernels are JIT-wrapped on first use per mode, so
it works whatever imported torch or ssconv first). Shapes are tiny: the interpreter runs every
program in Python. The ``gpu`` tests run the compiled kernels on CUDA.
"""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

pytest.importorskip("triton")

from ssconv import SSConv2d  # noqa: E402
from ssconv.kernels import triton_ssc  # noqa: E402
from ssconv.layers.ssconv import BACKENDS  # noqa: E402

# Float32: the kernels add the same products as the reference in another order (blocks of
# BLOCK_K entries, then pixel splits in the weight gradient): a few ulp of the largest value.
RTOL = 1e-5

# c_in, c_out, kernel, stride, padding, dilation, groups, period, pointwise, spatial, shuffle,
# channels_last
CASES = {
    "hetconv": (8, 8, 3, 1, 1, 1, 1, 2, True, "full", False, False),
    "groups-checkerboard-shuffle-nhwc": (8, 12, 3, 1, 1, 1, 2, 2, True, "checkerboard", True, True),
    "pointwise": (8, 6, 3, 1, 0, 1, 1, None, True, "full", False, False),
    "grouped-pointwise-nhwc": (8, 8, 1, 1, 0, 1, 2, None, True, "full", False, True),
    "dilation-no-pointwise": (8, 8, 3, 1, 2, 2, 1, 4, False, "full", False, False),
    "stride2": (8, 8, 3, 2, 1, 1, 1, 4, True, "full", False, False),
    "stride2-groups-nopad-nhwc": (8, 4, 3, 2, 0, 1, 2, 2, True, "checkerboard", False, True),
    "depthwise-period1": (4, 4, 3, 1, 1, 1, 4, 1, True, "full", False, False),
    "standard-stride2-dilation": (4, 8, 3, 2, 2, 2, 1, 1, True, "full", False, False),
    "rect-kernel-stride21-shuffle": (
        8,
        8,
        (3, 5),
        (2, 1),
        (1, 2),
        1,
        2,
        4,
        True,
        "full",
        True,
        False,
    ),
}


@pytest.fixture
def interpret(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert triton_ssc.interpreting()


def _pair(case, dtype=torch.float32, device="cpu", bias=True, point_groups=None):
    c_in, c_out, k, s, p, d, g, period, pw, sp, shuffle, _ = case
    kwargs = dict(groups=g, bias=bias, period=period, pointwise=pw, spatial=sp, shuffle=shuffle)
    kwargs["point_groups"] = point_groups
    ref = SSConv2d(c_in, c_out, k, s, p, d, backend="masked", **kwargs)
    if bias:
        with torch.no_grad():
            ref.bias.normal_()
    layer = SSConv2d(c_in, c_out, k, s, p, d, backend="triton", **kwargs)
    layer.load_state_dict(ref.state_dict())
    return ref.to(device, dtype), layer.to(device, dtype)


def _input(case, dtype=torch.float32, device="cpu", size=(6, 7), batch=2):
    x = torch.randn(batch, case[0], *size, device=device).to(dtype)
    if case[-1]:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _close(actual, expected, rtol):
    """``actual`` within ``rtol`` of the largest value of ``expected`` (elements near zero come
    from cancellations, where a relative bound per element means nothing)."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * max(scale, 1e-6))


def _check_forward_backward(case, device="cpu", point_groups=None):
    ref, layer = _pair(case, device=device, point_groups=point_groups)
    x = _input(case, device=device)
    x_ref = x.clone().requires_grad_()
    x_tri = x.clone().requires_grad_()
    y_ref, y = ref(x_ref), layer(x_tri)
    _close(y, y_ref, RTOL)
    # The output keeps the input's memory format, as nn.Conv2d does.
    assert y.is_contiguous(memory_format=torch.channels_last) == case[-1]
    grad = torch.randn_like(y_ref)
    y_ref.backward(grad)
    y.backward(grad)
    _close(x_tri.grad, x_ref.grad, RTOL)
    for p_tri, p_ref in zip(layer.parameters(), ref.parameters()):
        _close(p_tri.grad, p_ref.grad, RTOL)


@pytest.mark.parametrize("lanes", ["auto", "fma"])
@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_matches_masked_forward_and_gradients(interpret, monkeypatch, case, lanes):
    if lanes == "fma":
        # Lane widths below 16: the broadcast-FMA tiles instead of tl.dot.
        monkeypatch.setattr(triton_ssc, "FMA_SPEED", 100.0)
    _check_forward_backward(case)


# A thinner 1 x 1 part (point_groups > groups): the kernels' tiles come from the layer's mask,
# so they need no path of their own; each case is one of CASES with the 1 x 1 part's groups.
POINT_GROUP_CASES = {
    "hetconv-point4": ("hetconv", 4),
    "groups-checkerboard-shuffle-nhwc-point4": ("groups-checkerboard-shuffle-nhwc", 4),
    "stride2-point2": ("stride2", 2),
}


@pytest.mark.parametrize("name", list(POINT_GROUP_CASES))
def test_thinner_point_part_matches_masked(interpret, name):
    case, point_groups = POINT_GROUP_CASES[name]
    ref, layer = _pair(CASES[case], point_groups=point_groups)
    assert layer.point_groups == point_groups != layer.groups
    _check_forward_backward(CASES[case], point_groups=point_groups)


def test_weight_gradient_pixel_splits_add_up(interpret, monkeypatch):
    monkeypatch.setattr(triton_ssc, "WGRAD_SPLIT", 3)
    _check_forward_backward(CASES["groups-checkerboard-shuffle-nhwc"])


def test_padding_mode_and_no_bias(interpret):
    case = CASES["hetconv"]
    ref, layer = _pair(case, bias=False)
    ref.padding_mode = layer.padding_mode = "reflect"
    ref._reversed_padding_repeated_twice = layer._reversed_padding_repeated_twice
    x = _input(case)
    with torch.no_grad():
        _close(layer(x), ref(x), RTOL)


@pytest.mark.parametrize("dtype,rtol", [(torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)])
def test_half_precision_forward(interpret, dtype, rtol):
    # The same half-precision weights and inputs in a float32 reference: the kernels accumulate
    # in float32, so the error is the output's rounding (half an ulp) plus the float32 order;
    # allowed: 2 ulps of the largest output (eps 2^-10 and 2^-7).
    for name in ("hetconv", "groups-checkerboard-shuffle-nhwc"):
        case = CASES[name]
        ref, layer = _pair(case, dtype=dtype)
        x = _input(case, dtype=dtype)
        with torch.no_grad():
            y = layer(x)
            y_ref = ref.float()(x.float())
        assert y.dtype == dtype
        _close(y.float(), y_ref, rtol)


def test_autocast_runs_in_the_autocast_dtype(interpret):
    case = CASES["stride2"]
    ref, layer = _pair(case)
    x = _input(case).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.bfloat16
    _close(y.float(), ref(x.bfloat16().float()), 1.6e-2)
    y.float().sum().backward()
    assert x.grad.dtype == torch.float32 and layer.weight_spatial.grad.dtype == torch.float32


def test_profile_reports_the_executed_macs(interpret):
    import ssconv

    layer = SSConv2d(8, 8, 3, 1, 1, period=2, bias=False, backend="triton")
    result = ssconv.profile(layer, (8, 5, 5))
    plan = triton_ssc.make_plan(layer.pattern.dense_mask(), 1)
    assert result.layers[0].effective_macs == layer.num_params * 25
    assert result.layers[0].executed_macs == plan.executed_per_pixel * 25


def test_cpu_without_interpreter_raises(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    _, layer = _pair(CASES["hetconv"])
    with pytest.raises(triton_ssc.TritonUnavailableError, match="backend='triton'"):
        layer(_input(CASES["hetconv"]))


def test_backend_listed_and_never_picked_by_auto():
    assert "triton" in BACKENDS
    layer = SSConv2d(64, 64, 3, padding=1, period=4)
    assert layer.resolved_backend() != "triton"
    assert layer.resolved_backend(inference=True) != "triton"
    layer.backend = "triton"
    assert layer.resolved_backend() == "triton"
    with pytest.raises(ValueError, match="backend must be one of"):
        layer.backend = "cuda"


def test_package_imports_without_triton():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["triton"] = None  # as if triton were not installed
        import torch
        import ssconv
        from ssconv.kernels import triton_ssc
        assert not triton_ssc.available()
        layer = ssconv.SSConv2d(8, 8, 3, padding=1, period=2, backend="triton")
        try:
            layer(torch.randn(1, 8, 4, 4))
        except triton_ssc.TritonUnavailableError as exc:
            assert "pip install triton" in str(exc)
        else:
            raise AssertionError("no error")
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr


def _op_args(layer, x):
    plan = triton_ssc.make_plan(layer.pattern.dense_mask(), layer.groups)
    w = triton_ssc.gather(layer.to_dense().detach(), plan)
    bias = torch.zeros(plan.out_idx.numel())
    geometry = [*layer.kernel_size, *layer.stride, *layer.padding, *layer.dilation]
    ho = (x.shape[2] + 2 * layer.padding[0] - 2 - 1) // layer.stride[0] + 1
    wo = (x.shape[3] + 2 * layer.padding[1] - 2 - 1) // layer.stride[1] + 1
    return plan, (x, w, bias, *plan.kernel_args(), layer.out_channels, [ho, wo], geometry)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_fake_kernel_gives_the_output_shape_and_layout(memory_format):
    layer = SSConv2d(8, 12, 3, 2, 1, period=2)
    x = torch.randn(2, 8, 7, 9).contiguous(memory_format=memory_format)
    _, args = _op_args(layer, x)
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        fake_args = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
        y = torch.ops.ssconv.triton_conv2d(*fake_args, False, True, 8)
    assert tuple(y.shape) == (2, 12, 4, 5)
    assert y.is_contiguous(memory_format=memory_format)


def test_opcheck_custom_ops(interpret):
    layer = SSConv2d(4, 4, 3, 1, 1, period=2)
    x = torch.randn(1, 4, 3, 3)
    plan, args = _op_args(layer, x)
    torch.library.opcheck(
        torch.ops.ssconv.triton_conv2d,
        (*args, False, True, plan.kmax),
        test_utils=("test_schema", "test_faketensor"),
    )
    ent_ch, ent_tap, t_koff, t_klen, _, _, out_idx = plan.kernel_args()
    grad_out = torch.randn(1, 4, 3, 3)
    torch.library.opcheck(
        torch.ops.ssconv.triton_conv2d_wgrad,
        (
            x,
            grad_out,
            ent_ch,
            ent_tap,
            t_koff,
            t_klen,
            out_idx,
            args[-1],
            plan.block_n,
            plan.kmax,
            1,
        ),
        test_utils=("test_schema", "test_faketensor"),
    )


def test_flop_counter_sees_the_executed_macs(interpret):
    # 16 channels, period 4: classes of 4 filters; with FMA tiles of 4 lanes nothing is padded,
    # so every launch executes exactly the effective MACs (the layer's nonzero weights).
    layer = SSConv2d(16, 16, 3, 1, 1, period=4, bias=False, backend="triton")
    x = torch.randn(1, 16, 4, 4, requires_grad=True)
    plan = triton_ssc.make_plan(layer.pattern.dense_mask(), 1, block_n=4)
    assert plan.executed_per_pixel == plan.effective_per_pixel == layer.num_params
    auto = triton_ssc.make_plan(layer.pattern.dense_mask(), 1)
    geometry = (layer.kernel_size, layer.stride, layer.padding, layer.dilation)
    auto_t = triton_ssc.make_transposed_plan(layer.pattern.dense_mask(), 1, *geometry)
    counter = FlopCounterMode(display=False)
    with counter:
        layer(x).sum().backward()
    counts = counter.get_flop_counts()["Global"]
    pixels = 16
    executed = auto.executed_per_pixel + auto_t.executed_per_pixel  # forward + input gradient
    assert counts[torch.ops.ssconv.triton_conv2d] == 2 * executed * pixels
    assert counts[torch.ops.ssconv.triton_conv2d_wgrad] == 2 * auto.executed_per_pixel * pixels


def test_compiles_with_dynamo(interpret):
    case = CASES["stride2"]
    ref, layer = _pair(case)
    x = _input(case).requires_grad_()
    layer(x)  # plans the tiles (outside the graph)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    y = compiled(x)
    _close(y, ref(x), RTOL)
    y.sum().backward()
    assert x.grad is not None and layer.weight_spatial.grad is not None


def _signature(fn, pointers, constants):
    import inspect

    names = inspect.signature(fn).parameters
    return {
        n: "constexpr" if n in constants else pointers.get(n, "i32") for n in names
    }  # other arguments: int32 scalars


def test_kernels_compile_for_hopper_without_a_gpu():
    # The interpreter runs Python; this compiles the same kernels to a cubin for sm_90 (H100 /
    # H200): tensor-core tiles in half precision (wgmma) and the FMA tiles of the weight
    # gradient, so that a code-generation error shows without a GPU.
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from ssconv.kernels import _triton_kernels as kernels

    target = GPUTarget("cuda", 90, 32)
    index = {n: "*i32" for n in ("ent_ch", "ent_tap", "t_koff", "t_klen", "t_ph", "t_pw")}
    index["out_idx"] = "*i32"
    conv = dict(TRANSPOSED=True, HAS_BIAS=False, USE_DOT=True, UPCAST=False, PRECISION="tf32")
    conv.update(BLOCK_N=32, BLOCK_M=64, BLOCK_K=32)
    ptrs = {"src": "*fp16", "w": "*fp16", "bias": "*fp32", "dst": "*fp16", **index}
    fn = triton.jit(kernels._conv)
    try:
        compiled = triton.compile(
            ASTSource(fn, _signature(kernels._conv, ptrs, conv), conv), target
        )
    except RuntimeError as exc:  # no ptxas in this triton install
        pytest.skip(f"cannot compile for CUDA here: {exc}")
    assert "warp_group_dot" in compiled.asm["ttgir"] and compiled.asm["cubin"]
    wgrad = dict(USE_DOT=False, UPCAST=False, PRECISION="ieee", BLOCK_N=4, BLOCK_M=32, BLOCK_K=32)
    ptrs = {"x": "*fp32", "gy": "*fp32", "part": "*fp32", **index}
    fn = triton.jit(kernels._wgrad)
    compiled = triton.compile(ASTSource(fn, _signature(kernels._wgrad, ptrs, wgrad), wgrad), target)
    assert compiled.asm["cubin"]


# ------------------------------------------------------------------ GPU
@pytest.fixture
def exact_cuda(monkeypatch):
    """Float32 without TF32 in both the reference (cuDNN) and the kernels; one kernel
    configuration (autotuning every tiny case would compile each configuration)."""
    monkeypatch.setenv("SSCONV_TRITON_AUTOTUNE", "0")
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.gpu
@pytest.mark.parametrize("lanes", ["auto", "fma"])
@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_matches_masked_on_cuda(exact_cuda, monkeypatch, case, lanes):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    if lanes == "fma":
        monkeypatch.setattr(triton_ssc, "FMA_SPEED", 100.0)
    _check_forward_backward(case, device="cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(POINT_GROUP_CASES))
def test_thinner_point_part_matches_masked_on_cuda(exact_cuda, monkeypatch, name):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    case, point_groups = POINT_GROUP_CASES[name]
    _check_forward_backward(CASES[case], device="cuda", point_groups=point_groups)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,rtol", [(torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)])
def test_half_precision_on_cuda(monkeypatch, dtype, rtol):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setenv("SSCONV_TRITON_AUTOTUNE", "0")
    case = (64, 64, 3, 1, 1, 1, 1, 4, True, "full", False, True)
    ref, layer = _pair(case, dtype=dtype, device="cuda")
    x = _input(case, dtype=dtype, device="cuda", size=(16, 16), batch=8)
    with torch.no_grad():
        y = layer(x)
        y_ref = ref.float()(x.float())
    _close(y.float(), y_ref, rtol)


@pytest.mark.gpu
def test_compiled_training_step_on_cuda(exact_cuda, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    case = (64, 128, 3, 2, 1, 1, 1, 4, True, "checkerboard", False, True)
    ref, layer = _pair(case, device="cuda")
    compiled = torch.compile(layer)
    x = _input(case, device="cuda", size=(16, 16), batch=8)
    x_ref, x_tri = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_ref, y = ref(x_ref), compiled(x_tri)
    _close(y, y_ref, RTOL)
    y_ref.square().sum().backward()
    y.square().sum().backward()
    _close(x_tri.grad, x_ref.grad, RTOL)
    _close(layer.weight_spatial.grad, ref.weight_spatial.grad, RTOL)
