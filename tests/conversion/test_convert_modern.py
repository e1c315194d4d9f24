"""convert() on modern efficient networks (torchvision, random weights): the 1x1 fallback,
nn.Linear left out of the budget, nn.Conv2d subclasses (timm's Conv2dSame) and the error hints."""

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import ssconv
from ssconv import SSCLinear, SSConv2d, convert
from ssconv.conversion import SamePadSSConv2d
from ssconv.sparsity.counting import model_weight_counts

# (model, density) -> the nn.Linear layers the linear fallback converts (None: no fallback);
# with linear_fallback=False those models refuse the budget, naming the fix.
CASES = {
    "mobilenet_v3_small": {0.1: 2, 0.3: 2},  # nn.Linear head: 64 % of weights
    "efficientnet_b0": {0.1: 1, 0.3: None},
    "regnet_y_400mf": {0.1: 1, 0.3: None},
    "shufflenet_v2_x1_0": {0.1: 1, 0.3: 1},
}


def _check(report, density: float, linear_in_budget: bool) -> None:
    assert report.pointwise_fallback, "the 1x1 convs carry the budget"
    assert all(
        isinstance(report.model.get_submodule(n), SSConv2d) for n in report.pointwise_fallback
    )
    assert all(report.model.get_submodule(n).period is None for n in report.pointwise_fallback)
    assert all(isinstance(report.model.get_submodule(n), SSCLinear) for n in report.linear_fallback)
    assert "1x1 fallback" in report.table()
    nonzero, dense = model_weight_counts(report.model)
    assert (nonzero, dense) == (report.weight_params, report.dense_weight_params)
    achieved = report.density if linear_in_budget else report.budget_density
    assert achieved <= density + 1e-9 and achieved >= 0.95 * density
    if not linear_in_budget:
        assert report.density > report.budget_density  # the dense classifier counted apart
        assert report.to_dict()["budget_density"] == pytest.approx(achieved)


@pytest.mark.parametrize("name", sorted(CASES))
def test_convert_efficient_torchvision_models(name):
    model = getattr(torchvision.models, name)(weights=None).eval()
    forwarded = False
    for density, linears in CASES[name].items():
        for linear_in_budget in (True, False):
            kwargs = dict(density=density, linear_in_budget=linear_in_budget, warn_coverage=False)
            report = convert(model, backend="decomposed", **kwargs)
            _check(report, density, linear_in_budget)
            expected = linears if linear_in_budget and linears else 0
            assert len(report.linear_fallback) == expected
            if expected:
                assert "linear fallback" in report.table()
                with pytest.raises(ValueError, match="cannot be met") as info:
                    convert(model, linear_fallback=False, **kwargs)
                assert "linear_fallback=True" in str(info.value)
                assert "linear_in_budget=False" in str(info.value)
            if not forwarded:  # one forward per model keeps the test fast
                with torch.no_grad():
                    out = report.model(torch.randn(1, 3, 64, 64))
                assert out.shape == (1, 1000)
                forwarded = True


def test_convnext_tiny_converts_its_linear_layers():
    # Its 1x1 layers are nn.Linear and its downsampling convs have even kernels: the linear
    # fallback converts the 36 block MLP layers and keeps the classifier dense.
    model = torchvision.models.convnext_tiny(weights=None).eval()
    report = convert(model, density=0.1, warn_coverage=False)
    assert len(report.linear_fallback) == 36 and "classifier.2" not in report.linear_fallback
    assert type(report.model.classifier[2]) is nn.Linear
    assert report.density == pytest.approx(0.1, abs=0.005)
    reasons = {d.name: d.reason for d in report.layers}
    assert reasons["classifier.2"] == "classifier"
    assert reasons["features.1.0.block.3"] == "converted (linear fallback)"
    assert "ssc linear (fallback)" in report.table()
    blocks = report.model.features[1][0].block
    assert blocks[3].groups > 1 and blocks[3].shuffle
    with torch.no_grad():
        assert report.model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
    # Without the fallbacks nothing converts, and the error says what is kept and why.
    for linear_in_budget in (True, False):
        with pytest.raises(ValueError, match="no conv layer to convert") as info:
            convert(model, density=0.3, linear_in_budget=linear_in_budget, linear_fallback=False)
        msg = str(info.value)
        assert "even kernel" in msg and "SSC cannot convert them" in msg
        assert ("nn.Linear" in msg) == linear_in_budget


def test_linear_fallback_keeps_pretrained_weights_on_the_pattern():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, groups=1), nn.Flatten(), nn.Linear(4 * 4 * 4, 32), nn.Linear(32, 8)
    )
    report = convert(model, density=0.3, keep=("stem",), copy_weights=True, warn_coverage=False)
    assert report.linear_fallback == ["2"]
    layer = report.model[2]
    dense = layer.to_linear().weight
    kept = dense != 0
    assert torch.equal(dense[kept], model[2].weight.detach()[kept])
    assert int(kept.sum()) == layer.num_params


