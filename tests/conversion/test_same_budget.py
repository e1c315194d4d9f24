"""One recipe for every rival at SSC's budget (the trainer, ssconv prune and bench use it)."""

import copy

import pytest
import torch

from ssconv import convert
from ssconv.conversion import RIVALS, build_rival, ssc_weight_budget
from ssconv.models import create_model
from ssconv.pruning import PRUNING_METHODS
from ssconv.sparsity.counting import model_weight_counts


def test_ssc_weight_budget_is_convert_s_count_and_leaves_the_model_alone():
    model = create_model("cifar_resnet20")
    before = copy.deepcopy(model.state_dict())
    budget = ssc_weight_budget(model, 0.1, settings={"groups": 1})
    assert budget == convert(model, density=0.1, groups=1, warn_coverage=False).weight_params
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("method", ["random", "magnitude"])
def test_pruning_rival_has_exactly_ssc_s_weights(method):
    model = create_model("cifar_resnet20")
    budget = ssc_weight_budget(model, 0.1)
    report = build_rival(model, method, density=0.1, num_params=budget, seed=0)
    assert report.weight_params == budget == model_weight_counts(model)[0]


def test_structured_rival_meets_the_density_in_place():
    model = create_model("cifar_resnet20")
    report = build_rival(model, "dw_separable", density=0.1)
    assert report.model is model and report.density <= 0.1 + 1e-9


def test_rivals_list_and_unknown_method():
    assert set(PRUNING_METHODS) < set(RIVALS) and "dw_separable" in RIVALS
    with pytest.raises(ValueError, match="method must be one of"):
        build_rival(create_model("cifar_resnet20"), "nope", density=0.1)
