import json

import pytest
import yaml

from ssconv.cli.main import main
from ssconv.train.config import ConfigError
from ssconv.train.sweep import RECORDED, cell_status, claim, load_sweep, release

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
            "density": [0.3, 0.01],
            "seed": [0, 1],
        },
    )
    assert main(["sweep", str(path)]) == 0
    out = capsys.readouterr().out
    spec = load_sweep(path)
    statuses = {c.label(): cell_status(c) for c in spec.cells()}
    # The width-4 toy cannot hold a structured model at density 0.01 (its 4-channel layers
    # alone need more, its classifier converted too); SNIP matches SSC's budget, so it is
    # skipped with it.
    for method in ("ssc", "snip", "dw_separable"):
        assert statuses[f"method={method} density=0.01 seed=0"] == "skipped"
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


def test_report_measures_latency_into_run_folders(tmp_path, capsys, monkeypatch):
    import ssconv.report.plots

    plotted = []
    monkeypatch.setattr(
        ssconv.report.plots,
        "plot_all",
        lambda groups, out: plotted.extend(r.final for g in groups for r in g.runs) or [],
    )
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
    # The plots of the same call see the spread and the machine just measured.
    assert plotted and all("latency_p25_ms" in f and "latency_machine" in f for f in plotted)


def test_variants_cross_the_grid_label_runs_and_report_apart(tmp_path, capsys):
    variants = {
        "ssc-eff": {"method": "ssc", "init_scale": "effective"},
        "ssc-dense": {"method": "ssc", "init_scale": "dense"},
    }
    path = write_sweep(tmp_path, {"seed": [0, 1]}, variants=variants)
    cells = load_sweep(path).cells()
    assert [c.label() for c in cells] == [
        "variant=ssc-eff seed=0",
        "variant=ssc-eff seed=1",
        "variant=ssc-dense seed=0",
        "variant=ssc-dense seed=1",
    ]
    assert cells[2].folder == tmp_path / "runs" / "variant=ssc-dense" / "seed=0"
    assert cells[2].config.init_scale == "dense" and cells[2].config.label == "ssc-dense"
    assert cells[0].config.digest() != cells[2].config.digest()

    assert main(["sweep", str(path), "--status"]) == 0
    out = capsys.readouterr().out
    assert "4 cells: 0 done, 0 running, 4 left; ETA: unknown until a cell finishes" in out
    assert main(["sweep", str(path), "--cell", "0", "--cell", "2"]) == 0
    capsys.readouterr()
    assert main(["sweep", str(path), "--status"]) == 0
    out = capsys.readouterr().out
    assert "4 cells: 2 done, 0 running, 2 left; ETA " in out
    assert "with 1 worker(s)" in out
    # A finished cell's line shows its final test top-1.
    acc = json.loads((cells[0].folder / "final.json").read_text())["final_acc1"]
    assert f"   0  done      {100 * acc:.2f} %" in out

    report = tmp_path / "report"
    assert main(["report", str(tmp_path / "runs"), "-o", str(report), "--no-plots"]) == 0
    text = (report / "results.md").read_text()
    assert "| ssc-eff | 0.3 |" in text and "| ssc-dense | 0.3 |" in text


def test_variants_errors(tmp_path):
    path = write_sweep(tmp_path, {"seed": [0]}, variants={"a": {"method": "sniper"}})
    with pytest.raises(ConfigError, match="variants.a"):
        load_sweep(path)
    path = write_sweep(tmp_path, {"seed": [0]}, variants={"a": {"seed": 3}})
    with pytest.raises(ConfigError, match="which the grid also sets"):
        load_sweep(path)
    path = write_sweep(tmp_path, {"seed": [0]}, variants=["a"])
    with pytest.raises(ConfigError, match="variants must map names"):
        load_sweep(path)


def test_progress_eta_counts_finished_epochs(tmp_path):
    from ssconv.train.sweep import progress

    path = write_sweep(
        tmp_path,
        {"method": ["dense"], "seed": [0, 1, 2]},
    )
    cells = load_sweep(path).cells()
    for cell in cells:
        cell.folder.mkdir(parents=True)
    done = {"complete": True, "config_digest": cells[0].config.digest(), "wall_time_s": 100.0}
    (cells[0].folder / "final.json").write_text(json.dumps(done))
    # Cell 1: one of two epochs done, last line torn by a kill during the append.
    cfg = cells[1].config
    assert cfg.epochs == 1
    (cells[1].folder / "checkpoints").mkdir()
    (cells[1].folder / "checkpoints" / "ckpt-000001.pt").write_bytes(b"x")
    (cells[1].folder / "metrics.jsonl").write_text('{"kind": "epoch", "epoch": 1}\n{"kind": "ep')
    info = progress(cells)
    assert info["counts"] == {"done": 1, "partial": 1, "pending": 1}
    # Partial cell: its 1 epoch of 1 is done (0 s left); pending: 100 s.
    assert info["work_left_s"] == pytest.approx(100.0)
    assert info["eta_s"] == pytest.approx(100.0)


