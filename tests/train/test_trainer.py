"""End-to-end training: artifacts, exact resume, failures, signals, every method."""

import json
import math
import os
import signal
import time

import pytest
import torch

from ssconv.cli.common import user_message
from ssconv.train.checkpoint import list_checkpoints, load_checkpoint
from ssconv.train.config import TrainConfig
from ssconv.train.trainer import (
    NonFiniteLossError,
    ResumeMismatchError,
    RunFolderError,
    Trainer,
    TrainingInterrupted,
    load_trained_model,
)

DATA = "synthetic:3:16:16:4:96:32"


def cfg(**kw) -> TrainConfig:
    base = dict(
        model="cifar_resnet20",
        model_kwargs={"width": 4},
        dataset=DATA,
        method="ssc",
        density=0.3,
        epochs=2,
        batch_size=16,
        max_steps=3,
        workers=0,
        lr=0.05,
        eval_batch_size=32,
        seed=3,
        device="cpu",  # bit-identical resume is a CPU promise (cuDNN kernels may not be)
    )
    base.update(kw)
    return TrainConfig.from_dict(base)


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_identical(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_run_folder_artifacts(tmp_path):
    result = Trainer(cfg(), tmp_path / "run", progress=False).run()
    out = tmp_path / "run"
    for name in (
        "config.yaml",
        "method.json",
        "metrics.jsonl",
        "profile.txt",
        "profile.json",
        "final.json",
        "train.log",
        "best.safetensors",
        "model.safetensors",
    ):
        assert (out / name).is_file(), name
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {
        "train_loss",
        "train_acc1",
        "train_acc5",
        "val_acc1",
        "val_acc5",
        "lr",
        "images_per_s",
        "wall_time",
    } <= set(rows[0])
    final = json.loads((out / "final.json").read_text())
    assert final["complete"] and final["epochs"] == 2 and final["method"] == "ssc"
    assert final["density"] <= 0.3
    assert final["final_acc1"] == rows[-1]["val_acc1"]
    assert final["steady_epoch_time_s"] == rows[1]["epoch_time_s"]  # the first left out
    assert final["mean_epoch_time_s"] == sum(r["epoch_time_s"] for r in rows) / 2
    assert result.final == final
    assert len(list_checkpoints(out / "checkpoints")) == 2
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return
    assert list((out / "tb").glob("events.out.tfevents.*"))


def test_resume_is_bit_identical_after_crash_and_after_sigterm(tmp_path):
    reference = Trainer(cfg(epochs=3), tmp_path / "ref", progress=False).run().model
    ref = _weights(reference)

    # 1. A crash right after the epoch-1 checkpoint (no save): resume from that epoch boundary.
    def crash(trainer):
        if trainer.global_step == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg(epochs=3), tmp_path / "a", progress=False, callbacks=[crash]).run()
    assert [p.name for p in list_checkpoints(tmp_path / "a" / "checkpoints")][0].startswith(
        "ckpt-e0001-s000000003"
    )
    resumed = Trainer(cfg(epochs=3), tmp_path / "a", resume=True, progress=False).run().model
    _assert_identical(_weights(resumed), ref)

    # 2. SIGTERM in the middle of epoch 2: saved at the next step boundary, then resumed.
    def term(trainer):
        if trainer.global_step == 5:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(TrainingInterrupted) as exc:
        Trainer(cfg(epochs=3), tmp_path / "b", progress=False, callbacks=[term]).run()
    assert exc.value.signum == signal.SIGTERM
    state = load_checkpoint(exc.value.checkpoint)
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (1, 2, 5)
    resumed = Trainer(cfg(epochs=3), tmp_path / "b", resume=True, progress=False).run().model
    _assert_identical(_weights(resumed), ref)
    rows = [json.loads(r) for r in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]  # no duplicated rows after resuming
    ref_rows = [
        json.loads(r) for r in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["val_acc1"] for r in rows] == [r["val_acc1"] for r in ref_rows]


