"""Each score against a direct computation on a toy network."""

import copy
import logging
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.autograd.functional import hessian
from torch.func import functional_call

from ssconv.pruning import (
    GraSPPruner,
    MagnitudePruner,
    ScoreInputs,
    SNIPPruner,
    SynFlowPruner,
    get_masks,
    get_pruner,
    prune,
)
from ssconv.sparsity.budget import LayerSpec, erk_densities
from tests.pruning.toys import ToyBNNet, ToyConvNet, ToyMLP

NAMES = ["conv1", "conv2", "fc"]
ALL = {"keep": (), "prune_classifier": True}  # every layer of a toy is prunable


def _layers(model, names=NAMES):
    return {n: model.get_submodule(n) for n in names}


def _batches(n=2, size=4, dtype=torch.float64):
    return [
        (torch.randn(size, 2, 5, 5, dtype=dtype), torch.randint(0, 5, (size,))) for _ in range(n)
    ]


def test_magnitude_scores_and_global_mask():
    model = ToyConvNet()
    scores = MagnitudePruner().scores(model, _layers(model), ScoreInputs())
    for n in NAMES:
        assert torch.equal(scores[n], model.get_submodule(n).weight.abs())
    prune(model, "magnitude", num_params=40, **ALL)
    kept = torch.cat([model.get_submodule(n).weight.detach().abs().view(-1) for n in NAMES])
    flat = torch.cat([scores[n].view(-1) for n in NAMES])
    assert int((kept > 0).sum()) == 40
    assert kept[kept > 0].min() >= flat.sort(descending=True).values[39]


def test_snip_equals_abs_w_times_grad_by_hand():
    model = ToyConvNet().double()
    batches = _batches()
    work = copy.deepcopy(model)
    scores = SNIPPruner().scores(work, _layers(work), ScoreInputs(batches=batches))
    weights = [model.get_submodule(n).weight for n in NAMES]
    loss = sum(F.cross_entropy(model(x), y) for x, y in batches)
    grads = torch.autograd.grad(loss, weights)
    for n, w, g in zip(NAMES, weights, grads):
        torch.testing.assert_close(scores[n], (w * g).abs().detach())


def test_snip_needs_batches():
    model = ToyConvNet()
    with pytest.raises(ValueError, match="snip needs"):
        SNIPPruner().scores(model, _layers(model), ScoreInputs())


@pytest.mark.parametrize("temperature", [1.0, 200.0])
def test_grasp_equals_minus_w_hessian_gradient_by_hand(temperature):
    model = ToyConvNet().double()
    batches = _batches()
    work = copy.deepcopy(model)
    keep = GraSPPruner(temperature).scores(work, _layers(work), ScoreInputs(batches=batches))

    # By hand: the full Hessian of the loss over the flattened prunable weights.
    shapes = [model.get_submodule(n).weight.shape for n in NAMES]
    flat0 = torch.cat([model.get_submodule(n).weight.detach().reshape(-1) for n in NAMES])

    def loss_of(flat, x, y):
        params, i = {}, 0
        for n, s in zip(NAMES, shapes):
            params[f"{n}.weight"] = flat[i : i + s.numel()].view(s)
            i += s.numel()
        return F.cross_entropy(functional_call(model, params, (x,)) / temperature, y)

    flat = flat0.clone().requires_grad_(True)
    g = sum(torch.autograd.grad(loss_of(flat, x, y), flat)[0] for x, y in batches)
    hess = [
        hessian(lambda f, x=x, y=y: loss_of(f, x, y), flat0, vectorize=True) for x, y in batches
    ]
    hg = sum(h @ g for h in hess)
    paper = -flat0 * hg  # GraSP's S(-theta) = -theta * Hg: the highest are removed
    ours = torch.cat([keep[n].reshape(-1) for n in NAMES])
    assert hg.abs().max() > 0
    torch.testing.assert_close(ours, -paper)

    # prune() removes the highest paper scores.
    pruned = copy.deepcopy(model)
    prune(pruned, GraSPPruner(temperature), num_params=60, data=batches, batches=2, **ALL)
    mask = torch.cat([get_masks(pruned)[n].reshape(-1) for n in NAMES])
    assert int(mask.sum()) == 60
    assert paper[mask].max() <= paper[~mask].min()


