import copy
import io
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ssconv import create_model, profile
from ssconv.pruning import (
    apply_masks,
    get_masks,
    layer_budgets,
    prepare_masks,
    prune,
    remove_masks,
    scores_to_masks,
)
from ssconv.sparsity.budget import LayerSpec, erk_densities
from ssconv.sparsity.counting import weight_mask


def test_global_masks_exact_count_and_deterministic_ties():
    scores = {"a": torch.ones(2, 3), "b": torch.ones(4)}
    masks = scores_to_masks(scores, 5)
    # All scores tie: the earlier layer, then the lower flat index, wins.
    assert masks["a"].view(-1).tolist() == [True] * 5 + [False]
    assert not masks["b"].any()
    masks = scores_to_masks(scores, 7)
    assert masks["b"].tolist() == [True, False, False, False]
    ranked = {"a": torch.tensor([0.5, 2.0, float("nan")]), "b": torch.tensor([2.0, 1.0])}
    masks = scores_to_masks(ranked, 3)
    assert masks["a"].tolist() == [False, True, False] and masks["b"].tolist() == [True, True]
    assert sum(int(m.sum()) for m in scores_to_masks(ranked, 0).values()) == 0


def test_per_layer_masks():
    scores = {"a": torch.arange(6.0).view(2, 3), "b": -torch.arange(4.0)}
    masks = scores_to_masks(scores, {"a": 2, "b": 1})
    assert masks["a"].view(-1).tolist() == [False] * 4 + [True] * 2
    assert masks["b"].tolist() == [True, False, False, False]
    with pytest.raises(ValueError, match="cannot keep"):
        scores_to_masks(scores, {"a": 7, "b": 0})


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 500), min_size=1, max_size=8),
    frac=st.floats(0.0, 1.0),
    erk=st.booleans(),
)
def test_layer_budgets_exact_total_and_within_one_weight(sizes, frac, erk):
    specs = [LayerSpec(f"l{i}", n, 1, (1, 1)) for i, n in enumerate(sizes)]
    num_keep = int(frac * sum(sizes))
    counts, densities = layer_budgets(specs, num_keep, "erk" if erk else "uniform")
    assert sum(counts) == num_keep
    for c, d, n in zip(counts, densities, sizes):
        assert 0 <= c <= n
        assert abs(c - d * n) < 1 + 1e-9


def test_layer_budgets_equal_keeps_the_same_count_per_layer():
    specs = [LayerSpec("small", 16, 16, (3, 3)), LayerSpec("big", 64, 64, (3, 3))]
    total = sum(s.dense_params for s in specs)
    counts, dens = layer_budgets(specs, 1000, "equal")
    assert counts == [500, 500] and sum(counts) == 1000
    assert dens[0] == pytest.approx(500 / 2304) and total > 1000