def test_resume_with_pruning_masks_and_truncated_newest_checkpoint(tmp_path, caplog):
    config = cfg(method="snip", density=0.2, epochs=2)
    reference = _weights(Trainer(config, tmp_path / "ref", progress=False).run().model)

    def crash(trainer):
        if trainer.global_step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(
            config,
            tmp_path / "a",
            progress=False,
            callbacks=[crash],
        ).run()
    # A half-written newer checkpoint (as after a crash without atomic rename).
    good = list_checkpoints(tmp_path / "a" / "checkpoints")[0]
    broken = good.with_name("ckpt-e0001-s000000004.pt")
    broken.write_bytes(good.read_bytes()[:200])
    with caplog.at_level("WARNING"):
        model = Trainer(config, tmp_path / "a", resume=True, progress=False).run().model
    assert broken.name in caplog.text
    _assert_identical(_weights(model), reference)
    masks = [v for k, v in model.state_dict().items() if k.endswith("mask")]
    assert masks, "pruning masks are part of the model state"


def test_refuses_non_empty_folder_and_overwrites_runs_only(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="not empty"):
        Trainer(cfg(epochs=1), out, progress=False).run()
    with pytest.raises(RunFolderError, match="does not look like an ssconv run"):
        Trainer(cfg(epochs=1), out, overwrite=True, progress=False).run()
    assert (out / "notes.txt").read_text() == "mine"
    run = tmp_path / "run2"
    Trainer(cfg(epochs=1), run, progress=False).run()
    Trainer(cfg(epochs=1, seed=4), run, overwrite=True, progress=False).run()
    assert "seed: 4" in (run / "config.yaml").read_text()


def test_resume_guard_names_the_differing_keys(tmp_path):
    Trainer(cfg(epochs=1), tmp_path / "run", progress=False).run()
    with pytest.raises(ResumeMismatchError, match=r"lr: saved 0.05 vs now 0.1"):
        Trainer(cfg(epochs=1, lr=0.1), tmp_path / "run", resume=True, progress=False).run()
    # Runtime-only keys may change.
    result = Trainer(cfg(epochs=1, workers=1), tmp_path / "run", resume=True, progress=False).run()
    assert result.final["epochs"] == 1


def test_resume_refuses_epochs_that_change_the_cosine_schedule(tmp_path):
    """Issue 16 item 2: epochs sets the cosine horizon; resuming under another value used to
    end "complete" with a schedule neither config describes (and config.yaml kept the old one)."""
    run = tmp_path / "run"
    Trainer(cfg(epochs=1), run, progress=False).run()
    with pytest.raises(ResumeMismatchError) as exc:
        Trainer(cfg(epochs=2), run, resume=True, progress=False).run()
    text = str(exc.value)
    assert "epochs: saved 1 vs now 2" in text and "cosine" in text
    # The library names its own arguments; the CLI renders them as flags.
    assert "allow_schedule_change=True" in text and "another out" in text
    flags = user_message(exc.value)
    assert "--allow-schedule-change" in flags and "another --out" in flags
    assert "(--epochs 1)" in flags
    assert "epochs: 1" in (run / "config.yaml").read_text()
    # Explicitly allowed: it continues, and config.yaml says what the run now is.
    result = Trainer(
        cfg(epochs=2), run, resume=True, progress=False, allow_schedule_change=True
    ).run()
    assert result.final["epochs"] == 2 and result.final["complete"]
    assert "epochs: 2" in (run / "config.yaml").read_text()