def test_set_overrides_base_keys_not_grid_keys(tmp_path, capsys):
    path = write_sweep(tmp_path, {"method": ["ssc"], "seed": [0]})
    cells = load_sweep(path, overrides={"lr": 0.2}).cells()
    assert cells[0].config.lr == 0.2
    with pytest.raises(ConfigError, match="--set seed"):
        load_sweep(path, overrides={"seed": 3})
    with pytest.raises(ConfigError, match="--set"):
        load_sweep(path, overrides={"lrr": 0.2})
    assert main(["sweep", str(path), "--set", "lr=0.2", "--list"]) == 0
    assert main(["sweep", str(path), "--set", "seed=3", "--list"]) == 2
    assert "sets it per cell" in capsys.readouterr().err


def test_sigterm_during_the_final_evaluation_stops_the_sweep(tmp_path, monkeypatch, capsys):
    """A stop request after a cell's last step is honoured: the cell is done, exit 143, and
    the next cell does not start (it used to train to its end)."""
    import os
    import signal

    from ssconv.train import trainer as trainer_module

    path = write_sweep(tmp_path, {"method": ["dense"], "seed": [0, 1]})
    original = trainer_module.Trainer.evaluate
    sent = []

    def evaluate(self, *args, **kwargs):
        if not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(trainer_module.Trainer, "evaluate", evaluate)
    assert main(["sweep", str(path)]) == 128 + signal.SIGTERM
    cells = load_sweep(path).cells()
    assert cell_status(cells[0]) == "done" and cell_status(cells[1]) == "pending"
    assert "after the run finished" in capsys.readouterr().out


# ----------------------------------------------------------- issue 16: locks and crash paths
def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _lock(cell, **info):
    import socket

    data = {"host": socket.gethostname(), "since": 0.0, **info}
    (cell.folder / "sweep.lock").parent.mkdir(parents=True, exist_ok=True)
    (cell.folder / "sweep.lock").write_text(json.dumps(data))


def test_lock_of_a_dead_process_is_taken_over_a_live_one_respected(tmp_path):
    import os
    import subprocess
    import sys

    cells = load_sweep(write_sweep(tmp_path, {"method": ["ssc"], "seed": [0, 1, 2]})).cells()
    _lock(cells[0], pid=_dead_pid())  # a worker killed with kill -9
    assert cell_status(cells[0]) == "pending"
    assert claim(cells[0])
    assert json.loads((cells[0].folder / "sweep.lock").read_text())["pid"] == os.getpid()
    assert not claim(cells[0])  # held now (by us)

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _lock(cells[1], pid=live.pid)
        assert cell_status(cells[1]) == "running"
        assert not claim(cells[1])
        release(cells[1])  # never another worker's lock
        assert json.loads((cells[1].folder / "sweep.lock").read_text())["pid"] == live.pid
    finally:
        live.kill()
        live.wait()
    # A pid reused by a process started after the lock was written: stale.
    _lock(cells[2], pid=os.getpid(), start="1")
    assert cell_status(cells[2]) == "pending" and claim(cells[2])
    release(cells[0])
    release(cells[2])
    assert not (cells[0].folder / "sweep.lock").exists()
    assert not (cells[2].folder / "sweep.lock").exists()
    leftovers = [p.name for c in cells for p in c.folder.iterdir() if p.name != "sweep.lock"]
    assert leftovers == []


@pytest.mark.parametrize("content", ["", '{"pid": 12', "\x00\x00"])
def test_empty_or_torn_lock_is_respected_while_fresh_then_taken_over(tmp_path, content):
    import os

    cells = load_sweep(write_sweep(tmp_path, {"method": ["ssc"]})).cells()
    cells[0].folder.mkdir(parents=True)
    lock = cells[0].folder / "sweep.lock"
    lock.write_text(content)  # an older worker killed between creating and writing its lock
    assert cell_status(cells[0]) == "running"
    assert not claim(cells[0])
    old = lock.stat().st_mtime - 120
    os.utime(lock, (old, old))
    assert cell_status(cells[0]) == "pending"
    assert claim(cells[0])
    release(cells[0])
    assert not lock.exists()