def test_layer_budgets_erk_follows_the_formula():
    specs = [
        LayerSpec("small", 16, 16, (3, 3)),
        LayerSpec("big", 64, 64, (3, 3)),
        LayerSpec("fc", 64, 10, ()),  # a linear layer: no kernel
    ]
    total = sum(s.dense_params for s in specs)
    counts, dens = layer_budgets(specs, total // 20, "erk")
    score = [(16 + 16 + 6) / (16 * 16 * 9), (64 + 64 + 6) / (64 * 64 * 9), (64 + 10) / 640]
    assert dens == pytest.approx(erk_densities(specs, (total // 20) / total, 0))
    assert dens[0] / dens[1] == pytest.approx(score[0] / score[1])
    assert dens[2] / dens[1] == pytest.approx(score[2] / score[1])
    assert sum(counts) == total // 20


def _pruned_resnet(density=0.1):
    model = create_model("cifar_resnet20")
    report = prune(model, "magnitude", density=density)
    return model, report


def _check_zero(model):
    for name, module in model.named_modules():
        mask = weight_mask(module)
        if mask is None:
            continue
        assert (module.weight[~mask] == 0).all(), name
        assert (module.parametrizations.weight.original[~mask] == 0).all(), name


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
@pytest.mark.parametrize("amp", [False, True])
def test_pruned_weights_stay_exactly_zero_through_training(optimizer, amp):
    model, report = _pruned_resnet()
    before = {n: m.clone() for n, m in get_masks(model).items()}
    kept_before = model.layer1[0].conv1.weight.detach().clone()
    params = model.parameters()
    if optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4)
    else:
        opt = torch.optim.AdamW(params, lr=0.01, weight_decay=0.05)
    model.train()
    for _ in range(4):
        x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        _check_zero(model)
    after = get_masks(model)
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert profile(model, (3, 8, 8)).weight_params == report.weight_params
    assert not torch.equal(model.layer1[0].conv1.weight.detach(), kept_before)  # it trained


def test_state_dict_round_trip_into_a_fresh_model():
    model, report = _pruned_resnet()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert any(k.endswith("parametrizations.weight.0.mask") for k in state)
    fresh = create_model("cifar_resnet20")
    names = prepare_masks(fresh, state)
    assert set(names) == set(get_masks(model))
    fresh.load_state_dict(state)
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(fresh.eval()(x), model.eval()(x))
    assert profile(fresh, (3, 16, 16)).weight_params == report.weight_params
    assert prepare_masks(fresh, state) == []  # already masked: nothing to do


def test_deepcopy_keeps_masks_and_is_independent():
    model, report = _pruned_resnet()
    clone = copy.deepcopy(model)
    masks, cloned = get_masks(model), get_masks(clone)
    assert masks.keys() == cloned.keys()
    assert all(torch.equal(masks[n], cloned[n]) for n in masks)
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(clone.eval()(x), model.eval()(x))
    apply_masks(clone, {"layer1.0.conv1": torch.zeros_like(masks["layer1.0.conv1"])})
    assert get_masks(model)["layer1.0.conv1"].sum() > 0
    assert profile(clone, (3, 16, 16)).weight_params < report.weight_params


def test_remove_masks_bakes_zeros_into_plain_layers():
    model, report = _pruned_resnet()
    layer = model.layer1[0].conv1
    mask = get_masks(model)["layer1.0.conv1"]
    remove_masks(model)
    assert type(model.layer1[0].conv1) is nn.Conv2d and not get_masks(model)
    assert (model.layer1[0].conv1.weight[~mask] == 0).all()
    # A new plain layer (not the parametrized one re-classed: that would break copies).
    assert layer is not model.layer1[0].conv1
    assert torch.equal(model.layer1[0].conv1.weight, layer.weight)


def test_apply_masks_errors_and_optimizer_identity():
    model = nn.Sequential(nn.Conv2d(2, 3, 3, bias=False), nn.Flatten(), nn.Linear(12, 2))
    weight = model[0].weight
    with pytest.raises(ValueError, match="shape"):
        apply_masks(model, {"0": torch.ones(3, 2)})
    with pytest.raises(ValueError, match="no layer named"):
        apply_masks(model, {"nope": torch.ones(1)})
    apply_masks(model, {"0": torch.rand(3, 2, 3, 3) > 0.5})
    # The stored parameter is the same object: an optimizer built before still updates it.
    assert model[0].parametrizations.weight.original is weight
    model[0].weight = torch.ones(3, 2, 3, 3)  # assignment keeps pruned entries at zero
    assert int(model[0].weight.count_nonzero()) == int(get_masks(model)["0"].sum())


def test_profile_counts_masks_and_dense_executed_macs():
    model, report = _pruned_resnet(0.05)
    prof = profile(model, (3, 16, 16))
    assert prof.weight_params == report.weight_params == math.floor(0.05 * prof.dense_weight_params)
    assert prof.executed_macs == profile(create_model("cifar_resnet20"), (3, 16, 16)).executed_macs
    assert prof.effective_macs < prof.executed_macs


def test_remove_masks_on_a_copy_leaves_the_original_masked():
    import copy

    from torch import nn

    from ssconv.pruning import apply_masks, get_masks, remove_masks

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 2))
    mask = torch.rand(4, 3, 3, 3) > 0.5
    apply_masks(model, {"0": mask})
    baked = remove_masks(copy.deepcopy(model))
    assert type(baked[0]) is nn.Conv2d and not get_masks(baked)
    assert torch.equal(baked[0].weight, model[0].weight)  # the original still works
    assert torch.equal(get_masks(model)["0"], mask)
    x = torch.randn(2, 3, 6, 6)
    assert torch.equal(baked(x), model(x))