def test_more_epochs_continue_a_constant_schedule_exactly(tmp_path):
    """Where epochs does not shape the schedule (constant, multistep) more epochs continue the
    run bit for bit as an uninterrupted run of the new length; fewer than trained are refused."""
    ref = Trainer(cfg(epochs=2, schedule="constant"), tmp_path / "ref", progress=False).run()
    run = tmp_path / "run"
    Trainer(cfg(epochs=1, schedule="constant"), run, progress=False).run()
    result = Trainer(cfg(epochs=2, schedule="constant"), run, resume=True, progress=False).run()
    _assert_identical(_weights(result.model), _weights(ref.model))
    assert "epochs: 2" in (run / "config.yaml").read_text()
    with pytest.raises(ResumeMismatchError, match="already trained into epoch 2"):
        Trainer(cfg(epochs=1, schedule="constant"), run, resume=True, progress=False).run()


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    def poison(trainer):
        if trainer.global_step == 4:
            with torch.no_grad():
                next(trainer.model.parameters()).fill_(float("nan"))

    with pytest.raises(NonFiniteLossError, match="loss became nan"):
        Trainer(cfg(epochs=3), tmp_path / "run", progress=False, callbacks=[poison]).run()
    newest = list_checkpoints(tmp_path / "run" / "checkpoints")[0]
    state = load_checkpoint(newest)
    assert state["global_step"] == 3
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


@pytest.mark.parametrize(
    "method", ["dense", "ssc", "random", "erk", "magnitude", "snip", "grasp", "synflow"]
)
def test_every_method_trains_and_loads_back(tmp_path, method):
    config = cfg(method=method, density=0.2, epochs=1, max_steps=2, prune_iterations=5)
    result = Trainer(config, tmp_path / method, progress=False).run()
    final = result.final
    if method == "dense":
        assert final["density"] == 1.0
    else:
        assert final["density"] <= 0.2 + 1e-9
    model, loaded_cfg, state = load_trained_model(tmp_path / method)
    assert loaded_cfg == config
    _assert_identical(_weights(model), _weights(result.model))


def test_pruned_budget_matches_ssc_exactly(tmp_path):
    ssc = Trainer(cfg(epochs=1, max_steps=1), tmp_path / "ssc", progress=False).run().final
    snip = (
        Trainer(cfg(method="snip", epochs=1, max_steps=1), tmp_path / "snip", progress=False)
        .run()
        .final
    )
    assert snip["weight_params"] == ssc["weight_params"]


def test_amp_channels_last_adamw_warmup_multistep(tmp_path):
    config = cfg(
        epochs=2,
        amp=True,
        channels_last=True,
        optimizer="adamw",
        lr=1e-3,
        warmup_epochs=0.5,
        schedule="multistep",
        milestones=[1],
        label_smoothing=0.1,
        log_every=2,
    )
    result = Trainer(config, tmp_path / "run", progress=False).run()
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {r["kind"] for r in rows} == {"step", "epoch"}
    assert result.final["complete"]


# ----------------------------------------------------------------- issue 16: fault tolerance
def _dropout_cfg(**kw) -> TrainConfig:
    base = dict(
        model="mobilenet_v2",
        model_kwargs={"width_mult": 0.25},
        dataset="synthetic:3:16:16:4:64:16",
        method="dense",
        density=None,
        epochs=2,
        batch_size=8,
        max_steps=4,
        checkpoint_steps=2,
        latency_batch=0,
        keep_checkpoints=10,
        workers=0,
        lr=0.05,
        eval_batch_size=16,
        seed=3,
        device="cpu",
    )
    base.update(kw)
    return TrainConfig.from_dict(base)


