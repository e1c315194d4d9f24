"""A run folder's weights-only files: ``best.safetensors`` (the epoch with the best validation
top-1) and ``model.safetensors`` (final), loaded back by ``ssconv.load_run(which=...)``, and a
best that survives crashes and resumes."""

import json

import pytest
import torch

import ssconv
from ssconv.train import checkpoint
from ssconv.train.checkpoint import (
    BEST_WEIGHTS,
    FINAL_WEIGHTS,
    CheckpointError,
    list_checkpoints,
    load_checkpoint,
    load_weights,
    save_weights,
)
from ssconv.train.config import TrainConfig
from ssconv.train.trainer import Trainer, load_trained_model

# Validation top-1 after epochs 1, 2, 3, 4: the best is epoch 2, not the last one; epoch 4
# ties it (a tie keeps the earlier epoch).
SCRIPTED = [0.25, 0.75, 0.5, 0.75]


def cfg(**kw) -> TrainConfig:
    base = dict(
        model="cifar_resnet20",
        model_kwargs={"width": 4},
        dataset="synthetic:3:16:16:4:48:16",
        method="ssc",
        density=0.3,
        epochs=4,
        batch_size=16,
        max_steps=2,
        workers=0,
        lr=0.05,
        eval_batch_size=16,
        seed=3,
        device="cpu",
        keep_checkpoints=10,  # every epoch's checkpoint stays, to compare the best with
        latency_batch=0,
    )
    base.update(kw)
    return TrainConfig.from_dict(base)


@pytest.fixture
def scripted(monkeypatch):
    """Trainer.evaluate reports SCRIPTED[epoch] as top-1 (the loss stays the real one)."""
    real = Trainer.evaluate

    def evaluate(self, dataset):
        out = real(self, dataset)
        return {**out, "acc1": SCRIPTED[self.epoch]}

    monkeypatch.setattr(Trainer, "evaluate", evaluate)


def _epoch_weights(out, epoch):
    (path,) = [
        p for p in list_checkpoints(out / "checkpoints") if p.name.startswith(f"ckpt-e{epoch:04d}")
    ]
    return load_checkpoint(path)["model"]


def _equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("method", ["ssc", "snip"])
def test_best_and_final_weights_load_back(tmp_path, scripted, method):
    out = tmp_path / "run"
    result = Trainer(cfg(method=method, density=0.2), out, progress=False).run()
    final = json.loads((out / "final.json").read_text())
    assert final["best_acc1"] == 0.75 and final["best_epoch"] == 2

    best, meta = load_weights(out / BEST_WEIGHTS)
    assert meta["epoch"] == meta["best_epoch"] == 2 and meta["best_acc1"] == 0.75
    _equal(best, _epoch_weights(out, 2))
    weights, meta = load_weights(out / FINAL_WEIGHTS)
    assert meta["epoch"] == 4 and meta["best_epoch"] == 2
    _equal(weights, result.model.state_dict())
    if method == "snip":
        assert any(k.endswith(".mask") for k in weights), "masks are weights too"

    model, config = ssconv.load_run(out, which="best")
    assert config == cfg(method=method, density=0.2) and not model.training
    _equal(model.state_dict(), _epoch_weights(out, 2))
    model, _ = ssconv.load_run(out, which="final")
    _equal(model.state_dict(), result.model.state_dict())
    latest, _ = ssconv.load_run(out)  # the newest checkpoint: the final weights too
    _equal(latest.state_dict(), result.model.state_dict())
    # A weights file on its own (as `ssconv eval` / `export` take it): config and epoch come
    # from its metadata.
    model, config, state = load_trained_model(out / BEST_WEIGHTS)
    assert state["epoch"] == 2 and state["data_info"]["input_size"] == [3, 16, 16]
    _equal(model.state_dict(), _epoch_weights(out, 2))


def test_resume_does_not_lose_the_best(tmp_path, scripted, monkeypatch):
    ref = tmp_path / "ref"
    Trainer(cfg(), ref, progress=False).run()
    ref_best, _ = load_weights(ref / BEST_WEIGHTS)

    # 1. A crash in epoch 3 (after the best epoch): the resumed run keeps epoch 2's weights.
    def crash(trainer):
        if trainer.global_step == 5:
            raise KeyboardInterrupt

    out = tmp_path / "a"
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg(), out, progress=False, callbacks=[crash]).run()
    assert not (out / FINAL_WEIGHTS).exists()
    _equal(load_weights(out / BEST_WEIGHTS)[0], ref_best)
    Trainer(cfg(), out, resume=True, progress=False).run()
    _equal(load_weights(out / BEST_WEIGHTS)[0], ref_best)
    assert load_weights(out / BEST_WEIGHTS)[1]["epoch"] == 2

    # 2. A crash inside epoch 2's checkpoint write, after best.safetensors was written: the
    #    resume retrains epoch 2 (bit for bit) and writes the same best again.
    real = checkpoint.save_checkpoint

    def die_in_epoch_2(state, folder, name, **kw):
        if name.startswith("ckpt-e0002"):
            raise KeyboardInterrupt
        return real(state, folder, name, **kw)

    out = tmp_path / "b"
    monkeypatch.setattr("ssconv.train.trainer.save_checkpoint", die_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg(), out, progress=False).run()
    monkeypatch.setattr("ssconv.train.trainer.save_checkpoint", real)
    _equal(load_weights(out / BEST_WEIGHTS)[0], ref_best)
    Trainer(cfg(), out, resume=True, progress=False).run()
    _equal(load_weights(out / BEST_WEIGHTS)[0], ref_best)
    _equal(load_weights(out / FINAL_WEIGHTS)[0], load_weights(ref / FINAL_WEIGHTS)[0])
    assert json.loads((out / "final.json").read_text())["best_epoch"] == 2


def test_load_run_which_errors(tmp_path):
    with pytest.raises(ValueError, match="which: expected one of latest, best, final"):
        ssconv.load_run(tmp_path, which="newest")
    with pytest.raises(CheckpointError, match="has no best.safetensors"):
        ssconv.load_run(tmp_path, which="best")
    with pytest.raises(ValueError, match="needs a run folder"):
        ssconv.load_run(tmp_path / "x.pt", which="final")


def test_save_weights_is_atomic_and_checked(tmp_path):
    a = torch.arange(6.0)
    state = {"a": a, "view": a[:3], "h": torch.ones(2, dtype=torch.bfloat16)}  # shared memory
    path = save_weights(state, tmp_path / "w.safetensors", metadata={"epoch": 3, "x": [1, 2]})
    loaded, meta = load_weights(path)
    _equal(loaded, state)
    assert meta == {"epoch": 3, "x": [1, 2]}
    assert not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(TypeError, match="not tensors"):
        save_weights({"a": a, "n": 3}, tmp_path / "bad.safetensors")

    truncated = tmp_path / "t.safetensors"
    truncated.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="cannot be loaded"):
        load_weights(truncated)
    from safetensors.torch import save_file

    save_file({"a": a}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CheckpointError, match="not an ssconv weights file"):
        load_weights(tmp_path / "plain.safetensors")
