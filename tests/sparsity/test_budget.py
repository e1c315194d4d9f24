"""The budget solver: per-layer SSC patterns meeting a model density (uniform / ERK)."""

import pytest

from ssconv import convert, profile
from ssconv.models import create_model
from ssconv.sparsity.budget import (
    LayerSpec,
    candidate_patterns,
    equal_densities,
    erk_densities,
    layer_densities,
    mixing_front,
    resolve_distribution,
    solve_budget,
)


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


@pytest.mark.parametrize("distribution", ["uniform", "erk", "equal"])
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


def test_auto_distribution_takes_erk_densities_below_0_1_and_uniform_from_there():
    assert resolve_distribution("auto", 0.0999) == "erk"
    assert resolve_distribution("auto", 0.1) == "uniform"
    assert resolve_distribution("auto", None) == "uniform"
    assert resolve_distribution("equal", 0.05) == "equal"
    with pytest.raises(ValueError, match="distribution must be one of"):
        resolve_distribution("erk2", 0.05)
    model = create_model("cifar_resnet20")

    def patterns(report):
        return [(d.name, d.settings, d.params) for d in report.converted]

    for density, same_as in ((0.05, "erk"), (0.02, "erk"), (0.1, "uniform"), (0.2, "uniform")):
        default = convert(model, density=density, warn_coverage=False)
        explicit = convert(model, density=density, distribution=same_as, warn_coverage=False)
        assert default.distribution == same_as  # the report names the one used
        assert f"layer targets: {same_as} densities" in default.table()
        assert patterns(default) == patterns(explicit)
    with pytest.raises(ValueError, match="distribution must be one of.*'ERK'"):
        convert(model, density=0.05, distribution="ERK")


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


def test_mixing_front_drops_patterns_a_cheaper_one_beats_in_channels_read():
    layer = LayerSpec("conv", 64, 64, (3, 3), 1)
    cands = candidate_patterns(layer)
    front = mixing_front(cands)
    assert front and len(front) < len(cands)
    for c in front:
        assert not any(
            d.num_params <= c.num_params
            and d.fan_in_channels > c.fan_in_channels
            and d.spatial_coverage >= c.spatial_coverage
            for d in cands
        )

    # The pattern ERK densities give the wide ResNet-20 layers at 0.05 (one 3 x 3 kernel on 2
    # of 64 channels per filter, no 1 x 1 weights) is dominated: G=8, P=8 with 1 x 1 weights
    # reads 8 channels per filter for fewer weights.
    def find(groups, period, pointwise):
        return next(
            c
            for c in cands
            if (c.groups, c.period, c.pointwise, c.spatial) == (groups, period, pointwise, "full")
        )

    narrow, wider = find(1, 32, False), find(8, 8, True)
    assert (narrow.fan_in_channels, narrow.num_params) == (2, 1152)
    assert (wider.fan_in_channels, wider.num_params) == (8, 1024)
    assert narrow not in front and wider in front


@pytest.mark.parametrize("distribution", ["uniform", "erk"])
@pytest.mark.parametrize("density", [0.1, 0.05])
def test_prefer_mixing_meets_the_same_budget_with_front_patterns(distribution, density):
    """prefer='mixing' reaches the budget like the default, from front patterns only, and
    never reads fewer input channels per filter than the default's choice where that choice
    is off the front."""
    model = create_model("cifar_resnet20", in_channels=1)
    plain = convert(model, density=density, distribution=distribution, warn_coverage=False)
    mixed = convert(
        model, density=density, distribution=distribution, prefer="mixing", warn_coverage=False
    )
    assert mixed.density <= density + 1e-12
    assert abs(mixed.density / density - 1) <= 0.01
    assert abs(mixed.weight_params - plain.weight_params) <= 0.01 * plain.weight_params
    reads = []
    for d in mixed.converted:
        pattern = mixed.model.get_submodule(d.name).pattern
        layer = LayerSpec(d.name, d.in_channels, d.out_channels, d.kernel_size, d.groups)
        assert pattern in mixing_front(candidate_patterns(layer))
        reads.append(pattern.fan_in_channels)
    assert min(reads) >= 4


def test_prefer_rejects_unknown_values():
    with pytest.raises(ValueError, match="prefer must be one of"):
        convert(create_model("cifar_resnet20"), density=0.1, prefer="channels")
    layer = LayerSpec("conv", 16, 16, (3, 3), 1)
    with pytest.raises(ValueError, match="prefer must be one of"):
        solve_budget([layer], 0.5, prefer="weights-first")


def test_equal_densities_give_every_layer_the_same_weights_capped_at_dense():
    layers = [
        LayerSpec("narrow", 16, 16, (3, 3)),
        LayerSpec("mid", 32, 32, (3, 3)),
        LayerSpec("wide", 64, 64, (3, 3)),
    ]
    total = sum(spec.dense_params for spec in layers) + 100
    dens = equal_densities(layers, 0.05, fixed_params=100)
    counts = [d * spec.dense_params for d, spec in zip(dens, layers)]
    assert counts == pytest.approx([counts[0]] * 3)
    assert sum(counts) + 100 == pytest.approx(0.05 * total)
    assert layer_densities("equal", layers, 0.05, 100) == dens
    # Shares larger than a layer: those layers dense, the rest shared again (at 0.3 the
    # share of four layers, 3,629 weights, exceeds the tiny and the narrow layer).
    capped = equal_densities([LayerSpec("tiny", 2, 2, (1, 1)), *layers], 0.3, fixed_params=0)
    assert capped[:2] == [1.0, 1.0] and capped[2] * 9216 == pytest.approx(capped[3] * 36864)
    kept = 4 + 2304 + capped[2] * 9216 + capped[3] * 36864
    assert kept == pytest.approx(0.3 * (4 + 2304 + 9216 + 36864))
    assert equal_densities(layers, 1.0, fixed_params=0) == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="distribution must be one of"):
        layer_densities("synflow", layers, 0.05, 0)


def test_equal_distribution_converts_resnet20_like_synflow_allocates():
    # SynFlow at 0.05 on ResNet-20 keeps 611-849 weights in each of its 18 pruned layers
    # (docs/ssc.md); "equal" asks the solver for the same share per layer.
    report = convert(
        create_model("cifar_resnet20"), density=0.05, distribution="equal", warn_coverage=False
    )
    assert report.density <= 0.05 + 1e-12 and abs(report.density / 0.05 - 1) <= 0.05
    targets = {d.name: d.target_density for d in report.converted}
    assert targets["layer1.0.conv1"] / targets["layer3.1.conv1"] == pytest.approx(16)
