"""The channel-order pass: residue order between SSC layers, outputs unchanged."""

import pytest
import torch

import ssconv
from ssconv.deploy import freeze
from tests.deploy.bn import randomize_bn


@pytest.mark.parametrize("name", ["cifar_resnet20", "vgg11_bn"])
def test_channel_order_pass_removes_transposes_and_keeps_outputs(name):
    from ssconv.layers.channel_order import ChannelOrder, residue_permutation

    model = randomize_bn(
        ssconv.convert(ssconv.create_model(name), period=4, warn_coverage=False).model
    )
    plain = freeze(model, channel_order=False)
    fast = freeze(model)
    residue = [m for m in fast.modules() if getattr(m, "residue", False)]
    conversions = [m for m in fast.modules() if isinstance(m, ChannelOrder)]
    assert residue and len(conversions) < len(residue)  # fewer than 2 transposes per layer
    for fmt in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(2, 3, 32, 32).contiguous(memory_format=fmt)
        assert torch.allclose(fast(x), model(x), atol=1e-4)
        assert torch.allclose(fast(x), plain(x), atol=1e-4)
    perm = residue_permutation(2, 4, 16)
    assert sorted(perm.tolist()) == list(range(16))
    assert perm[:2].tolist() == [0, 4]  # group 0 (8 channels, P=4): residue 0 is 0, 4


def _fused_chain():
    from torch import nn

    torch.manual_seed(0)
    conv = lambda: ssconv.SSConv2d(128, 128, 3, padding=1, period=4)  # noqa: E731
    return nn.Sequential(
        conv(), nn.ReLU(), conv(), nn.ReLU(), nn.MaxPool2d(2), conv(), nn.ReLU(), conv()
    ).eval()


def test_fused_layers_hand_channels_last_outputs_on():
    from ssconv.kernels import fused
    from ssconv.layers.inference import SSConv2dInference

    model = _fused_chain()
    frozen = freeze(model)
    layers = [m for m in frozen.modules() if isinstance(m, SSConv2dInference)]
    assert all(m.fused for m in layers)  # 128 channels on 8 x 8 maps: the fused kernel
    # The last layer's output is the model's: it keeps the caller's layout.
    assert [m.output_layout for m in layers] == ["channels_last"] * 3 + ["nchw"]
    assert "channels_last output" in repr(layers[0])
    seen = []
    hooks = [
        m.register_forward_pre_hook(
            lambda _m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last))
        )
        for m in layers
    ]
    x = torch.randn(2, 128, 8, 8)
    with torch.no_grad():
        y = frozen(x)
        ref = model(x)
    for h in hooks:
        h.remove()
    assert torch.allclose(y, ref, atol=1e-4)
    assert y.is_contiguous()  # NCHW in, NCHW out (from the chain's end)
    if fused.available():
        assert seen == [False, True, True, True]  # one copy in, none between the layers
    # Nothing chained where a layer's output also goes elsewhere, nor for onnxruntime.
    assert not any(
        m.output_layout
        for m in freeze(model, target="onnxruntime").modules()
        if isinstance(m, SSConv2dInference)
    )


