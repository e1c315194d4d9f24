"""BatchNorm folding."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ssconv
from ssconv.deploy import fold_batchnorm


def test_fold_batchnorm_on_untraceable_model_warns():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: not traceable by FX
                return self.bn(self.conv(x))
            return self.conv(x)

    with pytest.warns(UserWarning, match="not traceable"):
        out = fold_batchnorm(Branchy())
    assert isinstance(out.bn, nn.BatchNorm2d)


class NormAct(nn.BatchNorm2d):
    """A norm + activation module as timm's BatchNormAct2d is: F.batch_norm, then the act
    (not an nn leaf, so tracing goes into it)."""

    def __init__(self, channels):
        super().__init__(channels)
        self.act = nn.SiLU()

    def forward(self, x):
        torch._assert(x.ndim == 4, "expected 4D input")  # reads the conv output's rank
        x = F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.1, self.eps
        )
        return self.act(x)


def _randomize(model):
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            if m.weight is not None:
                nn.init.uniform_(m.weight, 0.5, 1.5)
                nn.init.uniform_(m.bias, -0.2, 0.2)
    return model.eval()


def _batchnorms_left(gm):
    calls = [n for n in gm.graph.nodes if n.op == "call_function" and n.target is F.batch_norm]
    mods = [m for m in gm.modules() if type(m) is nn.BatchNorm2d]
    return len(calls) + len(mods)


@pytest.mark.parametrize("ssc", [False, True])
def test_norm_act_modules_are_folded_and_keep_their_activation(ssc):
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), NormAct(16), nn.Conv2d(16, 8, 3))
    if ssc:
        model = ssconv.convert(model, density=0.4, keep=(), copy_weights=True).model
    _randomize(model)
    x = torch.randn(2, 3, 12, 12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing left unfolded: no warning
        folded = fold_batchnorm(model)
    assert _batchnorms_left(folded) == 0
    assert any(isinstance(m, nn.SiLU) for m in folded.modules())
    assert torch.allclose(folded(x), model(x), atol=1e-5)


def test_timm_batchnorm_act_is_folded():
    timm = pytest.importorskip("timm")
    model = _randomize(timm.create_model("efficientnet_b0", pretrained=False, num_classes=10))
    folded = fold_batchnorm(model)
    assert _batchnorms_left(folded) == 0  # 49 BatchNormAct2d, all folded
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=1e-4)


def test_batchnorm_after_a_conv_whose_output_is_reused_is_left_with_a_warning():
    class Reused(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y  # folding would change what the add sees

    model = _randomize(Reused())
    with pytest.warns(UserWarning, match=r"1 BatchNorm layer\(s\) after a convolution left"):
        folded = fold_batchnorm(model)
    x = torch.randn(2, 3, 8, 8)
    assert torch.allclose(folded(x), model(x), atol=1e-6)


def test_batchnorm_without_affine_folds_into_ssc():
    model = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8, affine=False))
    model = _randomize(ssconv.convert(model, density=0.4, keep=(), copy_weights=True).model)
    folded = fold_batchnorm(model)
    x = torch.randn(2, 8, 6, 6)
    assert _batchnorms_left(folded) == 0
    assert torch.allclose(folded(x), model(x), atol=1e-5)
