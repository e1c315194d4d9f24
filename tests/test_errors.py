"""Callers branch on the type of an error or warning, never on its text."""

import pytest
from torch import nn

from ssconv.conversion import convert, to_depthwise_separable
from ssconv.errors import BudgetInfeasibleError, NoConvertibleLayerError, SyntheticScoringWarning
from ssconv.models import create_model
from ssconv.pruning import prune
from ssconv.sparsity.budget import LayerSpec, solve_budget
from tests.pruning.toys import ToyBNNet


def test_budget_errors_are_typed_value_errors():
    with pytest.raises(BudgetInfeasibleError, match="cannot be met") as info:
        convert(create_model("cifar_resnet20"), density=0.001)
    assert isinstance(info.value, ValueError) and "cannot be met" in info.value.problem
    with pytest.raises(BudgetInfeasibleError) as info:
        solve_budget([LayerSpec("x", 16, 16, (3, 3))], 0.01, constraints={"period": 1})
    assert info.value.hint == "raise density" and str(info.value).endswith("; raise density")
    with pytest.raises(BudgetInfeasibleError, match="cannot be met"):
        prune(create_model("cifar_resnet20"), "random", density=0.001)


def test_no_convertible_layer_is_typed():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.LazyLinear(10))
    with pytest.raises(NoConvertibleLayerError, match="no conv layer to convert"):
        convert(model, density=0.5)
    with pytest.raises(NoConvertibleLayerError, match="no conv layer to replace"):
        to_depthwise_separable(model, density=0.5)


def test_synthetic_scoring_warning_is_typed():
    with pytest.warns(SyntheticScoringWarning) as caught:
        prune(ToyBNNet(), "snip", density=0.2, input_size=(3, 8, 8), batches=1, batch_size=4)
    w = next(w.message for w in caught if isinstance(w.message, SyntheticScoringWarning))
    assert isinstance(w, UserWarning) and w.hint == "pass data=..."
    assert str(w) == f"{w.problem}; pass data=..." and "synthetic batch" in w.problem


def test_remedy_names_the_library_arguments_and_renders_flags_for_the_cli():
    import pickle

    from ssconv.cli.common import CLI_NAMES, user_message
    from ssconv.errors import RemedyError
    from ssconv.train.trainer import RunFolderError

    exc = RunFolderError(
        "{out} {path} is not empty; pass {resume} or {overwrite}", path=repr("/runs/{a}")
    )
    assert isinstance(exc, ValueError) and isinstance(exc, RemedyError)
    assert str(exc) == "out '/runs/{a}' is not empty; pass resume=True or overwrite=True"
    assert exc.render(CLI_NAMES) == "--out '/runs/{a}' is not empty; pass --resume or --overwrite"
    assert user_message(exc) == exc.render(CLI_NAMES)
    again = pickle.loads(pickle.dumps(exc))  # across processes the template survives
    assert type(again) is RunFolderError and again.render(CLI_NAMES) == exc.render(CLI_NAMES)
    assert user_message(ValueError("plain")) == "plain"
