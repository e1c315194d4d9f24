"""User errors exit 2 with a message naming the bad value, never a traceback; every option's
help shows its default."""

from __future__ import annotations

import argparse

import pytest

from ssconv.cli.main import build_parser, main


@pytest.fixture
def paths(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    a_dir = tmp_path / "a_dir"
    a_dir.mkdir()
    config = tmp_path / "bad.yaml"
    config.write_text("model: resnet9000\n")
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"out: {tmp_path}/sw\nbase: {{model: resnet9000}}\ngrid: {{seed: [0, 1]}}\n")
    return {
        "file": str(a_file),
        "dir": str(a_dir),
        "tmp": str(tmp_path),
        "config": str(config),
        "sweep": str(sweep),
    }


# (argv with {placeholders}, the text the message must contain)
CASES = [
    # an unknown model in every command that takes one
    (["summary", "resnet9000"], "resnet9000"),
    (["pattern", "resnet9000", "--layer", "conv1", "-o", "{tmp}/m.png"], "resnet9000"),
    (["prune", "resnet9000", "--method", "random", "--density", "0.1"], "resnet9000"),
    (["train", "--model", "resnet9000", "--out", "{tmp}/run"], "--model 'resnet9000'"),
    (["train", "--config", "{config}", "--out", "{tmp}/run"], "resnet9000"),
    (["bench", "resnet9000"], "resnet9000"),
    (["export", "resnet9000", "-o", "{tmp}/m.onnx"], "resnet9000"),
    (["demo", "--model", "resnet9000", "--out", "{tmp}/demo"], "--model 'resnet9000'"),
    (["models", "resnet9000"], "resnet9000"),
    (["sweep", "{sweep}"], "model 'resnet9000'"),
    # bad output paths and suffixes
    (["pattern", "cifar_resnet20", "--layer", "conv1", "-o", "{tmp}/m.txt"], "'.txt'"),
    (["pattern", "cifar_resnet20", "--layer", "conv1", "-o", "{dir}"], "is a folder"),
    (["pattern", "cifar_resnet20", "--layer", "conv1", "-o", "{file}/m.png"], "is a file"),
    (["train", "--out", "{file}"], "is a file"),
    (["train", "--out", "{file}/run"], "is a file"),
    (["demo", "--out", "{file}"], "is a file"),
    (["report", "{tmp}", "-o", "{file}"], "is a file"),
    (["export", "cifar_resnet20", "-o", "{tmp}/m.txt"], "'.txt'"),
    (["export", "cifar_resnet20", "-o", "{dir}"], "is a folder"),
    (["export", "cifar_resnet20", "--format", "torchscript", "-o", "{tmp}/m.onnx"], ".pt"),
    (["bench", "cifar_resnet20", "-o", "{tmp}/b.txt"], "'.txt'"),
    (["bench", "cifar_resnet20", "--variants", "sparse"], "--variants: unknown variant 'sparse'"),
    (["bench", "cifar_resnet20", "--variants", "pruned:erk"], "SSC variants only"),
    (["eval", "{tmp}/no_such_run"], "no_such_run"),
    (["report", "{tmp}/no_such_runs"], "no_such_runs"),
    # YAML's flow mapping without the space after the colon: one key 'width:4', no value
    (["train", "--set", "model_kwargs={{width:4}}", "--out", "{tmp}/run"], "{{width: 4}}"),
]


@pytest.mark.parametrize("argv, expected", CASES, ids=lambda v: " ".join(v)[:50])
def test_user_errors_exit_2_naming_the_value(argv, expected, paths, capsys):
    argv = [a.format(**paths) for a in argv]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and "bug in ssconv" not in err
    assert expected.format(**paths) in err, err


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", "--out", "x", "--threads", "0"], "--threads"),
        (["eval", "x", "--threads", "two"], "--threads"),
        (["bench", "cifar_resnet20", "--threads", "-1"], "--threads"),
        (["bench", "cifar_resnet20", "--repeats", "0"], "--repeats"),
        (["export", "cifar_resnet20", "-o", "m.onnx", "--density", "2"], "--density"),
    ],
)
def test_bad_option_values_are_usage_errors(argv, expected, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert expected in capsys.readouterr().err


def test_no_folder_left_by_a_refused_train(paths):
    assert main(["train", "--model", "resnet9000", "--out", paths["tmp"] + "/run"]) == 2
    assert not (__import__("pathlib").Path(paths["tmp"]) / "run").exists()


def test_models_matches_substrings(capsys):
    assert main(["models", "resnet"]) == 0
    out = capsys.readouterr().out
    assert "cifar_resnet20" in out and "resnet50" in out and "vgg19_bn" not in out
    assert main(["models", "vgg1?_bn"]) == 0  # shell patterns still work
    assert "vgg11_bn" in capsys.readouterr().out


def _subparsers():
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_every_option_has_help_showing_its_default():
    missing = []
    for name, sub in _subparsers().items():
        formatter = sub._get_formatter()
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            where = f"{name} {action.option_strings or action.dest}"
            if not action.help:
                missing.append(f"{where}: no help")
                continue
            if not action.option_strings or action.nargs == 0 or action.required:
                continue  # positional, flag (off unless given) or required option
            text = formatter._get_help_string(action) % {"default": action.default}
            if "default" not in text and "required" not in text:
                missing.append(f"{where}: help does not state the default")
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("command", ["train", "eval", "bench"])
def test_threads_option(command):
    sub = _subparsers()[command]
    assert "--threads" in sub.format_help() and "default: $OMP_NUM_THREADS" in sub.format_help()


def test_default_threads_leave_busy_cores_alone(monkeypatch):
    """Without --threads or $OMP_NUM_THREADS: the cores minus the 1-minute load, at least 1
    (2 threads on a busy 2-core machine trained 1.45x slower than 1)."""
    import os

    from ssconv.cli.common import default_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    for load, expected in ((0.1, 2), (0.7, 1), (1.6, 1), (5.0, 1)):
        monkeypatch.setattr(os, "getloadavg", lambda load=load: (load, 0.0, 0.0))
        assert default_threads()[0] == expected
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert default_threads()[1] == "$OMP_NUM_THREADS"
