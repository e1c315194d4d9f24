import os
from pathlib import Path

import pytest
import torch

from ssconv.train.checkpoint import (
    CheckpointError,
    checkpoint_name,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from ssconv.train.config import ConfigError, TrainConfig, load_config


# ------------------------------------------------------------------------------ config
def test_defaults_are_valid_and_round_trip():
    cfg = TrainConfig()
    cfg.check()
    again = TrainConfig.from_dict(cfg.to_dict())
    assert again == cfg and again.digest() == cfg.digest()


def test_yaml_and_toml_files_with_overrides(tmp_path):
    yml = tmp_path / "c.yaml"
    yml.write_text(
        "model: vgg11_bn\nepochs: 3\nlr: 0.05\nmilestones: [1, 2]\nschedule: multistep\n"
    )
    cfg = load_config(yml, {"epochs": 5})
    assert (cfg.model, cfg.epochs, cfg.lr, cfg.milestones) == ("vgg11_bn", 5, 0.05, [1, 2])
    toml = tmp_path / "c.toml"
    toml.write_text('model = "cifar_resnet32"\nbatch_size = 64\nssc_period = 4\n')
    cfg = load_config(toml)
    assert cfg.batch_size == 64 and cfg.ssc_period == 4


@pytest.mark.parametrize(
    "data, message",
    [
        ({"epoch": 3}, "unknown key 'epoch'; did you mean 'epochs'?"),
        ({"epochs": "three"}, "epochs: expected an integer"),
        ({"epochs": 0}, "epochs: must be >= 1"),
        ({"density": 0.0}, "density: must be > 0.0"),
        ({"density": 1.5}, "density: must be <= 1.0"),
        ({"optimizer": "adam"}, "did you mean 'adamw'?"),
        ({"amp": "yes"}, "amp: expected true or false"),
        ({"method": "snip", "density": None}, "needs a density"),
        ({"schedule": "multistep"}, "needs milestones"),
        ({"keep": ["stem", "head"]}, "keep: unknown rule"),
        ({"device": "tpu"}, "device: expected auto, cpu, cuda"),
        ({"ssc_pointwise": 1}, "expected true, false or auto"),
        ({"compile_mode": "fast"}, "compile_mode: 'fast' is not one of"),
    ],
)
def test_strict_validation_names_the_key(data, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("?", r"\?")):
        TrainConfig.from_dict(data)


def test_file_errors_name_the_file_and_overrides_the_command_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 2\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown key 'learning_rate'"):
        load_config(bad)
    with pytest.raises(ConfigError, match="overrides: batch_size"):
        load_config(None, {"batch_size": -1})
    with pytest.raises(ConfigError, match="command line: batch_size"):  # as the CLI names them
        load_config(None, {"batch_size": -1}, overrides_source="command line")
    with pytest.raises(ConfigError, match="config file .*missing.yaml' does not exist"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("epochs: [1,\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(broken)


# -------------------------------------------------------------------------- checkpoints
def _state(v: float) -> dict:
    return {"model": {"w": torch.full((3,), v)}, "epoch": int(v)}


def test_atomic_save_rotation_and_newest_first(tmp_path):
    for step in (1, 2, 3):
        save_checkpoint(_state(step), tmp_path, checkpoint_name(step, step * 10), keep=2)
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == [checkpoint_name(3, 30), checkpoint_name(2, 20)]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    path, state = latest_checkpoint(tmp_path)
    assert path.name == names[0] and state["epoch"] == 3 and state["format_version"] == 1


def test_truncated_newest_is_skipped_and_named(tmp_path, caplog):
    save_checkpoint(_state(1), tmp_path, checkpoint_name(1, 10))
    good = save_checkpoint(_state(2), tmp_path, checkpoint_name(2, 20))
    newest = tmp_path / checkpoint_name(3, 30)
    newest.write_bytes(good.read_bytes()[:100])  # a crash mid-write without atomic rename
    with caplog.at_level("WARNING"):
        path, state = latest_checkpoint(tmp_path)
    assert path == good and state["epoch"] == 2
    assert newest.name in caplog.text


def test_failed_save_keeps_previous_checkpoints(tmp_path, monkeypatch):
    first = save_checkpoint(_state(1), tmp_path, checkpoint_name(1, 10), keep=1)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(_state(2), tmp_path, checkpoint_name(2, 20), keep=1)
    assert first.exists() and list_checkpoints(tmp_path) == [first]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_loading_is_weights_only_without_fallback(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / checkpoint_name(1, 1)
    torch.save({"format_version": 1, "x": Evil()}, path)
    with pytest.raises(CheckpointError, match="cannot be loaded"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"format_version": 99}, path)
    with pytest.raises(CheckpointError, match="newer than this ssconv"):
        load_checkpoint(path)
    assert latest_checkpoint(Path(tmp_path) / "empty") is None


def test_keys_added_later_keep_old_runs_identity():
    """A config saved before a key existed (no ssc_shuffle, no init_scale) keeps its digest
    and resumes: the key's neutral value reproduces the earlier code."""
    from ssconv.train.config import NEUTRAL, with_neutral_defaults

    assert NEUTRAL == {
        "ssc_shuffle": False,
        "init_scale": "as_built",
        "in_channels": None,
        "skip_bad_images": False,
        "hflip": None,
        "crop_padding": None,
        "pretrained": False,
        "init_checkpoint": None,
        "compile_mode": "default",
        "ssc_prefer": "weights",
        "ssc_point_groups": 1,
        "fast_batchnorm": False,
        "fast_pooling": False,
        "channels_last_chains": False,
    }
    # The data, weights, compile, solver, BatchNorm and pooling keys' defaults are their
    # neutral values: a default run keeps its old digest.
    for key in (
        "in_channels",
        "skip_bad_images",
        "hflip",
        "crop_padding",
        "pretrained",
        "init_checkpoint",
        "compile_mode",
        "ssc_prefer",
        "ssc_point_groups",
        "fast_batchnorm",
        "fast_pooling",
        "channels_last_chains",
    ):
        assert getattr(TrainConfig(), key) == NEUTRAL[key]
    # (ssc_shuffle: false, not the default null, which since 2026-12-02 means "mix" for ssc.)
    new = TrainConfig.from_dict({"method": "ssc", "init_scale": "as_built", "ssc_shuffle": False})
    saved = {k: v for k, v in new.to_dict().items() if k not in NEUTRAL}
    old = TrainConfig.from_dict(with_neutral_defaults(saved))
    assert old.init_scale == "as_built" and old.digest() == new.digest()
    # A value other than the neutral one is part of the identity.
    assert TrainConfig.from_dict({"method": "ssc", "init_scale": "dense"}).digest() != new.digest()


def test_distribution_default_is_the_methods_own_and_hashes_as_resolved():
    """distribution: null is SSC's "auto" (ERK densities below 0.1) and uniform masks matched
    to that SSC's count; the saved config and the digest carry the resolved value, so a run
    of the default hashes like the explicit setting that builds the same model."""

    def cfg(**kw):
        return TrainConfig.from_dict({"density": 0.05, **kw})

    def resolved(**kw):
        return cfg(**kw).to_dict()["distribution"]

    assert TrainConfig().distribution is None
    assert resolved(method="ssc") == "erk"
    assert resolved(method="ssc", density=0.1) == "uniform"
    assert resolved(method="ssc_thin_point") == "erk"
    assert resolved(method="ssc", distribution="auto") == "erk"
    assert resolved(method="group_conv") == "uniform"  # the baseline as usually built
    assert resolved(method="dw_separable") == resolved(method="dense") == "uniform"
    assert resolved(method="random", match_budget=False) == "uniform"
    assert resolved(method="random", density=0.1) == "uniform"
    # Uniform masks at the count of SSC with ERK densities: no single value says that.
    assert resolved(method="random") is None
    assert cfg(method="ssc").digest() == cfg(method="ssc", distribution="erk").digest()
    assert cfg(method="ssc").digest() != cfg(method="ssc", distribution="uniform").digest()
    random = cfg(method="random")
    assert random.digest() != cfg(method="random", distribution="uniform").digest()
    assert TrainConfig.from_dict(random.to_dict()).digest() == random.digest()
    # Equality is over the settings as used: the default equals its resolved value.
    assert cfg(method="ssc") == cfg(method="ssc", distribution="erk")
    assert cfg(method="ssc") != cfg(method="ssc", distribution="uniform")


def test_pruned_default_keeps_uniform_masks_at_the_default_sscs_count():
    from ssconv.conversion.same_budget import ssc_weight_budget
    from ssconv.models import create_model
    from ssconv.train.methods import build_model

    dense = create_model("cifar_resnet20", num_classes=10, in_channels=1)
    erk, uniform = (ssc_weight_budget(dense, 0.08, distribution=d) for d in ("erk", "uniform"))
    assert erk != uniform  # (at 0.08 the two SSC solutions differ in count: 21,392 / 21,440)
    for distribution, count in ((None, erk), ("uniform", uniform)):
        config = TrainConfig.from_dict(
            {"method": "random", "density": 0.08, "distribution": distribution}
        )
        _, info = build_model(config, 10, 1, (1, 28, 28))
        assert info["matched_ssc_params"] == count
        assert info["pruning"]["weight_params"] == count
        assert info["pruning"]["distribution"] == "uniform"
    # "auto" for masks resolves at the density asked, as the saved config says, not at the
    # matched count's (26,800 / 268,048 < 0.1): uniform masks at 0.10.
    config = TrainConfig.from_dict({"method": "random", "density": 0.1, "distribution": "auto"})
    _, info = build_model(config, 10, 1, (1, 28, 28))
    assert info["pruning"]["distribution"] == config.to_dict()["distribution"] == "uniform"


def test_compile_mode_reaches_torch_compile(tmp_path, monkeypatch):
    """compile_mode is handed to torch.compile (the compiler itself is replaced: inductor's
    first compile takes minutes on this machine; a GPU check runs it for real)."""
    from ssconv.train.trainer import Trainer

    modes = []

    def fake_compile(model, mode=None):
        modes.append(mode)
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    base = {
        "dataset": "synthetic:3:16:16:4:48:16",
        "model": "cifar_resnet20",
        "model_kwargs": {"width": 4},
        "epochs": 1,
        "batch_size": 8,
        "max_steps": 1,
        "workers": 0,
        "latency_batch": 0,
        "compile": True,
    }
    for mode, expected in (("default", None), ("reduce-overhead", "reduce-overhead")):
        cfg = TrainConfig.from_dict({**base, "compile_mode": mode})
        Trainer(cfg, tmp_path / mode, progress=False).run()
        assert modes[-1] == expected


def test_toml_configs_on_python_3_10_use_the_tomli_backport(tmp_path, monkeypatch):
    """Python 3.10 has no tomllib: the tomli backport (a dependency there) reads TOML configs;
    without it the error says what to install. Simulated on this Python with a stand-in."""
    import sys
    import types

    import tomllib

    path = tmp_path / "c.toml"
    path.write_text('model = "cifar_resnet20"\nepochs = 4\n')
    monkeypatch.setattr(sys, "version_info", (3, 10, 12, "final", 0))
    monkeypatch.setitem(sys.modules, "tomli", types.SimpleNamespace(loads=tomllib.loads))
    assert load_config(path).epochs == 4
    monkeypatch.setitem(sys.modules, "tomli", None)  # not installed: import raises
    with pytest.raises(ConfigError, match="need tomli: pip install tomli"):
        load_config(path)
