"""prune(): exact budgets, the same layers and counts as ssconv.convert, every model family."""

import copy
import json
import math
import warnings

import pytest
import torch
from torch import nn

from ssconv import convert, create_model, profile
from ssconv.pruning import PRUNING_METHODS, get_masks, prunable_layers, prune
from tests.pruning.toys import ToyBNNet

FAST = {"iterations": 10, "batch_size": 16}  # synflow rounds, synthetic batch size


def _prune(model, method, **kwargs):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*synthetic batch")
        return prune(model, method, input_size=(3, 8, 8), seed=0, **{**FAST, **kwargs})


@pytest.fixture(scope="module")
def resnet20_ssc():
    torch.manual_seed(0)
    dense = create_model("cifar_resnet20")
    ssc = convert(dense, density=0.1, warn_coverage=False)
    return dense, ssc


@pytest.mark.parametrize("method", PRUNING_METHODS)
def test_prunes_to_exactly_the_nonzero_count_of_an_ssc_model(method, resnet20_ssc):
    dense, ssc = resnet20_ssc
    model = copy.deepcopy(dense)
    report = _prune(model, method, num_params=ssc.weight_params)
    assert profile(model, (3, 16, 16)).weight_params == ssc.weight_params
    assert report.weight_params == ssc.weight_params
    assert profile(ssc.model, (3, 16, 16)).weight_params == ssc.weight_params
    assert report.dense_weight_params == ssc.dense_weight_params
    # The same layers are touched: pruned here, converted there.
    assert {x.name for x in report.pruned_layers} == {d.name for d in ssc.converted}


def test_same_skip_rules_as_convert():
    model = create_model("cifar_resnet20", shortcut="B")
    rules = {"skip": ["layer3.*"], "include": ["layer2.0.shortcut.0"]}
    ssc = convert(model, period=4, warn_coverage=False, **rules)
    layers = prunable_layers(model, **rules)
    assert {n for n, _, r in layers if r is None} == {d.name for d in ssc.converted}
    reasons = {n: r for n, _, r in layers}
    assert reasons["conv1"] == "stem" and reasons["fc"] == "classifier"
    assert reasons["layer3.0.conv1"] == "skip pattern 'layer3.*'"
    assert reasons["layer2.0.shortcut.0"] is None
    assert reasons["layer3.0.shortcut.0"] == "skip pattern 'layer3.*'"
    assert {n for n, _, r in prunable_layers(model, prune_classifier=True) if r is None} >= {"fc"}


def test_density_target_is_exact_and_never_exceeded():
    model = ToyBNNet()
    report = prune(model, "magnitude", density=0.3)
    dense = report.dense_weight_params
    assert report.weight_params == math.floor(0.3 * dense) == report.target_params
    assert profile(model, (3, 8, 8)).weight_params == report.weight_params
    assert report.density <= 0.3


@pytest.mark.parametrize("method", ["magnitude", "snip", "synflow"])
@pytest.mark.parametrize("distribution", ["uniform", "erk"])
def test_layer_scope_is_within_one_weight_per_layer(method, distribution):
    model = ToyBNNet()
    report = _prune(model, method, density=0.2, scope="layer", distribution=distribution)
    input_8 = profile(model, (3, 8, 8))
    assert input_8.weight_params == report.target_params
    assert report.scope == "layer" and report.distribution == distribution
    for layer in report.pruned_layers:
        assert abs(layer.params - layer.target_density * layer.dense_params) < 1


def _family_cases():
    for method in PRUNING_METHODS:
        yield "vgg11_bn", {"width_mult": 0.25}, method, 0.02, {}
    yield "resnet18", {}, "magnitude", 0.02, {}
    # Its depthwise convs, stem and classifier alone hold 3.5 % of the weights.
    yield "mobilenet_v2", {}, "magnitude", 0.1, {"keep": ("stem", "depthwise", "classifier")}


@pytest.mark.parametrize("name, kwargs, method, density, rules", list(_family_cases()))
def test_every_family_reaches_the_target(name, kwargs, method, density, rules):
    """cifar_resnet20 runs all six methods above; here VGG, ResNet-18 and MobileNetV2."""
    model = create_model(name, num_classes=10, **kwargs)
    size = (3, 16, 16) if name == "vgg11_bn" else (3, 32, 32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = prune(model, method, density=density, input_size=size, seed=0, **FAST, **rules)
    prof = profile(model, size)
    assert prof.weight_params == report.weight_params
    assert report.weight_params == math.floor(density * prof.dense_weight_params)
    # The per-layer targets, where a method has them, are met within one weight per layer.
    for layer in report.pruned_layers:
        if layer.target_density is not None:
            assert abs(layer.params - layer.target_density * layer.dense_params) < 1
    # Layer collapse is the method's own doing, and always reported.
    assert report.collapsed == [x.name for x in report.pruned_layers if x.params == 0]
    if report.collapsed:
        assert any("layer collapse" in str(w.message) for w in caught)
    if method in ("random", "erk", "synflow"):
        assert report.collapsed == []
    out = model(torch.randn(2, *size))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_snip_warns_without_data_and_uses_given_data():
    model = ToyBNNet()
    with pytest.warns(UserWarning, match="snip: no data given, scoring on 2 synthetic"):
        report = prune(model, "snip", density=0.2, input_size=(3, 8, 8), batches=2, batch_size=8)
    assert report.data == "synthetic" and report.batches == 2
    data = [(torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,))) for _ in range(3)]
    model = ToyBNNet()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = prune(model, "snip", density=0.2, data=iter(data), batches=2)
    assert report.data == "given" and report.batches == 2
    assert report.weight_params == math.floor(0.2 * report.dense_weight_params)