def test_pointwise_fallback_can_be_refused_and_is_not_used_when_not_needed():
    model = torchvision.models.mobilenet_v2(weights=None, num_classes=10)
    with pytest.raises(ValueError, match="no conv layer to convert"):
        convert(model, density=0.2, pointwise_fallback=False, linear_fallback=False)
    with pytest.raises(ValueError, match="cannot be met") as info:  # its classifier is small
        convert(model, density=0.2, pointwise_fallback=False)
    assert "(nn.Linear layers included: the fallback was tried)" in str(info.value)
    resnet = torchvision.models.resnet18(weights=None, num_classes=10)
    report = convert(resnet, density=0.2, warn_coverage=False)
    assert not report.pointwise_fallback
    assert "1x1 pointwise" in {d.reason for d in report.layers}


def test_error_hint_leads_to_a_fix():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3, groups=8), nn.Conv2d(8, 8, 3))
    with pytest.raises(ValueError, match="no conv layer to convert") as info:
        convert(model, density=0.9, skip=["2"])
    msg = str(info.value)
    assert "include=['0']" in msg and "drop that pattern from skip=" in msg
    report = convert(model, density=0.9, skip=["2"], include=["0"], warn_coverage=False)
    assert [d.name for d in report.converted] == ["0"]


class Conv2dSame(nn.Conv2d):
    """timm's Conv2dSame (timm.layers.conv2d_same), emulated: 'SAME' padding from the input."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, padding=0, **kwargs)

    def forward(self, x):
        ih, iw = x.shape[-2:]
        pads = [
            max((math.ceil(i / s) - 1) * s + (k - 1) * d + 1 - i, 0)
            for i, k, s, d in zip((ih, iw), self.kernel_size, self.stride, self.dilation)
        ]
        x = F.pad(x, [pads[1] // 2, pads[1] - pads[1] // 2, pads[0] // 2, pads[0] - pads[0] // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class PlainSubclass(nn.Conv2d):
    """A subclass that only adds an attribute: its forward is nn.Conv2d's."""


class CustomForward(nn.Conv2d):
    def forward(self, x):
        return super().forward(x) * 2


def _same_classes():
    classes = [Conv2dSame]
    try:
        from timm.layers import Conv2dSame as TimmConv2dSame
    except ImportError:
        return classes
    return [*classes, TimmConv2dSame]


@pytest.mark.parametrize("same_cls", _same_classes(), ids=lambda c: c.__module__)
def test_conv2d_subclasses(same_cls):
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        same_cls(8, 16, 3, stride=2),
        PlainSubclass(16, 16, 3, padding=1),
        CustomForward(16, 16, 3, padding=1),
    ).eval()
    report = convert(model, period=1, copy_weights=True, keep=(), warn_coverage=False)
    reasons = {d.name: d.reason for d in report.layers}
    assert reasons["1"] == reasons["2"] == "converted"
    assert reasons["3"].startswith("custom forward (CustomForward overrides nn.Conv2d.forward")
    assert type(report.model[1]) is SamePadSSConv2d and isinstance(report.model[2], SSConv2d)
    with torch.no_grad():
        for hw in ((9, 9), (10, 7)):  # odd and even sizes: padding depends on the input
            x = torch.randn(1, 3, *hw)
            assert torch.allclose(report.model(x), model(x), atol=1e-5)
    # A sparse pattern keeps the padding too: the dense view in the original layer agrees.
    sparse = convert(model, period=4, keep=("stem",), warn_coverage=False).model
    dense = same_cls(8, 16, 3, stride=2)
    with torch.no_grad():
        dense.weight.copy_(sparse[1].to_dense())
        dense.bias.copy_(sparse[1].bias)
        x = torch.randn(1, 8, 11, 8)
        assert torch.allclose(sparse[1](x), dense(x), atol=1e-5)


def test_freeze_folds_the_batchnorm_after_a_kept_conv2dsame():
    # tf_* timm models keep their Conv2dSame stem dense: tracing keeps it as a leaf, so the
    # rest of the model still folds, and its own BatchNorm folds into it.
    torch.manual_seed(0)
    model = nn.Sequential(
        Conv2dSame(3, 8, 3, stride=2),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3),
        nn.BatchNorm2d(8),
    )
    for bn in (model[1], model[4]):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    model.eval()
    converted = convert(model, period=1, warn_coverage=False).model
    frozen = ssconv.freeze(converted)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in frozen.modules())
    x = torch.randn(1, 3, 11, 10)
    assert torch.allclose(frozen(x), converted(x), atol=1e-5)


def test_timm_linear_is_converted_by_the_linear_fallback():
    layers = pytest.importorskip("timm.layers")
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.Flatten(), layers.Linear(64, 64), nn.ReLU(), layers.Linear(64, 10)
    )
    report = convert(model, density=0.3, warn_coverage=False)
    assert report.linear_fallback == ["2"] and isinstance(report.model[2], SSCLinear)
    assert report.model(torch.randn(2, 3, 6, 6)).shape == (2, 10)
