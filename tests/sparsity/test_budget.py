"""The budget solver: per-layer SSC patterns meeting a model density (uniform / ERK)."""

import pytest

from ssconv import convert, profile
from ssconv.models import create_model
from ssconv.sparsity.budget import LayerSpec, candidate_patterns, erk_densities, solve_budget


@pytest.mark.parametrize("name", ["vgg19_bn", "cifar_resnet32"])
@pytest.mark.parametrize("density", [0.10, 0.05, 0.02])
def test_solver_meets_target_within_5_percent(name, density):
    report = convert(create_model(name), density=density, warn_coverage=False)
    # Counted over all conv and linear layers, dense stem and classifier included.
    prof = profile(report.model, (3, 32, 32))
    assert prof.density == pytest.approx(report.density)
    assert report.density <= density + 1e-12
    assert abs(report.density / density - 1) <= 0.05
    kept = {d.name: d.reason for d in report.layers if not d.converted}
    assert "stem" in kept.values()


@pytest.mark.parametrize("distribution", ["uniform", "erk"])
def test_solver_distributions(distribution):
    report = convert(
        create_model("cifar_resnet20"), density=0.1, distribution=distribution, warn_coverage=False
    )
    assert abs(report.density / 0.1 - 1) <= 0.05
    targets = [d.target_density for d in report.converted]
    if distribution == "uniform":
        assert len(set(targets)) == 1
    else:
        assert len(set(targets)) > 1


def test_erk_formula():
    layers = [LayerSpec("a", 16, 16, (3, 3)), LayerSpec("b", 64, 64, (3, 3))]
    dens = erk_densities(layers, 0.1, fixed_params=0)
    score = [(16 + 16 + 6) / (16 * 16 * 9), (64 + 64 + 6) / (64 * 64 * 9)]
    assert dens[0] / dens[1] == pytest.approx(score[0] / score[1])
    total = sum(d * spec.dense_params for d, spec in zip(dens, layers))
    assert total == pytest.approx(0.1 * sum(s.dense_params for s in layers))


def test_erk_caps_at_dense():
    layers = [LayerSpec("tiny", 3, 4, (3, 3)), LayerSpec("big", 256, 256, (3, 3))]
    dens = erk_densities(layers, 0.5, fixed_params=0)
    assert dens[0] == 1.0 and dens[1] < 1.0


def test_solver_picks_closest_not_exceeding_per_layer_without_fill():
    spec = LayerSpec("x", 64, 64, (3, 3))
    patterns, _ = solve_budget([spec], 0.2, fill=False)
    best = max(p.density for p in candidate_patterns(spec) if p.density <= 0.2 + 1e-12)
    assert patterns[0].density == pytest.approx(best)


def test_solver_constraints_and_infeasible_budget():
    patterns, _ = solve_budget(
        [LayerSpec("x", 64, 64, (3, 3))], 0.3, constraints={"groups": 1, "pointwise": True}
    )
    assert patterns[0].groups == 1 and patterns[0].pointwise
    with pytest.raises(ValueError, match="cannot be met"):
        convert(create_model("cifar_resnet20"), density=0.001)


def test_erk_all_dense_budget():
    layers = [LayerSpec("a", 4, 4, (3, 3)), LayerSpec("b", 8, 8, (3, 3))]
    assert erk_densities(layers, 1.0, fixed_params=0) == [1.0, 1.0]