def test_changed_epochs_are_not_reported_done(tmp_path, capsys):
    """Issue 16 item 2: epochs is not in the digest (so finished runs keep theirs); a cell
    trained for other epochs must still not count as done."""
    path = write_sweep(tmp_path, {"method": ["dense"], "schedule": ["cosine", "constant"]})
    assert main(["sweep", str(path)]) == 0
    BASE["epochs"] = 2
    try:
        path = write_sweep(tmp_path, {"method": ["dense"], "schedule": ["cosine", "constant"]})
    finally:
        BASE["epochs"] = 1
    cosine, constant = load_sweep(path).cells()
    before = (cosine.folder / "final.json").read_text()
    assert cell_status(cosine) == "changed"  # resuming would mix two cosine schedules
    assert cell_status(constant) == "partial"  # more epochs continue it exactly
    capsys.readouterr()
    assert main(["sweep", str(path)]) == 1
    err = capsys.readouterr().err
    assert "epochs: saved 1 vs now 2" in err and "another --out" in err
    assert (cosine.folder / "final.json").read_text() == before  # left alone
    assert cell_status(constant) == "done"
    assert json.loads((constant.folder / "final.json").read_text())["epochs"] == 2
    assert main(["sweep", str(path), "--status"]) == 0
    assert "1 changed" in capsys.readouterr().out