def test_prune_classifier_and_include():
    model = ToyBNNet()
    report = prune(model, "magnitude", density=0.3, prune_classifier=True)
    assert {x.name for x in report.pruned_layers} == {"conv1", "conv2", "fc"}
    model = ToyBNNet()
    report = prune(model, "magnitude", density=0.3, include=["stem"])
    assert {x.name for x in report.pruned_layers} == {"stem", "conv1", "conv2"}


def test_report_json_and_table():
    model = ToyBNNet()
    report = prune(model, "synflow", density=0.3, input_size=(3, 8, 8), iterations=3)
    data = json.loads(report.to_json())
    assert data["method"] == "synflow" and data["iterations"] == 3 and data["data"] == "none"
    assert data["weight_params"] == report.weight_params and data["collapsed"] == []
    assert {"name", "pruned", "reason", "density", "params", "collapsed"} <= set(data["layers"][0])
    table = report.table()
    assert "kept (stem)" in table and "kept (classifier)" in table and "model density" in table
    assert report.model is model


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"method": "lottery", "density": 0.1}, "method must be one of 'random', 'erk'"),
        ({"method": "random"}, "exactly one of density"),
        ({"method": "random", "density": 0.1, "num_params": 10}, "exactly one of density"),
        ({"method": "random", "density": 1.5}, r"density must be a number in \(0, 1\]"),
        ({"method": "random", "num_params": 10**9}, "num_params must be in"),
        ({"method": "random", "num_params": 0.5}, "num_params must be an int"),
        ({"method": "random", "density": 0.1, "scope": "local"}, "scope must be one of"),
        ({"method": "random", "density": 0.1, "distribution": "x"}, "distribution must be one"),
        ({"method": "synflow", "density": 0.1, "iterations": 0}, "iterations must be a positive"),
        ({"method": "synflow", "density": 0.1}, "synflow needs input_size"),
        ({"method": "snip", "density": 0.1}, "snip without data needs input_size"),
        ({"method": "random", "density": 0.001}, "cannot be met"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        prune(ToyBNNet(), **kwargs)


def test_refuses_masked_model_and_no_prunable_layer():
    model = ToyBNNet()
    prune(model, "random", density=0.2)
    with pytest.raises(ValueError, match="already carries pruning masks"):
        prune(model, "random", density=0.2)
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="no layer to prune.*stem"):
        prune(plain, "random", density=0.5)
    net = create_model("mobilenet_v2", num_classes=10)
    with pytest.raises(ValueError, match="no layer to prune"):
        prune(net, "magnitude", density=0.2)
    assert not get_masks(net)


def test_global_rng_used_only_by_random_methods_without_seed():
    model = ToyBNNet()
    torch.manual_seed(5)
    prune(model, "magnitude", density=0.3)
    after = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(after, torch.rand(3))  # magnitude drew nothing from torch's RNG
    masks = []
    for _ in range(2):
        model = ToyBNNet()
        torch.manual_seed(7)  # seed=None: reproducible through torch.manual_seed
        prune(model, "random", density=0.3)
        masks.append(get_masks(model))
    assert all(torch.equal(masks[0][n], masks[1][n]) for n in masks[0])


@pytest.mark.parametrize("method, passes", [("synflow", 3), ("grasp", 2)])
def test_progress_bar_for_slow_methods_only(method, passes, capsys):
    masks = []
    for progress in (False, True):
        torch.manual_seed(0)
        model = ToyBNNet()
        _prune(model, method, density=0.5, iterations=3, progress=progress)
        masks.append(get_masks(model))
        err = capsys.readouterr().err
        if progress:
            assert f"{method} scoring" in err and f"0/{passes}" in err  # the bar, its total
        else:
            assert err == ""
    assert masks[0].keys() == masks[1].keys()
    assert all(torch.equal(masks[0][n], masks[1][n]) for n in masks[0])  # nothing else changes
    _prune(ToyBNNet(), "magnitude", density=0.5, progress=True)
    assert "scoring" not in capsys.readouterr().err
