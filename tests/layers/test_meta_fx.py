"""SSConv2d on the meta device (Lightning Fabric's empty_init) and under torch.fx."""

import pytest
import torch
import torch.fx
from torch import nn

import ssconv
from ssconv import SSConv2d


def test_built_on_the_meta_device_then_materialized():
    with torch.device("meta"):
        layer = SSConv2d(16, 16, 3, padding=1, groups=2, period=2, spatial="checkerboard")
    assert layer.weight_spatial.is_meta and layer.in_index.is_meta and layer.tap_index.is_meta
    assert layer(torch.empty(2, 16, 8, 8, device="meta")).shape == (2, 16, 8, 8)
    # Materialize as Fabric / FSDP do: to_empty, then reset_parameters; the index buffers are
    # not saved, so the layer recomputes them where it lives: rebuild and load the weights.
    real = SSConv2d(16, 16, 3, padding=1, groups=2, period=2, spatial="checkerboard")
    layer = layer.to_empty(device="cpu")
    layer.load_state_dict(real.state_dict())
    for name, buf in real.named_buffers():
        layer.get_buffer(name).copy_(buf)
    x = torch.randn(1, 16, 8, 8)
    torch.testing.assert_close(layer(x), real(x))


def test_symbolic_trace_keeps_ssc_layers_as_leaves():
    model = nn.Sequential(
        SSConv2d(8, 16, 3, padding=1, groups=2, period=2, shuffle=True), nn.ReLU(), nn.Flatten()
    )
    gm = ssconv.symbolic_trace(model)
    calls = [n.target for n in gm.graph.nodes if n.op == "call_module"]
    assert calls == ["0", "1", "2"]
    x = torch.randn(2, 8, 6, 6)
    torch.testing.assert_close(gm(x), model(x))


def test_plain_fx_trace_says_how_to_trace():
    model = nn.Sequential(SSConv2d(8, 8, 3, padding=1, groups=2, period=2))
    with pytest.raises(TypeError, match="symbolic_trace"):
        torch.fx.symbolic_trace(model)


def test_torchvision_feature_extractor_with_leaf_modules():
    from torchvision.models.feature_extraction import create_feature_extractor

    model = ssconv.convert(
        ssconv.create_model("cifar_resnet20", num_classes=10), density=0.1, warn_coverage=False
    ).model.eval()
    extractor = create_feature_extractor(
        model,
        return_nodes={"layer2": "mid", "layer3": "last"},
        tracer_kwargs={"leaf_modules": [SSConv2d]},
    )
    feats = extractor(torch.randn(2, 3, 32, 32))
    assert feats["mid"].shape == (2, 32, 16, 16) and feats["last"].shape == (2, 64, 8, 8)
