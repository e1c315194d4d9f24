import copy

import pytest
import torch
from torch import nn

from ssconv.kernels import fused
from ssconv.layers.batchnorm import BatchNorm2d, fast_batchnorm

needs_kernel = pytest.mark.skipif(not fused.available(), reason="fused CPU kernel not built")


def _pair(c, **kw):
    torch.manual_seed(c)
    ref = nn.BatchNorm2d(c, **kw)
    with torch.no_grad():
        if ref.affine:
            ref.weight.uniform_(0.5, 1.5)
            ref.bias.uniform_(-0.5, 0.5)
    fast = copy.deepcopy(ref)
    assert fast_batchnorm(fast) == 1 and type(fast) is BatchNorm2d
    return ref, fast


def _close(a, b, tol=2e-5):
    a, b = a.detach(), b.detach()
    assert torch.allclose(a, b, rtol=tol, atol=tol * float(b.abs().max())), float(
        (a - b).abs().max()
    )


@needs_kernel
@pytest.mark.parametrize("shape", [(8, 16, 32, 32), (5, 24, 7, 9), (3, 3, 1, 1), (2, 16, 5, 37)])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_training_steps_equal_nn_batchnorm(shape, momentum):
    ref, fast = _pair(shape[1], momentum=momentum)
    for step in range(3):
        x = (torch.randn(*shape) * 3 + step).requires_grad_(True)
        g = torch.randn(*shape)
        xa, xb = x.detach().clone().requires_grad_(True), x.detach().clone().requires_grad_(True)
        ya, yb = fast(xa), ref(xb)
        assert fast._fast(xa)
        _close(ya, yb)
        ya.backward(g)
        yb.backward(g)
        _close(xa.grad, xb.grad)
        _close(fast.weight.grad, ref.weight.grad)
        _close(fast.bias.grad, ref.bias.grad)
        _close(fast.running_mean, ref.running_mean)
        _close(fast.running_var, ref.running_var)
        assert int(fast.num_batches_tracked) == int(ref.num_batches_tracked) == step + 1
    fast.eval()
    ref.eval()
    x = torch.randn(*shape)
    assert not fast._fast(x)  # evaluation is nn.BatchNorm2d's own code, on equal statistics
    _close(fast(x), ref(x))


@needs_kernel
def test_gradcheck_of_the_kernels_against_autograd_of_the_formula():
    # The kernels are float32 only; check their gradients against autograd of the textbook
    # formula in float64 on the same data.
    torch.manual_seed(0)
    fast = BatchNorm2d(4)
    with torch.no_grad():
        fast.weight.uniform_(0.5, 1.5)
        fast.bias.uniform_(-1, 1)
    x = torch.randn(3, 4, 5, 6, requires_grad=True)
    g = torch.randn(3, 4, 5, 6)
    fast(x).backward(g)
    x64 = x.detach().double().requires_grad_(True)
    w64 = fast.weight.detach().double().requires_grad_(True)
    b64 = fast.bias.detach().double().requires_grad_(True)
    mean = x64.mean((0, 2, 3), keepdim=True)
    var = x64.var((0, 2, 3), unbiased=False, keepdim=True)
    y = (x64 - mean) / torch.sqrt(var + fast.eps) * w64.view(1, -1, 1, 1) + b64.view(1, -1, 1, 1)
    y.backward(g.double())
    _close(x.grad.double(), x64.grad, 1e-4)
    _close(fast.weight.grad.double(), w64.grad, 1e-4)
    _close(fast.bias.grad.double(), b64.grad, 1e-4)


@needs_kernel
def test_other_calls_run_nn_batchnorm_and_state_dicts_match():
    ref, fast = _pair(8)
    x = torch.randn(4, 8, 6, 6)
    assert not fast._fast(x.contiguous(memory_format=torch.channels_last))
    assert not fast._fast(x.double())
    assert not fast._fast(x[:1, :, :1, :1])  # one value per channel: nn.BatchNorm2d raises
    with pytest.raises(ValueError):
        fast(x[:1, :, :1, :1])
    fast.eval()
    assert not fast._fast(x)
    assert fast.state_dict().keys() == ref.state_dict().keys()
    ref.load_state_dict(fast.state_dict())
    no_affine = BatchNorm2d(8, affine=False)
    assert not no_affine._fast(x)
    untracked_ref, untracked = _pair(8, track_running_stats=False)
    _close(untracked(x), untracked_ref(x))


def test_fast_batchnorm_swaps_only_plain_batchnorms():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.BatchNorm1d(8))
    params = [id(p) for p in model.parameters()]
    assert fast_batchnorm(model) == 1
    assert type(model[1]) is BatchNorm2d and type(model[3]) is nn.BatchNorm1d
    assert [id(p) for p in model.parameters()] == params  # optimizers keep working
    assert fast_batchnorm(model) == 0


def test_models_with_fast_batchnorm_can_be_traced():
    # ssconv's tracer (feature extraction, ssconv.symbolic_trace) used to enter the subclass's
    # forward, which, like nn.BatchNorm2d's, cannot be traced; it is now a leaf as that one is.
    from ssconv.layers.ssconv import symbolic_trace
    from ssconv.models import create_model

    model = create_model("cifar_resnet20", num_classes=10)
    fast_batchnorm(model)
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    leaves = [n.target for n in symbolic_trace(model).graph.nodes if n.op == "call_module"]
    assert "bn1" in leaves and "layer1.0.bn2" in leaves
    _close(symbolic_trace(model)(x), model(x))


@needs_kernel
def test_second_derivatives_raise_instead_of_going_wrong():
    # The kernels' backward is not differentiable: create_graph must not give partial second
    # derivatives silently.
    _, fast = _pair(4)
    x = torch.randn(2, 4, 5, 5, requires_grad=True)
    (g,) = torch.autograd.grad(fast(x).pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError):
        g.sum().backward()