def test_outputs_used_beyond_fused_layers_keep_their_layout():
    from torch import nn

    from ssconv.layers.inference import SSConv2dInference

    class Branch(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = ssconv.SSConv2d(128, 128, 3, padding=1, period=4)
            self.b = ssconv.SSConv2d(128, 128, 3, padding=1, period=4)

        def forward(self, x):
            y = torch.relu(self.a(x))
            return self.b(y) + y  # y also feeds the add

    torch.manual_seed(0)
    model = Branch().eval()
    frozen = freeze(model)
    layers = [m for m in frozen.modules() if isinstance(m, SSConv2dInference)]
    assert [m.output_layout for m in layers] == [None, None]
    x = torch.randn(2, 128, 8, 8)
    with torch.no_grad():
        assert torch.allclose(frozen(x), model(x), atol=1e-4)


def test_chains_hand_channels_last_only_to_layers_that_run_the_fused_kernel():
    # ResNet-32's 32 -> 64 stride-2 layer runs the fused kernel at 8 output pixels, the
    # 64-channel layer after it the pixel kernel on NCHW (narrow layers at >= 7 pixels): a
    # channels_last handoff would move it off that kernel, so the producer checks per call.
    from torch import nn

    from ssconv.kernels import fused
    from ssconv.layers.inference import SSConv2dInference

    torch.manual_seed(0)
    model = nn.Sequential(
        ssconv.SSConv2d(32, 64, 3, stride=2, padding=1, period=4),
        nn.ReLU(),
        ssconv.SSConv2d(64, 64, 3, padding=1, period=4),
    ).eval()
    frozen = freeze(model)
    first, second = [m for m in frozen.modules() if isinstance(m, SSConv2dInference)]
    assert first.output_layout == "channels_last" and first.chain_consumers[0][0] is second
    assert second.output_layout == "nchw"
    seen = []
    second.register_forward_pre_hook(
        lambda _m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    x = torch.randn(2, 32, 16, 16)
    with torch.no_grad():
        assert torch.allclose(frozen(x), model(x), atol=1e-4)
    if fused.available():
        assert first._consumers_take_channels_last(8) is False  # the pixel kernel's size
        assert seen == [False]


def _trainable_chain(width: int = 128):
    from torch import nn

    torch.manual_seed(0)
    conv = lambda: ssconv.SSConv2d(  # noqa: E731
        width, width, 3, padding=1, groups=2, period=4, bias=False
    )
    return nn.Sequential(
        conv(),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        conv(),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.MaxPool2d(2),
        conv(),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(width * 4, 10),
    ).train()


def _input_layouts(model):
    seen = []
    for m in model.modules():
        if isinstance(m, ssconv.SSConv2d):
            m.register_forward_pre_hook(
                lambda _m, args: seen.append(
                    args[0].is_contiguous(memory_format=torch.channels_last)
                    and not args[0].is_contiguous()
                )
            )
    return seen


def test_trainable_layers_chain_in_training_calls_with_equal_values_and_gradients():
    import copy

    from ssconv.deploy import chain_channels_last
    from ssconv.kernels import fused

    model = _trainable_chain()
    chained = chain_channels_last(copy.deepcopy(model))
    layers = [m for m in chained.modules() if isinstance(m, ssconv.SSConv2d)]
    # Through BatchNorm, ReLU and the pool; the last layer feeds the flatten: NCHW.
    assert [m.output_layout for m in layers] == ["channels_last", "channels_last", "nchw"]
    assert layers[0].chain_consumers[0][0] is layers[1]
    assert layers[1].chain_consumers[0][1] == ((2, 2, 0, 1, False),)  # the pool's width change
    seen = _input_layouts(chained)
    x = torch.randn(4, 128, 4, 4, requires_grad=True)
    xc = x.detach().clone().requires_grad_()
    r = torch.randn(4, 10)
    (model(x) * r).sum().backward()
    y = chained(xc)
    assert y.is_contiguous()
    (y * r).sum().backward()
    assert xc.grad.is_contiguous()  # the input gradient in the input's layout
    assert torch.allclose(xc.grad, x.grad, rtol=1e-4, atol=1e-5 * x.grad.abs().max().item())
    for (name, a), b in zip(model.named_parameters(), chained.parameters()):
        assert torch.allclose(b.grad, a.grad, rtol=1e-4, atol=1e-5 * a.grad.abs().max()), name
    if fused.available():
        # 128 channels on 4 x 4 and 2 x 2 maps train on the channel-lane kernels: one copy
        # in, none between the layers.
        assert all(m._train_kernel(torch.empty(1, 128, 4, 4)) == "channels" for m in layers)
        assert seen == [False, True, True]
    # Calls without gradients are unchanged: NCHW in, NCHW between the layers.
    seen.clear()
    with torch.no_grad():
        assert torch.allclose(chained.eval()(x), model.eval()(x), atol=1e-4)
    assert seen == [False, False, False]


def test_trainable_chains_hand_channels_last_only_to_channel_lane_training_layers():
    from torch import nn

    from ssconv.deploy import chain_channels_last

    # 64 channels train on the stock kernels (the channel-lane rule wants 128): the chain is
    # set up from the graph, and each call finds that its consumer would not read it.
    model = chain_channels_last(_trainable_chain(64))
    layers = [m for m in model.modules() if isinstance(m, ssconv.SSConv2d)]
    assert layers[0].output_layout == "channels_last"
    assert layers[0]._consumers_take_channels_last(4) is False
    seen = _input_layouts(model)
    model(torch.randn(2, 64, 4, 4)).sum().backward()
    assert seen == [False, False, False]
    # A consumer that is not an SSC layer ends the chain before it begins.
    solo = chain_channels_last(
        nn.Sequential(ssconv.SSConv2d(128, 128, 3, padding=1, period=4), nn.Flatten())
    )
    assert solo[0].output_layout is None and not solo[0].chain_consumers


class _Block(torch.nn.Module):
    """Three frozen-layer ReLU forms, and one output that a ReLU does not read alone."""

    def __init__(self):
        super().__init__()
        conv = lambda c: ssconv.SSConv2d(c, c, 3, padding=1, period=4)  # noqa: E731
        self.a, self.b, self.c, self.d = conv(16), conv(16), conv(16), conv(16)
        self.relu = torch.nn.ReLU(inplace=True)

    def forward(self, x):
        y = self.relu(self.a(x))  # module
        y = torch.nn.functional.relu(self.b(y))  # function
        z = self.c(y).relu()  # method
        return torch.relu(self.d(z) + z)  # the add reads d's output: not fused


def test_freeze_fuses_relus_that_alone_read_frozen_layers():
    import torch.fx as fx

    from ssconv.deploy import fuse_relu
    from ssconv.layers.inference import SSConv2dInference

    torch.manual_seed(0)
    model = _Block().eval()
    x = torch.randn(2, 16, 12, 12)
    with torch.no_grad():
        ref = model(x)
        frozen = freeze(model)
        layers = [m for m in frozen.modules() if isinstance(m, SSConv2dInference)]
        assert [m.fused_relu for m in layers] == [True, True, True, False]
        assert "ReLU fused" in repr(layers[0])
        assert isinstance(frozen, fx.GraphModule)
        relus = [n for n in frozen.graph.nodes if "relu" in str(n.target)]
        assert len(relus) == 1  # only the one after the add is left
        assert torch.allclose(frozen(x), ref, atol=1e-5)
        # The stock paths apply the fused ReLU themselves (here: float64, no kernel).
        assert torch.allclose(frozen.double()(x.double()), ref.double(), atol=1e-5)
        # Off for onnxruntime, and on request.
        for plain in (freeze(model, target="onnxruntime"), freeze(model, relu_fusion=False)):
            assert not any(m.fused_relu for m in plain.modules() if hasattr(m, "fused_relu"))
            assert torch.allclose(plain(x), ref, atol=1e-5)
        # Fusing twice changes nothing; an untraceable model is returned as it is.
        assert fuse_relu(frozen) is frozen
        assert torch.allclose(frozen.float()(x), ref, atol=1e-5)

        class Untraceable(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = layers[3]

            def forward(self, x):
                return torch.relu(self.conv(x)) if x.sum() > 0 else x

        odd = Untraceable()
        assert fuse_relu(odd) is odd and not odd.conv.fused_relu
        # Layers on the channel-lane kernel (128 channels, 8 x 8 and 4 x 4), in a chain.
        chain = _fused_chain()
        y = torch.randn(2, 128, 8, 8)
        frozen = freeze(chain)
        layers = [m for m in frozen.modules() if isinstance(m, SSConv2dInference)]
        assert [m.fused_relu for m in layers] == [True, True, True, False]
        assert torch.allclose(frozen(y), chain(y), atol=1e-4)
