import json
import math

import pytest
import torch
import torchvision
from torch import nn
from torch.nn.utils import prune

from ssconv import SSConv2d, convert
from ssconv.conversion import check_coverage
from ssconv.models import create_model


def test_explicit_settings_and_skip_rules():
    model = create_model("cifar_resnet20", shortcut="B")
    report = convert(model, period=4, spatial="checkerboard", skip=["layer3.*"])
    reasons = {d.name: d.reason for d in report.layers}
    assert reasons["conv1"] == "stem"
    assert reasons["layer2.0.shortcut.0"] == "1x1 pointwise"
    assert reasons["layer3.0.conv1"] == "skip pattern 'layer3.*'"
    assert isinstance(report.model.layer1[0].conv1, SSConv2d)
    assert report.model.layer1[0].conv1.spatial == "checkerboard"
    # The original model is untouched unless inplace=True.
    assert type(model.layer1[0].conv1) is nn.Conv2d
    forced = convert(model, period=3, include=["conv1"])
    assert isinstance(forced.model.conv1, SSConv2d) and forced.model.conv1.period == 3
    # Where the pattern does not fit, the layer is kept and the reason says why.
    odd = convert(model, period=32)
    assert "pattern does not fit" in {d.name: d.reason for d in odd.layers}["layer1.0.conv1"]


def test_copy_weights_keeps_outputs_of_dense_pattern():
    model = create_model("cifar_resnet20").eval()
    report = convert(model, period=1, copy_weights=True)
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(report.model.eval()(x), model(x), atol=1e-5)


@pytest.mark.parametrize("builder", ["resnet18", "mobilenet_v2"])
def test_convert_torchvision_models(builder):
    model = getattr(torchvision.models, builder)(weights=None, num_classes=10)
    if builder == "mobilenet_v2":
        # Its 3x3 convs are depthwise and the rest 1x1: the default rules keep them all, and
        # only the 1x1 fallback converts it.
        with pytest.raises(ValueError, match="no conv layer to convert"):
            convert(model, density=0.2, pointwise_fallback=False, linear_fallback=False)
        keep = ("stem", "depthwise", "classifier")  # convert the 1x1 convs
    else:
        keep = ("stem", "pointwise", "depthwise", "classifier")
    report = convert(model, density=0.2, keep=keep, warn_coverage=False)
    dense = sum(
        p.numel() for n, p in model.named_parameters() if p.dim() > 1
    )  # conv and linear weights of the original model
    assert report.dense_weight_params == dense
    assert report.converted
    assert report.density <= 0.2 and report.density > 0.19
    out = report.model(torch.randn(1, 3, 64, 64))
    out.sum().backward()


def test_report_table_and_json():
    report = convert(create_model("cifar_resnet20"), density=0.1, warn_coverage=False)
    data = json.loads(report.to_json())
    assert data["target_density"] == 0.1
    assert math.isclose(data["density"], report.density)
    assert len(data["layers"]) == 19  # the stem and 18 3x3 convs (option-A shortcuts)
    assert data["layers"][0]["reason"] == "stem"
    assert "model density (target 0.1000, achieved)" in report.table()


def test_coverage_check_reports_uncovered_channels():
    layer = SSConv2d(16, 2, 3, period=4, pointwise=True)  # 2 filters, 4 residues
    issues = check_coverage(layer, "x")
    assert [i.kind for i in issues] == ["no_spatial_input"]
    assert issues[0].channels == [2, 3, 6, 7, 10, 11, 14, 15]
    empty = nn.Conv2d(4, 2, 3)
    prune.custom_from_mask(empty, "weight", torch.zeros(2, 4, 3, 3))
    kinds = {i.kind for i in check_coverage(empty, "y")}
    assert kinds == {"dead_output", "dead_input"}
    with pytest.warns(UserWarning, match="SSC coverage"):
        convert(nn.Sequential(nn.Conv2d(3, 16, 3), nn.Conv2d(16, 2, 3)), period=4)


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0", "convnext_atto"])
def test_convert_timm_models(name):
    timm = pytest.importorskip("timm")
    model = timm.create_model(name, pretrained=False, num_classes=10)  # no weights downloaded
    report = convert(
        model, density=0.3, keep=("stem", "depthwise", "classifier"), warn_coverage=False
    )
    assert report.converted and abs(report.density / 0.3 - 1) <= 0.05
    if name == "convnext_atto":
        assert any(d.reason.startswith("even kernel") for d in report.layers)
    out = report.model(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 10)
    out.sum().backward()


@pytest.mark.parametrize("density", [0.1, 0.05, None])
def test_depthwise_period_gives_one_spatial_kernel_per_filter(density):
    # period="depthwise": the period is each group's input width in every layer, so the
    # spatial part is a shifted depthwise convolution (the ssc_depthwise preset).
    model = create_model("cifar_resnet20")
    report = convert(model, density=density, period="depthwise", warn_coverage=False)
    layers = [m for m in report.model.modules() if isinstance(m, SSConv2d)]
    assert len(layers) == 18
    for layer in layers:
        assert layer.pattern.decomposition().spatial_per_filter == 1
        assert layer.period == layer.in_channels // layer.groups
    if density is not None:
        assert density - 0.001 <= report.density <= density + 1e-9
    layer = report.model.layer1[0].conv1
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():  # the same function as the spec-masked nn.Conv2d
        assert torch.allclose(layer(x), layer.to_conv2d()(x), atol=1e-5)
