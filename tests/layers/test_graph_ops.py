"""The fused CPU kernels under torch.compile (ssconv.kernels.graph_ops): one graph op per SSC
layer with a registered autograd formula, exact against the masked reference."""

import copy

import pytest
import torch
from torch import nn

from ssconv import SSConv2d
from ssconv.deploy import freeze
from ssconv.kernels import graph_ops

from .test_fused import TRAIN_SHAPES, _train_pair, assert_trains_like, needs_kernel
from .test_ssconv import _close

pytestmark = needs_kernel


def _graphs(module, *args):
    """The FX graphs dynamo hands its backend for ``module(*args)`` (fullgraph: no breaks)."""
    from torch._dynamo.testing import EagerAndRecordGraphs

    torch._dynamo.reset()
    backend = EagerAndRecordGraphs()
    out = torch.compile(module, backend=backend, fullgraph=True)(*args)
    return out, backend.graphs


def _ssc_ops(graphs) -> list[str]:
    return [
        str(n.target)
        for g in graphs
        for n in g.graph.nodes
        if n.op == "call_function" and "ssconv" in str(n.target)
    ]


@pytest.mark.parametrize("cfg", TRAIN_SHAPES)
def test_compiled_training_equals_masked_forward_and_gradients(cfg):
    layer, ref = _train_pair(cfg)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    assert_trains_like(compiled, layer, ref, cfg[0])
    torch._dynamo.reset()


def test_the_graph_holds_one_ssc_op_per_layer():
    model = nn.Sequential(
        SSConv2d(16, 16, 3, padding=1, period=4),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        SSConv2d(16, 32, 3, stride=2, padding=1, period=4, groups=2, shuffle=True),
    )
    x = torch.randn(2, 16, 32, 32, requires_grad=True)
    y, graphs = _graphs(model, x)
    assert _ssc_ops(graphs) == ["ssconv.ssc_conv2d.default"] * 2
    _close(y, model(x), 1e-5)
    # Rows too narrow for the pixel kernels (the auto rule) stay on the stock kernels.
    _, graphs = _graphs(model, torch.randn(2, 16, 4, 4))
    assert _ssc_ops(graphs) == []
    torch._dynamo.reset()


def test_stock_backends_and_other_dtypes_stay_stock():
    layer = SSConv2d(16, 16, 3, padding=1, period=4, backend="decomposed")
    _, graphs = _graphs(layer, torch.randn(2, 16, 16, 16))
    assert _ssc_ops(graphs) == []
    auto = SSConv2d(16, 16, 3, padding=1, period=4).double()
    _, graphs = _graphs(auto, torch.randn(2, 16, 16, 16, dtype=torch.float64))
    assert _ssc_ops(graphs) == []  # auto runs the kernels in float32 only, as in eager
    torch._dynamo.reset()


def test_op_passes_opcheck_and_gradcheck_in_float64():
    layer = SSConv2d(6, 6, 3, padding=1, period=2, groups=3, spatial="checkerboard")
    layer = layer.double()
    with torch.no_grad():
        layer.bias.normal_()
    for stride in (1, 2):
        key = graph_ops.register(
            layer.pattern.dense_mask(), layer.groups, (3, 3), (stride, stride), (1, 1), (1, 1)
        )
        x = torch.randn(2, 6, 5, 6, dtype=torch.float64, requires_grad=True)
        w = layer.to_dense().detach().requires_grad_(True)
        b = layer.bias.detach().clone().requires_grad_(True)
        torch.library.opcheck(torch.ops.ssconv.ssc_conv2d, (x, w, b, key))
        assert torch.autograd.gradcheck(
            lambda x, w, b, key=key: graph_ops.ssc_conv2d(x, w, b, key),
            (x, w, b),
            eps=1e-6,
            atol=1e-7,
        )