def _same_state(a, b, where="state"):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            if k == "wall_time_s":  # a measurement, not state
                continue
            _same_state(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


TIMING = {"images_per_s", "epoch_time_s", "wall_time"}


def _metric_rows(out):
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


#: Registered models with a stochastic layer (Dropout, stochastic depth): resume must be exact.
STOCHASTIC_MODELS = {"mobilenet_v2": {"width_mult": 0.25}}


def test_every_registered_stochastic_model_is_in_the_resume_test():
    from ssconv.models import create_model, list_models

    stochastic = set()
    for name in list_models():
        model = create_model(name, num_classes=4)
        if any(
            isinstance(m, torch.nn.modules.dropout._DropoutNd)
            or "StochasticDepth" in type(m).__name__
            for m in model.modules()
        ):
            stochastic.add(name)
    assert stochastic == set(STOCHASTIC_MODELS)


@pytest.mark.parametrize("model", sorted(STOCHASTIC_MODELS))
@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("crash_at", [3, 5], ids=["mid-epoch", "epoch-boundary"])
def test_resume_is_bit_identical_with_dropout_including_rng_state(
    tmp_path, model, workers, crash_at
):
    """Issue 16 item 1: a new DataLoader iterator drew its base seed from the global RNG after
    the saved state was restored, so Dropout masks (and the saved RNG state) differed."""
    config = _dropout_cfg(model=model, model_kwargs=STOCHASTIC_MODELS[model], workers=workers)
    ref = Trainer(config, tmp_path / "ref", progress=False).run()

    def crash(trainer):  # a crash after step 3 (or 5), before any checkpoint of that step
        if trainer.global_step == crash_at:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(config, tmp_path / "a", progress=False, callbacks=[crash]).run()
    newest = list_checkpoints(tmp_path / "a" / "checkpoints")[0].name
    # Step 2 of epoch 1 (mid-epoch), or the end of epoch 1 (boundary).
    assert newest == ("ckpt-e0000-s000000002.pt" if crash_at == 3 else "ckpt-e0001-s000000004.pt")
    resumed = Trainer(config, tmp_path / "a", resume=True, progress=False).run()
    _assert_identical(_weights(resumed.model), _weights(ref.model))
    for a in list_checkpoints(tmp_path / "ref" / "checkpoints"):
        b = tmp_path / "a" / "checkpoints" / a.name
        if b.is_file():  # every checkpoint both runs wrote: weights, optimizer, RNG states
            _same_state(load_checkpoint(b), load_checkpoint(a), a.name)
    last = "ckpt-e0002-s000000008.pt"
    assert (tmp_path / "a" / "checkpoints" / last).is_file()
    assert torch.equal(
        load_checkpoint(tmp_path / "a" / "checkpoints" / last)["rng"]["torch"],
        load_checkpoint(tmp_path / "ref" / "checkpoints" / last)["rng"]["torch"],
    )
    assert _metric_rows(tmp_path / "a") == _metric_rows(tmp_path / "ref")


def test_non_finite_gradients_are_caught_before_the_step(tmp_path):
    """Issue 16 item 3: the loss was finite, the gradients inf; the update made the weights
    nan and that checkpoint rotated the good ones away."""
    config = cfg(method="dense", density=None, epochs=2, checkpoint_steps=1, keep_checkpoints=1)
    handles = []

    def poison(trainer):  # after step 4: step 5's gradients of one weight become inf
        if trainer.global_step == 4 and not handles:
            p = next(trainer.model.parameters())
            handles.append(p.register_hook(lambda g: g * float("inf")))

    with pytest.raises(NonFiniteLossError, match="gradients became non-finite") as exc:
        Trainer(config, tmp_path / "run", progress=False, callbacks=[poison]).run()
    assert "update was not applied" in str(exc.value)
    kept = list_checkpoints(tmp_path / "run" / "checkpoints")
    assert [p.name for p in kept] == ["ckpt-e0001-s000000004.pt"]
    model, _, _ = load_trained_model(tmp_path / "run")
    from ssconv.data import build_dataset
    from ssconv.train.trainer import evaluate_model

    test_set, _ = build_dataset(DATA, train=False, augment=False)
    assert math.isfinite(evaluate_model(model, test_set)["loss"])


def test_no_checkpoint_of_non_finite_weights_is_written(tmp_path):
    """Weights poisoned after the last step of epoch 1: the epoch checkpoint used to be
    written (nan weights) before the next step's loss noticed."""

    def poison(trainer):
        if trainer.global_step == 3:
            with torch.no_grad():
                next(trainer.model.parameters()).fill_(float("nan"))

    with pytest.raises(NonFiniteLossError, match="validation loss became nan"):
        Trainer(cfg(epochs=2), tmp_path / "run", progress=False, callbacks=[poison]).run()
    assert not list_checkpoints(tmp_path / "run" / "checkpoints")
    with pytest.raises(NonFiniteLossError, match="weights or buffers became non-finite"):
        Trainer(
            cfg(epochs=2, checkpoint_steps=1),
            tmp_path / "run2",
            progress=False,
            callbacks=[poison],
        ).run()
    newest = list_checkpoints(tmp_path / "run2" / "checkpoints")[0]
    assert newest.name == "ckpt-e0000-s000000002.pt"


def test_disk_full_while_writing_a_checkpoint_names_the_file_and_errno(tmp_path, monkeypatch):
    """Issue 16 item 4: torch's zip writer turned ENOSPC into an obscure RuntimeError."""
    import errno

    from ssconv.train import checkpoint
    from ssconv.train.trainer import OutputError

    config = cfg(epochs=2)
    ref = _weights(Trainer(config, tmp_path / "ref", progress=False).run().model)
    real = checkpoint._Sink._write
    calls = []

    def full(self, data):
        calls.append(1)
        full_now = len(list_checkpoints(tmp_path / "run" / "checkpoints")) >= 1 and len(calls) > 3
        if full_now and self.name.endswith(".pt"):  # best.safetensors of epoch 2 still fits
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(checkpoint._Sink, "_write", full)
    with pytest.raises(OutputError) as exc:
        Trainer(config, tmp_path / "run", progress=False).run()
    text = str(exc.value)
    assert "ENOSPC" in text and "ckpt-e0002-s000000006.pt" in text and "free some space" in text
    assert "continue with resume=True" in text
    assert "continue with --resume" in user_message(exc.value)
    monkeypatch.setattr(checkpoint._Sink, "_write", real)
    kept = list_checkpoints(tmp_path / "run" / "checkpoints")
    assert [p.name for p in kept] == ["ckpt-e0001-s000000003.pt"]
    assert not list((tmp_path / "run" / "checkpoints").glob(".*.tmp"))
    model = Trainer(config, tmp_path / "run", resume=True, progress=False).run().model
    _assert_identical(_weights(model), ref)  # nothing lost


@pytest.mark.parametrize("name", ["EROFS", "EACCES"])
def test_read_only_outputs_name_the_file_and_keep_the_old_one(tmp_path, monkeypatch, name):
    """final.json is written atomically: a failed write leaves the previous one intact."""
    import errno

    from ssconv.train import checkpoint
    from ssconv.train.trainer import OutputError

    run = tmp_path / "run"
    Trainer(cfg(epochs=1), run, progress=False).run()
    before = (run / "final.json").read_text()
    real = checkpoint._Sink._write

    def refuse(self, data):
        if self.name == "final.json":
            real(self, data[: len(data) // 2])
            raise OSError(getattr(errno, name), os.strerror(getattr(errno, name)))
        return real(self, data)

    monkeypatch.setattr(checkpoint._Sink, "_write", refuse)
    with pytest.raises(OutputError, match=f"final.json'.*{name}"):
        Trainer(cfg(epochs=1), run, resume=True, progress=False).run()
    assert (run / "final.json").read_text() == before


def _killed_inside(monkeypatch, checkpoint_name):
    """Make the write of one checkpoint fail as a kill -9 inside it would (nothing written)."""
    from ssconv.train import trainer as trainer_module

    real = trainer_module.save_checkpoint

    def save(state, folder, name, **kw):
        if name == checkpoint_name:
            raise KeyboardInterrupt
        return real(state, folder, name, **kw)

    monkeypatch.setattr(trainer_module, "save_checkpoint", save)
    return lambda: monkeypatch.setattr(trainer_module, "save_checkpoint", real)


def test_metrics_rows_are_never_duplicated_or_lost(tmp_path, monkeypatch):
    """Issue 16 item 6: a kill between the epoch's metrics row and its checkpoint (whose
    previous checkpoint is of the same step) duplicated the row after resume."""
    config = cfg(epochs=2, checkpoint_steps=3, log_every=1)
    Trainer(config, tmp_path / "ref", progress=False).run()
    undo = _killed_inside(monkeypatch, "ckpt-e0001-s000000003.pt")
    with pytest.raises(KeyboardInterrupt):
        Trainer(config, tmp_path / "a", progress=False).run()
    undo()
    assert [p.name for p in list_checkpoints(tmp_path / "a" / "checkpoints")] == [
        "ckpt-e0000-s000000003.pt"
    ]
    assert any(r["kind"] == "epoch" for r in _metric_rows(tmp_path / "a"))
    Trainer(config, tmp_path / "a", resume=True, progress=False).run()
    assert _metric_rows(tmp_path / "a") == _metric_rows(tmp_path / "ref")


def test_a_torn_last_metrics_line_is_tolerated(tmp_path, monkeypatch):
    """Issue 16 item 7: a kill during the append left a torn last line: JSONDecodeError on
    resume (exit 1)."""
    config = cfg(epochs=2, log_every=1)
    Trainer(config, tmp_path / "ref", progress=False).run()
    undo = _killed_inside(monkeypatch, "ckpt-e0002-s000000006.pt")
    with pytest.raises(KeyboardInterrupt):
        Trainer(config, tmp_path / "a", progress=False).run()
    undo()
    with open(tmp_path / "a" / "metrics.jsonl", "a") as fh:
        fh.write('{"kind": "step", "epoch": 2, "st')  # torn by a kill during the append
    Trainer(config, tmp_path / "a", resume=True, progress=False).run()
    assert _metric_rows(tmp_path / "a") == _metric_rows(tmp_path / "ref")


def test_failed_start_leaves_nothing_that_blocks_a_rerun(tmp_path):
    """Issue 16 item 5: a bad dataset left train.log, so the rerun said "not empty" and
    --overwrite said "no config.yaml"."""
    from ssconv.data import DatasetError

    out = tmp_path / "run"
    with pytest.raises(DatasetError):
        Trainer(cfg(dataset="cifar10", data_root=str(tmp_path / "none")), out, progress=False).run()
    assert not out.exists()
    out.mkdir()
    with pytest.raises(DatasetError):
        Trainer(cfg(dataset="cifar10", data_root=str(tmp_path / "none")), out, progress=False).run()
    assert out.is_dir() and not list(out.iterdir())
    # What an older version (or a kill during set-up) left: a lone train.log.
    (out / "train.log").write_text("old\n")
    Trainer(cfg(epochs=1), out, progress=False).run()
    (tmp_path / "r2").mkdir()
    (tmp_path / "r2" / "train.log").write_text("old\n")
    Trainer(cfg(epochs=1), tmp_path / "r2", overwrite=True, progress=False).run()


def test_resume_with_nothing_to_resume_is_refused(tmp_path):
    """Issue 16 item 10: --resume on a missing or empty folder silently started a new run."""
    with pytest.raises(RunFolderError, match="nothing to resume.*does not exist.*drop resume=True"):
        Trainer(cfg(epochs=1), tmp_path / "missing", resume=True, progress=False).run()
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunFolderError, match="nothing to resume.*is empty"):
        Trainer(cfg(epochs=1), tmp_path / "empty", resume=True, progress=False).run()
    assert not (tmp_path / "missing").exists() and not list((tmp_path / "empty").iterdir())
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="holds no ssconv run"):
        Trainer(cfg(epochs=1), tmp_path / "notes", resume=True, progress=False).run()
    # A sweep's "auto": start when there is nothing.
    result = Trainer(cfg(epochs=1), tmp_path / "empty", resume="auto", progress=False).run()
    assert result.final["complete"]


def test_out_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunFolderError, match="is a file, not a folder"):
        Trainer(cfg(epochs=1), tmp_path / "file", progress=False).run()
    assert (tmp_path / "file").read_text() == "x"