def test_torn_final_json_and_disk_full_in_a_sweep(tmp_path, monkeypatch, capsys):
    import errno

    from ssconv.train import checkpoint

    path = write_sweep(tmp_path, {"method": ["dense"], "seed": [0, 1]})
    cells = load_sweep(path).cells()
    assert main(["sweep", str(path), "--cell", "0"]) == 0
    (cells[0].folder / "final.json").write_text('{"complete": tr')  # an older non-atomic write
    assert cell_status(cells[0]) == "partial"
    real = checkpoint._Sink._write

    def full(self, data):
        if self.name.startswith("ckpt-"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(checkpoint._Sink, "_write", full)
    capsys.readouterr()
    assert main(["sweep", str(path)]) == 2  # stops: every next cell would fail the same way
    err = capsys.readouterr().err
    assert cell_status(cells[0]) == "done"  # final.json rewritten from its last checkpoint
    assert "ENOSPC" in err and str(cells[1].folder / "checkpoints") in err
    assert not (cells[1].folder / "sweep.lock").exists()
    assert not (cells[1].folder / "failed.json").exists()


def test_results_records_finished_cells_beyond_their_run_folders(tmp_path, capsys):
    import shutil

    kept = tmp_path / "results"
    path = write_sweep(tmp_path, {"method": ["dense", "ssc"], "seed": [0, 1]}, results=str(kept))
    assert main(["sweep", str(path)]) == 0
    assert "recorded in" in capsys.readouterr().out
    cells = load_sweep(path).cells()
    for cell in cells:
        assert cell.record == kept.joinpath(*cell.folder.relative_to(tmp_path / "runs").parts)
        names = {p.name for p in cell.record.iterdir()}
        assert names == {n for n in RECORDED if (cell.folder / n).is_file()}
        assert {"config.yaml", "final.json", "metrics.jsonl", "profile.txt"} <= names
        assert (cell.record / "final.json").read_bytes() == (
            cell.folder / "final.json"
        ).read_bytes()
    # Both folders reported together: each run counts once.
    assert main(["report", str(tmp_path / "runs"), str(kept), "-o", str(tmp_path / "r1")]) == 0
    both = (tmp_path / "r1" / "results.csv").read_text()
    # A fresh clone: the run folders are gone, the records make every cell done.
    shutil.rmtree(tmp_path / "runs")
    assert {cell_status(c) for c in cells} == {"done"}
    capsys.readouterr()
    assert main(["sweep", str(path)]) == 0
    assert "->" not in capsys.readouterr().out  # nothing trained again
    assert main(["sweep", str(path), "--status"]) == 0
    assert "4 done, 0 running, 0 left" in capsys.readouterr().out
    assert main(["report", str(kept), "-o", str(tmp_path / "r2")]) == 0
    assert (tmp_path / "r2" / "results.csv").read_text() == both
    # A record of other settings is not this cell's: the cell is pending again.
    changed = load_sweep(path, overrides={"lr": 0.05}).cells()
    assert {cell_status(c) for c in changed} == {"pending"}


def test_record_backfills_and_errors(tmp_path, capsys):
    path = write_sweep(tmp_path, {"method": ["ssc"], "seed": [0]})
    assert main(["sweep", str(path)]) == 0
    assert main(["sweep", str(path), "--record"]) == 2
    assert "names no results folder" in capsys.readouterr().err
    kept = tmp_path / "kept"
    assert main(["sweep", str(path), "--results", str(kept), "--record"]) == 0
    out = capsys.readouterr().out
    assert "cell 0 recorded" in out and "1 of 1 cells done and recorded" in out
    assert (kept / "method=ssc" / "seed=0" / "final.json").is_file()
    assert main(["sweep", str(path), "--results", str(kept), "--record"]) == 0
    assert "cell 0 recorded" not in capsys.readouterr().out  # already up to date
    same = write_sweep(tmp_path, {"method": ["ssc"]}, results=str(tmp_path / "runs"))
    with pytest.raises(ConfigError, match="must differ from out"):
        load_sweep(same)
    bad = write_sweep(tmp_path, {"method": ["ssc"]}, results=["a"])
    with pytest.raises(ConfigError, match="results must be a folder path"):
        load_sweep(bad)


def test_extends_inherits_the_base_and_keeps_the_digests(tmp_path):
    grid = {"method": ["ssc", "dense"], "seed": [0]}
    full = load_sweep(write_sweep(tmp_path, grid, results=str(tmp_path / "kept")))
    (tmp_path / "study").mkdir()
    child = tmp_path / "study" / "screen.yaml"
    child.write_text(
        yaml.safe_dump(
            {
                "out": str(tmp_path / "runs2"),
                "extends": "../sweep.yaml",
                "base": {"epochs": 2},
                "grid": grid,
            }
        )
    )
    cells = load_sweep(child).cells()
    assert [c.config.epochs for c in cells] == [2, 2]  # the child's key wins
    assert cells[0].config.density == 0.3 and cells[0].config.model_kwargs == {"width": 4}
    assert cells[0].folder.parent.parent == tmp_path / "runs2"  # out is not inherited
    assert cells[0].record is None  # nor results
    # Moving keys into the parent changes no cell: same resolved config, same digest.
    child.write_text(
        yaml.safe_dump({"out": str(tmp_path / "runs2"), "extends": "../sweep.yaml", "grid": grid})
    )
    assert [c.config.digest() for c in load_sweep(child).cells()] == [
        c.config.digest() for c in full.cells()
    ]
    # Two levels: a grandchild's base on top of the child's on top of the parent's.
    grandchild = tmp_path / "study" / "deeper.yaml"
    grandchild.write_text(
        yaml.safe_dump({"extends": "screen.yaml", "base": {"seed": 5}, "grid": {"method": ["ssc"]}})
    )
    (cell,) = load_sweep(grandchild).cells()
    assert (cell.config.seed, cell.config.density, cell.config.epochs) == (5, 0.3, 1)


def test_extends_errors(tmp_path):
    path = tmp_path / "a.yaml"

    def write(file, **data):
        file.write_text(yaml.safe_dump({"grid": {"method": ["ssc"]}, **data}))

    write(path, extends="missing.yaml")
    with pytest.raises(ConfigError, match=r"a.yaml: extends 'missing.yaml': no such file"):
        load_sweep(path)
    write(path, extends=3)
    with pytest.raises(ConfigError, match="extends must be the path of another sweep file"):
        load_sweep(path)
    write(path, extends="a.yaml")
    with pytest.raises(ConfigError, match="extends forms a cycle"):
        load_sweep(path)
    write(path, extends="b.yaml")
    write(tmp_path / "b.yaml", extends="a.yaml")
    with pytest.raises(ConfigError, match="extends forms a cycle"):
        load_sweep(path)
    write(tmp_path / "b.yaml", base={**BASE, "epoch": 3})  # a typo in the parent names it
    with pytest.raises(ConfigError, match=r"b.yaml: base.*did you mean 'epochs'"):
        load_sweep(path)
    (tmp_path / "b.yaml").write_text(yaml.safe_dump({"grid": {"seed": [0]}, "bogus": 1}))
    with pytest.raises(ConfigError, match=r"b.yaml: unknown top-level key\(s\) \['bogus'\]"):
        load_sweep(path)
    write(tmp_path / "b.yaml", base=[1, 2])
    with pytest.raises(
        ConfigError, match="b.yaml: base: expected a mapping of keys to values, got list"
    ):
        load_sweep(path)
