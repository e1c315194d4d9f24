import math

import pytest
import torch

from ssconv.layers import SSConv2d
from ssconv.pruning import prune
from ssconv.sparsity import rescale_init
from ssconv.train.config import TrainConfig
from ssconv.train.methods import build_model


def filter_sq_norms(module):
    """Per-filter squared norm of the weights a layer really uses."""
    if isinstance(module, SSConv2d):
        return module.to_dense().detach().flatten(1).pow(2).sum(1)
    return module.weight.detach().flatten(1).pow(2).sum(1)


def test_ssc_dense_scale_matches_masked_dense_init():
    torch.manual_seed(0)
    layer = SSConv2d(64, 64, 3, padding=1, period=8, pointwise=True, bias=False)
    eff = float(filter_sq_norms(layer).mean())
    factors = rescale_init(layer, "dense")
    dense_fan_in = 64 * 9
    expected = math.sqrt(layer.effective_fan_in / dense_fan_in)
    assert factors[""] == pytest.approx(expected)
    assert float(filter_sq_norms(layer).mean()) == pytest.approx(eff * expected**2, rel=1e-5)
    # Kaiming over the dense fan-in restricted to the pattern: E||w||^2 = 2 * density.
    assert float(filter_sq_norms(layer).mean()) == pytest.approx(2 * layer.density, rel=0.15)
    assert layer.init_scale == "dense"
    assert rescale_init(layer, "dense") == {}  # already there
    back = rescale_init(layer, "effective")
    assert back[""] == pytest.approx(1 / expected)
    assert float(filter_sq_norms(layer).mean()) == pytest.approx(eff, rel=1e-5)


@pytest.mark.parametrize("scale", ["effective", "dense", "balanced"])
def test_layer_factory_and_convert_initialize_by_the_rule(scale):
    import ssconv

    torch.manual_seed(0)
    built = SSConv2d(64, 64, 3, period=8, bias=False, init_scale=scale)
    torch.manual_seed(0)
    rescaled = SSConv2d(64, 64, 3, period=8, bias=False)
    rescale_init(rescaled, scale)
    torch.testing.assert_close(built.weight_spatial, rescaled.weight_spatial)
    torch.testing.assert_close(built.weight_point, rescaled.weight_point)
    layer = ssconv.SSCFactory(period=8, init_scale=scale)(64, 64, 3)
    assert layer.init_scale == scale
    report = ssconv.convert(
        torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3), torch.nn.Conv2d(64, 64, 3)),
        density=0.2,
        init_scale=scale,
    )
    assert report.model[1].init_scale == scale
    assert "init_scale" in repr(report.model[1]) or scale == "effective"


def test_library_defaults_follow_the_design_study():
    import ssconv
    from ssconv.sparsity import DEFAULT_INIT_SCALE

    assert SSConv2d(8, 8, 3).init_scale == "effective"  # the layer alone: spec section 3
    assert ssconv.SSCFactory().init_scale == DEFAULT_INIT_SCALE
    assert TrainConfig().init_scale == DEFAULT_INIT_SCALE
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3), torch.nn.Conv2d(64, 64, 3))
    assert ssconv.convert(model, density=0.2).model[1].init_scale == DEFAULT_INIT_SCALE
    with pytest.raises(ValueError, match="init_scale must be one of"):
        SSConv2d(8, 8, 3, init_scale="huge")


def test_pruned_effective_scale_per_filter():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(32, 64, 3), torch.nn.ReLU(), torch.nn.Conv2d(64, 64, 3)
    )
    for conv in (model[0], model[2]):
        torch.nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
    prune(model, "random", density=0.1, input_size=(32, 8, 8), seed=0, keep=())
    before = filter_sq_norms(model[0])
    kept = model[0].parametrizations.weight[0].mask.flatten(1).sum(1).float()
    factors = rescale_init(model, "effective")
    assert set(factors) == {"0", "2"}
    after = filter_sq_norms(model[0])
    ok = kept > 0
    torch.testing.assert_close(after[ok], before[ok] * (32 * 9) / kept[ok])
    # Kaiming over each filter's nonzero fan-in: E||w||^2 = 2.
    assert float(after.mean()) == pytest.approx(2.0, rel=0.15)
    # The masked entries stay exactly zero.
    mask = model[0].parametrizations.weight[0].mask
    assert not model[0].parametrizations.weight.original[~mask].any()
    assert rescale_init(model, "dense") == {}


def test_rescale_rejects_unknown_scale():
    with pytest.raises(ValueError, match="init_scale must be one of"):
        rescale_init(torch.nn.Conv2d(3, 3, 3), "fan_out")


@pytest.mark.parametrize("method", ["ssc", "random"])
def test_config_init_scale_puts_methods_on_one_convention(method):
    """With the same init_scale, SSC and a pruned model start with filters of equal norm."""
    norms = {}
    for scale in ("effective", "dense"):
        cfg = TrainConfig.from_dict(
            {
                "method": method,
                "density": 0.1,
                "init_scale": scale,
                "seed": 0,
                "model_kwargs": {"width": 8},
            }
        )
        torch.manual_seed(0)
        model, info = build_model(cfg, 10, 3, (3, 16, 16))
        assert info["init_scale"] == scale
        layer = model.get_submodule("layer2.1.conv1")
        norms[scale] = float(filter_sq_norms(layer).mean())
    assert norms["effective"] == pytest.approx(2.0, rel=0.3)
    assert norms["dense"] < 0.5 * norms["effective"]


def test_balanced_scale_is_the_geometric_mean_for_ssc_and_masks():
    torch.manual_seed(0)
    layer = SSConv2d(64, 64, 3, padding=1, period=8, bias=False)
    eff = float(filter_sq_norms(layer).mean())
    rescale_init(layer, "balanced")
    # ||w||^2 = 2 * sqrt(density): between effective (2) and dense (2 * density).
    assert float(filter_sq_norms(layer).mean()) == pytest.approx(
        eff * math.sqrt(layer.density), rel=1e-5
    )
    conv = torch.nn.Sequential(
        torch.nn.Conv2d(32, 64, 3), torch.nn.ReLU(), torch.nn.Conv2d(64, 64, 3)
    )
    prune(conv, "random", density=0.1, input_size=(32, 8, 8), seed=0, keep=())
    before = filter_sq_norms(conv[0])
    kept = conv[0].parametrizations.weight[0].mask.flatten(1).sum(1).float()
    rescale_init(conv, "balanced")
    ok = kept > 0
    torch.testing.assert_close(
        filter_sq_norms(conv[0])[ok], before[ok] * ((32 * 9) / kept[ok]).sqrt()
    )