def test_wall_time_counts_every_process_of_a_resumed_run(tmp_path):
    """final.json's wall_time_s (the sweep's ETA and the grids' cost figures) covered only the
    last process of a resumed run (a cell paused at epoch 2 of 3 reported a minute)."""

    def slow_then_term(trainer):
        time.sleep(0.4)  # the first process trains for at least 4 x 0.4 s
        if trainer.global_step == 4:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(TrainingInterrupted) as exc:
        Trainer(cfg(epochs=2), tmp_path / "run", progress=False, callbacks=[slow_then_term]).run()
    before = load_checkpoint(exc.value.checkpoint)["wall_time_s"]
    assert before >= 1.6
    final = Trainer(cfg(epochs=2), tmp_path / "run", resume=True, progress=False).run().final
    assert final["wall_time_s"] >= before


def _train_with_and_without(tmp_path, option: str, **kw):
    """Three SGD steps (``kw``) without and with the runtime option ``option``; returns the
    two trainers, after checking that both finished and that the option is part of the
    recipe (another digest in reports)."""
    plain = Trainer(cfg(**kw), tmp_path / "plain", progress=False)
    other = Trainer(cfg(**kw, **{option: True}), tmp_path / option, progress=False)
    assert plain.run().final["complete"] and other.run().final["complete"]
    assert other.cfg.digest() != plain.cfg.digest()
    return plain, other


