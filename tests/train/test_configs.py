"""Every shipped sweep config builds, and one cell of each trains a step on synthetic data."""

from pathlib import Path

import pytest

import ssconv
from ssconv.train.config import TrainConfig
from ssconv.train.sweep import load_sweep
from ssconv.train.trainer import Trainer

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))

# The shape and classes of each config's dataset, as a synthetic stand-in.
STAND_INS = {
    "cifar10": "synthetic:3:32:32:10:16:8",
    "cifar100": "synthetic:3:32:32:100:16:8",
    "tiny_imagenet": "synthetic:3:64:64:200:16:8",
    "imagenet": "synthetic:3:64:64:1000:16:8",
    "fashion_mnist": "synthetic:1:28:28:10:16:8",
}


def test_configs_exist_and_state_their_cost():
    names = {p.stem for p in CONFIGS}
    for dataset in ("cifar10", "cifar100"):
        assert {f"{dataset}_resnet32", f"{dataset}_vgg19"} <= names
    assert {"tinyimagenet_resnet32", "tinyimagenet_vgg19", "imagenet_resnet50"} <= names
    for path in CONFIGS:
        assert "Expected cost" in path.read_text() or "two hours" in path.read_text()


def test_recorded_cells_stay_done_under_todays_defaults(monkeypatch):
    """Every cell recorded under a config's ``results`` still counts as done: a changed default
    must be pinned in the configs behind recorded results (as ``distribution: uniform``,
    ``ssc_shuffle: false``), or ``ssconv sweep`` would train those cells again."""
    from ssconv.train.sweep import done_folder

    monkeypatch.chdir(CONFIGS[0].parents[1])  # the configs name their results from the root
    checked = 0
    for path in [*CONFIGS, *sorted(CONFIGS[0].parent.glob("study/*.yaml"))]:
        spec = load_sweep(path)
        for cell in spec.cells():
            if cell.record is not None and (cell.record / "final.json").exists():
                assert done_folder(cell) is not None, f"{path.name}: {cell.values}"
                checked += 1
    assert checked >= 200


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_builds_and_trains_one_step(path, tmp_path):
    spec = load_sweep(path, out=tmp_path / "runs")
    cells = spec.cells()
    # From each cell's config: a grid sets method and density per cell, variants per row.
    methods = {c.config.method for c in cells}
    if not path.read_text().startswith("# A follow-up"):  # the comparisons: every method
        assert {"dense", "ssc", "snip", "grasp", "synflow", "random", "erk"} <= methods
    densities = sorted({c.config.density for c in cells if c.config.density is not None})
    # An SSC cell at the lowest density; a follow-up grid without one: a cell at that density.
    at_lowest = [c for c in cells if c.config.density == densities[0]]
    cell = next((c for c in at_lowest if c.config.method == "ssc"), at_lowest[0])
    data = {
        **cell.config.to_dict(),
        "dataset": STAND_INS[cell.config.dataset],
        "data_root": None,
        "download": False,
        "epochs": 1,
        "max_steps": 1,
        "batch_size": 4,
        "eval_batch_size": 8,
        "workers": 0,
        "device": "cpu",
        "amp": False,
        "latency_batch": 0,
        "milestones": [],
        "schedule": "constant",
    }
    result = Trainer(TrainConfig.from_dict(data), tmp_path / "one", progress=False).run()
    assert result.final["complete"]
    assert result.final["density"] <= densities[0] + 1e-9


def test_ssc_period_depthwise_and_its_preset():
    from ssconv.train.methods import build_model

    cfg = TrainConfig.from_dict({"ssc_period": "Depthwise", "density": 0.1})
    assert cfg.ssc_period == "depthwise"
    preset = TrainConfig.from_dict({"method": "ssc_depthwise", "density": 0.1})
    model, info = build_model(preset, 10, 1, (1, 28, 28))
    layers = [m for m in model.modules() if isinstance(m, ssconv.SSConv2d)]
    assert layers and all(m.pattern.decomposition().spatial_per_filter == 1 for m in layers)
    assert info["density"] == pytest.approx(0.1, abs=1e-3)
