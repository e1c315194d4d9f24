import json

import pytest
import yaml

from ssconv.cli.main import main
from ssconv.train.config import ConfigError
from ssconv.train.sweep import cell_status, claim, load_sweep, release

BASE = {
    "dataset": "synthetic:3:16:16:4:48:16",
    "model": "cifar_resnet20",
    "model_kwargs": {"width": 4},
    "epochs": 1,
    "batch_size": 8,
    "max_steps": 2,
    "workers": 0,
    "eval_batch_size": 16,
    "latency_batch": 4,
    "prune_iterations": 3,
    "density": 0.3,
}


def write_sweep(tmp_path, grid, **extra):
    path = tmp_path / "sweep.yaml"
    path.write_text(
        yaml.safe_dump(
            {"out": str(tmp_path / "runs"), "base": BASE, "grid": grid, **extra}, sort_keys=False
        )
    )
    return path


def test_cells_dedupe_dense_and_validate(tmp_path):
    path = write_sweep(
        tmp_path, {"method": ["dense", "ssc"], "density": [0.3, 0.2], "seed": [0, 1]}
    )
    cells = load_sweep(path).cells()
    labels = [c.label() for c in cells]
    assert len(cells) == 2 + 4  # dense once per seed
    assert "method=dense seed=0" in labels and "method=ssc density=0.3 seed=1" in labels
    assert cells[0].folder == tmp_path / "runs" / "method=dense" / "seed=0"
    bad = write_sweep(tmp_path, {"method": ["ssc", "sniper"]})
    with pytest.raises(ConfigError, match="'sniper' is not one of"):
        load_sweep(bad)
    bad = write_sweep(tmp_path, {"epoch": [1]})
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        load_sweep(bad)


def test_sweep_runs_skips_done_and_reports(tmp_path, capsys):
    path = write_sweep(
        tmp_path,
        {
            "method": ["dense", "ssc", "snip", "dw_separable"],
            "density": [0.3, 0.02],
            "seed": [0, 1],
        },
    )
    assert main(["sweep", str(path)]) == 0
    out = capsys.readouterr().out
    spec = load_sweep(path)
    statuses = {c.label(): cell_status(c) for c in spec.cells()}
    # The width-4 toy cannot hold a structured model at density 0.02 (its 4-channel layers
    # alone need more); SNIP matches SSC's budget, so it is skipped with it.
    for method in ("ssc", "snip", "dw_separable"):
        assert statuses[f"method={method} density=0.02 seed=0"] == "skipped"
        assert statuses[f"method={method} density=0.3 seed=1"] == "done"
    assert all(s in ("done", "skipped") for s in statuses.values()), statuses
    assert "14 cells" in out
    # Running again trains nothing.
    assert main(["sweep", str(path)]) == 0
    assert "->" not in capsys.readouterr().out

    report = tmp_path / "report"
    assert main(["report", str(tmp_path / "runs"), "-o", str(report)]) == 0
    text = (report / "results.md").read_text()
    assert "| synthetic:3:16:16:4:48:16 | cifar_resnet20 | ssc | 0.3 |" in text
    assert "± " in text
    csv_rows = (report / "results.csv").read_text().splitlines()
    assert csv_rows[0].startswith("dataset,model,method,target_density")
    assert len(csv_rows) == 1 + 4  # header; dense, ssc, snip and dw_separable at 0.3
    for name in ("acc_vs_density", "acc_vs_macs", "acc_vs_latency", "curves"):
        assert list(report.glob(f"{name}_*.png")), name


def test_next_shard_list_and_locks(tmp_path, capsys):
    path = write_sweep(
        tmp_path,
        {"method": ["ssc", "magnitude"], "seed": [0, 1]},
    )
    spec = load_sweep(path)
    cells = spec.cells()
    # Another live worker holds cell 0: it is left alone.
    assert claim(cells[0])
    assert main(["sweep", str(path), "--next"]) == 0
    assert cell_status(cells[0]) == "running" and cell_status(cells[1]) == "done"
    release(cells[0])
    assert main(["sweep", str(path), "--shard", "1/2"]) == 0
    assert cell_status(cells[3]) == "done" and cell_status(cells[2]) == "pending"
    capsys.readouterr()
    assert main(["sweep", str(path), "--list"]) == 0
    listing = capsys.readouterr().out
    assert "pending" in listing and "done" in listing
    assert main(["sweep", str(path), "--shard", "3/2"]) == 2
    assert main(["sweep", str(path), "--cell", "9"]) == 2


def test_failed_cell_is_recorded_and_the_grid_goes_on(tmp_path, capsys):
    grid = {"method": ["dense"], "lr": [1e30, 0.05]}
    path = write_sweep(tmp_path, grid)
    assert main(["sweep", str(path)]) == 1
    cells = load_sweep(path).cells()
    assert cell_status(cells[0]) == "failed"
    assert "loss became" in json.loads((cells[0].folder / "failed.json").read_text())["reason"]
    assert cell_status(cells[1]) == "done"


def test_report_errors(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no finished runs" in capsys.readouterr().err


def test_report_measures_latency_into_run_folders(tmp_path, capsys):
    BASE["latency_batch"] = 0
    try:
        path = write_sweep(tmp_path, {"method": ["ssc", "magnitude", "dw_separable"]})
    finally:
        BASE["latency_batch"] = 4
    assert main(["sweep", str(path)]) == 0
    assert (
        main(
            [
                "report",
                str(tmp_path / "runs"),
                "--measure-latency",
                "--latency-batch",
                "4",
                "--no-plots",
                "-o",
                str(tmp_path / "rep"),
            ]
        )
        == 0
    )
    for cell in load_sweep(path).cells():
        final = json.loads((cell.folder / "final.json").read_text())
        assert final["latency_ms"] > 0 and final["latency_batch"] == 4
    assert "latency" in capsys.readouterr().err