def test_export_keeps_standard_operators():
    # A key means nothing in another process: torch.export never gets the graph op.
    layer = SSConv2d(16, 16, 3, padding=1, period=4).eval()
    x = torch.randn(2, 16, 16, 16)
    exported = torch.export.export(layer, (x,))
    targets = [str(n.target) for n in exported.graph.nodes if n.op == "call_function"]
    assert not any("ssconv" in t for t in targets)
    with torch.no_grad():
        _close(exported.module()(x), layer(x), 1e-5)


def test_programs_are_keyed_by_content():
    a = SSConv2d(16, 16, 3, padding=1, period=4)
    b = SSConv2d(16, 16, 3, padding=1, period=4)
    c = SSConv2d(16, 16, 3, padding=1, period=4, shuffle=True, groups=2)
    ka, kb, kc = (m._graph_program_key(16, (1, 1)) for m in (a, b, c))
    assert ka == kb != kc
    assert graph_ops.program(ka).weight_shape == (16, 16, 3, 3)
    assert a._graph_program_key(4, (1, 1)) == -1  # 4-pixel rows: the stock kernels
    with pytest.raises(KeyError, match="no SSC kernel program"):
        graph_ops.program(10**9)
    with pytest.raises(ValueError, match="padding <= dilation"):
        graph_ops.register(a.pattern.dense_mask(), 1, (3, 3), (1, 1), (3, 3), (1, 1))


def test_flop_counter_counts_the_graph_op_as_the_eager_kernels():
    from torch.utils.flop_counter import FlopCounterMode

    layer = SSConv2d(16, 16, 3, padding=1, period=4)
    x = torch.randn(2, 16, 16, 16, requires_grad=True)
    key = layer._graph_program_key(16, (1, 1))
    counts = {}
    for name, run in (
        ("eager", lambda: layer(x)),
        ("op", lambda: graph_ops.ssc_conv2d(x, layer.to_dense(), layer.bias, key)),
    ):
        with FlopCounterMode(display=False) as counter:
            run().sum().backward()
        counts[name] = counter.get_total_flops()
    assert counts["op"] == counts["eager"] > 0


@pytest.mark.parametrize("shuffle", [False, True])
def test_compiled_frozen_model_runs_the_pixel_kernel(shuffle):
    model = nn.Sequential(
        SSConv2d(16, 16, 3, padding=1, period=4, groups=2, shuffle=shuffle),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        SSConv2d(16, 32, 3, stride=2, padding=1, period=4),
    ).eval()
    frozen = freeze(model)
    x = torch.randn(2, 16, 32, 32)
    with torch.no_grad():
        ref = model(x)
        y, graphs = _graphs(frozen, x)
    assert _ssc_ops(graphs) == ["ssconv.ssc_conv2d.default"] * 2
    _close(y, ref, 1e-5)
    torch._dynamo.reset()


@pytest.mark.slow
def test_inductor_training_step_equals_eager():
    """The whole point: inductor compiles the model around the ops (a C++ compiler is
    needed, as for the kernels themselves)."""
    from torch._inductor.utils import run_and_get_code

    torch.manual_seed(0)
    model = nn.Sequential(
        SSConv2d(8, 16, 3, padding=1, period=4),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        SSConv2d(16, 16, 3, stride=2, padding=1, period=4, groups=2, shuffle=True),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 4),
    )
    ref = copy.deepcopy(model)
    x = torch.randn(4, 8, 28, 28)
    target = torch.randint(0, 4, (4,))
    torch._dynamo.reset()
    compiled = torch.compile(model)

    def step():
        nn.functional.cross_entropy(compiled(x), target).backward()

    _, code = run_and_get_code(step)
    nn.functional.cross_entropy(ref(x), target).backward()
    for pa, pb in zip(model.parameters(), ref.parameters()):
        _close(pa.grad, pb.grad, 1e-4)
    # The generated forward calls the kernels' op, the backward their gradient ops.
    code = "\n".join(code)
    assert "ssconv.ssc_conv2d.default" in code
    assert "ssconv.ssc_conv2d_input_grad" in code and "ssconv.ssc_conv2d_weight_grad" in code
    torch._dynamo.reset()