def _synflow_by_hand(model, input_size, names):
    work = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for t in [*work.parameters(), *work.buffers()]:
            if t.is_floating_point():
                t.abs_()
    weights = [work.get_submodule(n).weight for n in names]
    r = work(torch.ones(1, *input_size, dtype=torch.float64)).sum()
    return r, {n: (w * g).abs() for n, w, g in zip(names, weights, torch.autograd.grad(r, weights))}


def test_synflow_scores_by_hand_and_conserve_flow_per_neuron():
    model = ToyMLP()
    names = ["l1", "l2", "l3"]
    work = SynFlowPruner().scoring_model(model)
    scores = SynFlowPruner().scores(work, _layers(work, names), ScoreInputs(input_size=(6,)))
    r, expected = _synflow_by_hand(model, (6,), names)
    for n in names:
        torch.testing.assert_close(scores[n], expected[n])
    s1, s2, s3 = (scores[n] for n in names)  # (out, in) each
    # Synaptic flow is conserved at every hidden neuron: what enters equals what leaves...
    torch.testing.assert_close(s1.sum(1), s2.sum(0))
    torch.testing.assert_close(s2.sum(1), s3.sum(0))
    # ... so every layer carries the whole flow R (no biases).
    for s in (s1, s2, s3):
        torch.testing.assert_close(s.sum(), r.detach())
    assert (s1 >= 0).all()


def test_synflow_linearizes_saturating_activations():
    # ReLU6 saturates on the positive linearized net and would zero every upstream score.
    def mlp(act):
        torch.manual_seed(0)
        net = torch.nn.Sequential(
            torch.nn.Linear(6, 5, bias=False), act(), torch.nn.Linear(5, 4, bias=False), act()
        )
        with torch.no_grad():
            net[0].weight.mul_(20)  # the first layer's outputs exceed 6
        return net

    layers = ["0", "2"]
    scores = []
    for act in (torch.nn.ReLU6, torch.nn.Identity):
        work = SynFlowPruner().scoring_model(mlp(act))
        scores.append(
            SynFlowPruner().scores(work, _layers(work, layers), ScoreInputs(input_size=(6,)))
        )
    for n in layers:
        torch.testing.assert_close(scores[0][n], scores[1][n])
        assert (scores[0][n] > 0).all()
    _, by_hand = _synflow_by_hand(mlp(torch.nn.ReLU6), (6,), layers)
    assert (by_hand["0"] == 0).all()  # what keeping ReLU6 would give


def test_synflow_conserves_flow_per_conv_channel():
    model = ToyConvNet()
    work = SynFlowPruner().scoring_model(model)
    scores = SynFlowPruner().scores(work, _layers(work), ScoreInputs(input_size=(2, 5, 5)))
    c1, c2, fc = scores["conv1"], scores["conv2"], scores["fc"]
    torch.testing.assert_close(c1.sum((1, 2, 3)), c2.sum((0, 2, 3)))
    torch.testing.assert_close(c2.sum((1, 2, 3)), fc.sum(0))
    torch.testing.assert_close(c1.sum(), fc.sum())


def test_synflow_is_data_free_and_runs_in_float64():
    masks = []
    for data in (None, _batches(dtype=torch.float32), _batches(dtype=torch.float32)):
        torch.manual_seed(1)
        model = ToyConvNet()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "synthetic data" warning
            report = prune(
                model,
                "synflow",
                num_params=50,
                data=data,
                input_size=(2, 5, 5),
                iterations=5,
                **ALL,
            )
        assert report.data == "none" and report.batches == 0
        assert report.options["dtype"] == "float64"
        masks.append(get_masks(model))
        assert next(model.parameters()).dtype == torch.float32  # the model itself is untouched
    for other in masks[1:]:
        assert all(torch.equal(masks[0][n], other[n]) for n in NAMES)


