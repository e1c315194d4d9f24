"""End-to-end training: artifacts, exact resume, failures, signals, every method."""

import json
import os
import signal

import pytest
import torch

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
    # Runtime-only keys may change (and more epochs continue the run).
    result = Trainer(cfg(epochs=2, workers=1), tmp_path / "run", resume=True, progress=False).run()
    assert result.final["epochs"] == 2


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
