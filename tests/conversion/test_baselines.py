"""The depthwise-separable baseline at SSC's density."""

import pytest
import torch

from ssconv import profile
from ssconv.conversion import DepthwiseSeparableConv2d, to_depthwise_separable
from ssconv.errors import BudgetInfeasibleError
from ssconv.models import create_model


@pytest.mark.parametrize("density", [0.1, 0.05])
def test_depthwise_separable_meets_the_density_and_runs(density):
    model = create_model("cifar_resnet20")
    report = to_depthwise_separable(model, density=density)
    assert report.model is not model  # a copy unless inplace
    blocks = [m for m in report.model.modules() if isinstance(m, DepthwiseSeparableConv2d)]
    assert blocks and len(blocks) == len(report.converted)
    # Below its densest factorization (about 0.14 on this model) it lands close to the target.
    assert 0.5 * density < report.density <= density + 1e-9
    result = profile(report.model, (1, 3, 32, 32))
    assert result.weight_params == report.weight_params
    assert report.model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_depthwise_separable_infeasible_budget_is_typed():
    with pytest.raises(BudgetInfeasibleError, match="cannot be met"):
        to_depthwise_separable(create_model("cifar_resnet20"), density=0.005)