def _assert_same_weights(a, b, rtol: float, atol: float) -> None:
    from ssconv.kernels import fused

    if not fused.available():  # without the kernel both ran PyTorch's code
        return
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        if sa[k].is_floating_point():
            assert torch.allclose(sa[k], sb[k], rtol=rtol, atol=atol), k


@pytest.mark.parametrize("method", ["dense", "ssc"])
def test_fast_batchnorm_trains_like_pytorch_batchnorm(tmp_path, method):
    from ssconv.layers.batchnorm import BatchNorm2d

    kw = {"method": method, "epochs": 1, "max_steps": 3}
    if method == "dense":
        kw["density"] = None
    plain, fast = _train_with_and_without(tmp_path, "fast_batchnorm", **kw)
    swapped = [m for m in fast.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert swapped and all(type(m) is BatchNorm2d for m in swapped)
    # Three SGD steps on the same data: the same weights and statistics, to float32 rounding
    # grown over the steps.
    _assert_same_weights(plain, fast, rtol=1e-3, atol=1e-4)


def test_fast_pooling_trains_like_pytorch_pooling(tmp_path):
    from ssconv.layers.pooling import MaxPool2d

    kw = {"model": "vgg11_bn", "model_kwargs": {"width_mult": 0.125}, "epochs": 1}
    plain, fast = _train_with_and_without(tmp_path, "fast_pooling", **kw)
    pools = [m for m in fast.model.modules() if isinstance(m, torch.nn.MaxPool2d)]
    assert len(pools) == 4 and all(type(m) is MaxPool2d for m in pools)
    # The pools' values and gradients equal PyTorch's exactly, so three SGD steps give the
    # same weights to the rounding of the other layers' kernels.
    _assert_same_weights(plain, fast, rtol=1e-5, atol=1e-6)


def test_channels_last_chains_train_like_plain_layouts(tmp_path):
    from ssconv.layers.ssconv import SSConv2d

    # A quarter-width VGG-11: 128-channel layers on 4 x 4 and 2 x 2 maps, which train on the
    # channel-lane kernels, and chain.
    kw = {"model": "vgg11_bn", "model_kwargs": {"width_mult": 0.25}, "epochs": 1, "max_steps": 3}
    plain, chained = _train_with_and_without(tmp_path, "channels_last_chains", **kw)
    layouts = [m.output_layout for m in chained.model.modules() if isinstance(m, SSConv2d)]
    assert "channels_last" in layouts and layouts[-1] == "nchw"
    assert not any(m.output_layout for m in plain.model.modules() if isinstance(m, SSConv2d))
    # Another summation order in the chains' BatchNorm (PyTorch's, channels_last).
    _assert_same_weights(plain, chained, rtol=1e-3, atol=1e-4)