def test_synflow_exponential_schedule(caplog):
    model = ToyBNNet()
    with caplog.at_level(logging.DEBUG, logger="ssconv.pruning"):
        report = prune(model, "synflow", density=0.1, input_size=(3, 8, 8), iterations=4)
    counts = [int(m.split("kept ")[1].split()[0]) for m in caplog.messages if "round" in m]
    prunable = sum(layer.dense_params for layer in report.pruned_layers)
    kept = sum(layer.params for layer in report.pruned_layers)
    d = kept / prunable
    assert counts == [max(kept, math.floor(prunable * d ** (k / 4))) for k in (1, 2, 3)] + [kept]
    assert counts == sorted(counts, reverse=True)


class _Recording(SynFlowPruner):
    def __init__(self):
        super().__init__()
        self.alive = []

    def scores(self, model, layers, inputs):
        self.alive.append({n: m.weight.detach() != 0 for n, m in layers.items()})
        return super().scores(model, layers, inputs)


def test_iterative_synflow_keeps_pruned_weights_pruned():
    model = ToyBNNet()
    pruner = _Recording()
    report = prune(model, pruner, density=0.1, input_size=(3, 8, 8), iterations=6)
    assert report.iterations == 6 and len(pruner.alive) == 6
    final = get_masks(model)
    for before, after in zip(pruner.alive, [*pruner.alive[1:], final]):
        for n in final:
            assert not (after[n] & ~before[n]).any()  # nothing pruned comes back
    sizes = [sum(int(a[n].sum()) for n in final) for a in pruner.alive]
    assert sizes == sorted(sizes, reverse=True) and sizes[1] < sizes[0]


def test_magnitude_collapses_a_layer_and_reports_it_synflow_does_not():
    torch.manual_seed(0)
    base = ToyBNNet()
    with torch.no_grad():
        base.conv2.weight.mul_(1e-4)  # tiny weights: magnitude drops the whole layer
    model = copy.deepcopy(base)
    with pytest.warns(UserWarning, match="layer collapse: conv2"):
        report = prune(model, "magnitude", density=0.1)
    assert report.collapsed == ["conv2"]
    assert "COLLAPSED" in report.table() and report.to_dict()["collapsed"] == ["conv2"]
    model = copy.deepcopy(base)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = prune(model, "synflow", density=0.1, input_size=(3, 8, 8))  # 100 rounds
    assert report.collapsed == []


def test_random_uniform_per_layer_and_seeded():
    a, b, c = ToyBNNet(), ToyBNNet(), ToyBNNet()
    ra = prune(a, "random", density=0.3, seed=3)
    prune(b, "random", density=0.3, seed=3)
    prune(c, "random", density=0.3, seed=4)
    ma, mb, mc = get_masks(a), get_masks(b), get_masks(c)
    assert all(torch.equal(ma[n], mb[n]) for n in ma)
    assert any(not torch.equal(ma[n], mc[n]) for n in ma)
    assert ra.scope == "layer" and ra.distribution == "uniform"
    d = sum(x.params for x in ra.pruned_layers) / sum(x.dense_params for x in ra.pruned_layers)
    for layer in ra.pruned_layers:
        assert abs(layer.params - d * layer.dense_params) < 1
        assert layer.target_density == pytest.approx(d)


def test_erk_layer_densities_follow_the_formula():
    model = ToyBNNet()
    report = prune(model, "erk", density=0.2, scope="global", distribution="uniform")
    assert report.scope == "layer" and report.distribution == "erk"  # erk fixes its densities
    layers = report.pruned_layers
    specs = [
        LayerSpec(x.name, x.weight_shape[1], x.weight_shape[0], x.weight_shape[2:]) for x in layers
    ]
    kept = sum(x.params for x in layers)
    dens = erk_densities(specs, kept / sum(s.dense_params for s in specs), 0)
    for layer, spec, d in zip(layers, specs, dens):
        assert abs(layer.params - d * spec.dense_params) < 1
    score = [(s.in_channels + s.out_channels + 6) / (s.dense_params) for s in specs]
    assert dens[0] / dens[1] == pytest.approx(score[0] / score[1])


def test_get_pruner():
    assert get_pruner("snip").data_driven and get_pruner("synflow").iterative
    with pytest.raises(
        ValueError, match="'random', 'erk', 'magnitude', 'snip', 'grasp', 'synflow'"
    ):
        get_pruner("lottery")
    with pytest.raises(ValueError, match="temperature"):
        GraSPPruner(0)
