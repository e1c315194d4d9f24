import json

import pytest
import yaml

from ssconv.report.results import find_runs, group_runs, markdown_table
from ssconv.train.config import TrainConfig


def fake_run(folder, acc, **keys):
    cfg = TrainConfig.from_dict({"method": "ssc", "density": 0.1, **keys}).to_dict()
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    final = {"complete": True, "final_acc1": acc, "best_acc1": acc, "density": 0.1}
    (folder / "final.json").write_text(json.dumps(final))


def test_seeds_pool_only_within_one_recipe(tmp_path):
    fake_run(tmp_path / "a0", 0.80, seed=0)
    fake_run(tmp_path / "a1", 0.82, seed=1)
    fake_run(tmp_path / "b0", 0.40, seed=0, epochs=2)  # another recipe, same method and seed
    with pytest.warns(UserWarning, match="settings that differ: epochs"):
        groups = group_runs(find_runs([tmp_path]))
    assert sorted(len(g.runs) for g in groups) == [1, 2]
    names = {g.method for g in groups}
    assert len(names) == 2 and all(n.startswith("ssc#") for n in names)
    pooled = next(g for g in groups if len(g.runs) == 2)
    assert pooled.mean("final_acc1") == pytest.approx(0.81)


def test_labels_name_the_rows(tmp_path):
    fake_run(tmp_path / "a", 0.8, label="ssc-dense-init", init_scale="dense")
    fake_run(tmp_path / "b", 0.7, label="ssc-eff", init_scale="effective")
    groups = group_runs(find_runs([tmp_path]))
    assert sorted(g.method for g in groups) == ["ssc-dense-init", "ssc-eff"]
    table = markdown_table(groups)
    assert "| ssc-dense-init | 0.1 |" in table
    # One seed has no spread to show: no "± 0.00".
    assert "| 80.00 | 80.00 | 1 |" in table and "±" not in table


def test_dense_runs_pool_whatever_their_sparse_only_settings(tmp_path):
    """A dense run made alone and one made by a sweep whose base sets sparse-model keys
    (init_scale, prune_iterations, ...) are the same computation: they pool as seeds."""
    fake_run(tmp_path / "a", 0.91, method="dense", density=None, seed=0)
    fake_run(
        tmp_path / "b",
        0.92,
        method="dense",
        density=None,
        seed=1,
        init_scale="dense",
        prune_iterations=7,
    )
    groups = group_runs(find_runs([tmp_path]))
    assert len(groups) == 1 and len(groups[0].runs) == 2


def test_seed_table_lines_up_seeds_and_marks_the_missing(tmp_path):
    from ssconv.report.results import seed_table

    fake_run(tmp_path / "s0", 0.80, seed=0)
    fake_run(tmp_path / "s2", 0.84, seed=2)
    fake_run(tmp_path / "d0", 0.90, method="dense", density=None, seed=0)
    fake_run(tmp_path / "d1", 0.92, method="dense", density=None, seed=1)
    table = seed_table(group_runs(find_runs([tmp_path])))
    lines = table.splitlines()
    assert lines[0] == "| method | target density | seed 0 | seed 1 | seed 2 | mean ± std | seeds |"
    assert "| dense | - | 90.00 | 92.00 | - | 91.00 ± 1.41 | 2 |" in lines
    assert "| ssc | 0.1 | 80.00 | - | 84.00 | 82.00 ± 2.83 | 2 |" in lines


def test_report_seeds_keeps_only_those_runs(tmp_path, capsys):
    from ssconv.cli.main import main

    for seed, acc in ((0, 0.80), (1, 0.82), (5, 0.50)):
        fake_run(tmp_path / f"s{seed}", acc, seed=seed)
    assert main(["report", str(tmp_path), "--seeds", "0", "1", "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "| 81.00 ± 1.41 | 81.00 ± 1.41 | 2 |" in out and "seed 5" not in out
    assert main(["report", str(tmp_path), "--seeds", "7"]) == 2
    err = capsys.readouterr().err
    assert "--seeds 7" in err and "seeds 0, 1, 5" in err


def test_report_rename_draws_runs_under_another_label(tmp_path, capsys):
    from ssconv.cli.main import main

    fake_run(tmp_path / "variant=ssc@0.02" / "seed=0", 0.80, seed=0)
    fake_run(tmp_path / "variant=ssc@0.02" / "seed=1", 0.82, seed=1)
    assert main(["report", str(tmp_path), "--no-plots", "--rename", "ssc@0.02=ssc"]) == 0
    out = capsys.readouterr().out
    assert "| ssc | 0.1 |" in out and "ssc@0.02" not in out
    assert main(["report", str(tmp_path), "--rename", "sssc=ssc"]) == 2
    assert "no run is labelled 'sssc' (labels: ssc@0.02)" in capsys.readouterr().err
    assert main(["report", str(tmp_path), "--rename", "ssc@0.02"]) == 2
    assert "expected OLD=NEW" in capsys.readouterr().err
