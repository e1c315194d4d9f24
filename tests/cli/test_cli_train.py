"""`ssconv train` / `ssconv eval` from the command line: every dataset kind, exit codes, DDP."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torchvision

from ssconv.cli.main import main
from ssconv.train.checkpoint import list_checkpoints, load_checkpoint
from tests.data import fakes

TINY = [
    "--model",
    "cifar_resnet20",
    "--set",
    "model_kwargs={width: 4}",
    "--epochs",
    "1",
    "--batch-size",
    "4",
    "--max-steps",
    "2",
    "--workers",
    "0",
    "--set",
    "eval_batch_size=8",
]


def train(capsys, out, *extra):
    code = main(["train", "--out", str(out), *TINY, *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def no_md5(monkeypatch):
    monkeypatch.setattr(
        torchvision.datasets.cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath)
    )


def _dataset_args(kind: str, root: Path) -> list[str]:
    if kind == "cifar10":
        fakes.make_cifar10(root)
        return ["--dataset", "cifar10", "--data-root", str(root)]
    if kind == "cifar100":
        fakes.make_cifar100(root)
        return ["--dataset", "cifar100", "--data-root", str(root)]
    if kind == "fashion_mnist":
        fakes.make_fashion(root / "FashionMNIST" / "raw")
        return ["--dataset", "fashion_mnist", "--data-root", str(root)]
    if kind == "tiny_imagenet":
        fakes.make_tiny_imagenet(root)
        return ["--dataset", "tiny_imagenet", "--data-root", str(root), "--set", "image_size=32"]
    if kind == "imagenet":
        for split in ("train", "val"):
            fakes.make_image_tree(root / split, ["n01", "n02"], per_class=3)
        return ["--dataset", "imagenet", "--data-root", str(root), "--set", "image_size=32"]
    if kind == "folder":
        fakes.make_image_tree(root / "train", ["cat", "dog"], per_class=4)
        fakes.make_image_tree(root / "val", ["cat", "dog"], per_class=2)
        return ["--dataset", f"folder:{root}"]
    if kind == "embedded":
        return ["--dataset", "embedded", "--set", "train_subset=16"]
    return ["--dataset", "synthetic:3:16:16:4:32:8"]


@pytest.mark.parametrize(
    "kind",
    [
        "cifar10",
        "cifar100",
        "fashion_mnist",
        "tiny_imagenet",
        "imagenet",
        "folder",
        "embedded",
        "synthetic",
    ],
)
def test_train_and_eval_every_dataset_kind(capsys, tmp_path, no_md5, kind):
    args = _dataset_args(kind, tmp_path / "data")
    code, out, _ = train(capsys, tmp_path / "run", *args, "--method", "ssc", "--density", "0.3")
    assert code == 0, out
    assert "done: ssc cifar_resnet20" in out
    code = main(["eval", str(tmp_path / "run"), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["images"] > 0 and 0.0 <= data["acc1"] <= 1.0
    assert data["profile"]["totals"]["density"] <= 0.3


def test_eval_table_and_errors(capsys, tmp_path):
    code, _, _ = train(capsys, tmp_path / "run", "--dataset", "synthetic:3:16:16:4:32:8")
    assert code == 0
    assert main(["eval", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "top-1" in out and "total (conv+linear)" in out
    assert main(["eval", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_config_file_overrides_and_print_config(capsys, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("model: vgg11_bn\nmodel_kwargs: {width_mult: 0.125}\nepochs: 7\n")
    code = main(
        [
            "train",
            "--config",
            str(config),
            "--out",
            str(tmp_path / "r"),
            "--epochs",
            "2",
            "--set",
            "lr=0.01",
            "--print-config",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "model: vgg11_bn" in out and "epochs: 2" in out and "lr: 0.01" in out
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--set", "epoch=3"], "unknown key 'epoch'; did you mean 'epochs'?"),
        (["--set", "lr=-1"], "command line: lr: must be > 0.0"),
        (["--set", "optimizer=adam"], "did you mean 'adamw'?"),
        (["--dataset", "cifar11"], "did you mean"),
        (["--dataset", "cifar10", "--data-root", "/nonexistent"], "cifar-10-batches-py"),
        (["--set", "nonsense"], "--set expects KEY=VALUE"),
    ],
)
def test_bad_config_and_data_exit_2(capsys, tmp_path, argv, message):
    code, _, err = train(capsys, tmp_path / "run", *argv)
    assert code == 2
    assert message in err


def test_exit_codes_folder_resume_and_nan(capsys, tmp_path):
    run = tmp_path / "run"
    data = ["--dataset", "synthetic:3:16:16:4:32:8"]
    assert train(capsys, run, *data)[0] == 0
    code, _, err = train(capsys, run, *data)
    assert code == 2 and "--resume" in err and "--overwrite" in err
    code, _, err = train(capsys, run, *data, "--resume", "--lr", "0.5")
    assert code == 2 and "lr: saved" in err
    assert train(capsys, run, *data, "--overwrite", "--seed", "5")[0] == 0
    code, out, _ = train(
        capsys, tmp_path / "nan", *data, "--method", "dense", "--lr", "1e30", "--epochs", "3"
    )
    assert code == 3 and "loss became" in out


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "ssconv", *args]


# Two processes on two cores: no oversubscription. No fused kernel: a first build (a minute or
# more) inside a subprocess would race these tests' timeouts; tests/layers covers the kernels.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "SSCONV_NO_FUSED": "1"}


def test_unexpected_error_exits_1_with_traceback(capsys, tmp_path, monkeypatch):
    import ssconv.train.trainer as trainer

    def broken(self):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(trainer.Trainer, "run", broken)
    code, _, err = train(capsys, tmp_path / "run", "--dataset", "synthetic:3:16:16:4:32:8")
    assert code == 1
    assert "unexpected error: RuntimeError: disk on fire" in err and "Traceback" in err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_checkpoint_and_exits_128_plus_signal(tmp_path, sig):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        _cli(
            "train",
            "--out",
            str(out),
            "--dataset",
            "synthetic:3:16:16:4:4000:8",
            "--model",
            "cifar_resnet20",
            "--set",
            "model_kwargs={width: 4}",
            "--epochs",
            "50",
            "--batch-size",
            "4",
            "--workers",
            "0",
            "--set",
            "eval_batch_size=8",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # inside the first epoch
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, stderr
    assert f"stopped by {signal.Signals(sig).name}" in stdout
    state = load_checkpoint(list_checkpoints(out / "checkpoints")[0])
    assert state["epoch"] == 0 and state["step_in_epoch"] > 0  # mid-epoch, at a step boundary
    # Resuming with other result-relevant settings is refused (the run's config rules).
    changed = subprocess.run(
        _cli("train", "--out", str(out), "--resume", "--max-steps", "3"),
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )
    assert changed.returncode == 2 and "max_steps" in changed.stderr


def test_ddp_two_cpu_processes(tmp_path):
    out = tmp_path / "ddp"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29517",
            "-m",
            "ssconv",
            "train",
            "--out",
            str(out),
            "--dataset",
            "synthetic:3:16:16:4:64:16",
            "--model",
            "cifar_resnet20",
            "--set",
            "model_kwargs={width: 4}",
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--workers",
            "0",
            "--device",
            "cpu",
            "--method",
            "ssc",
            "--density",
            "0.3",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=ENV,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    # Two processes with batch 8 each over 64 images: 4 steps per epoch.
    assert rows[-1]["step"] == 8
    final = json.loads((out / "final.json").read_text())
    assert final["complete"]
    # Resume under DDP after the run finished: nothing left to do, same result.
    again = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29518",
            "-m",
            "ssconv",
            "train",
            "--out",
            str(out),
            "--resume",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=ENV,
    )
    assert again.returncode == 0, again.stderr[-3000:]


# ------------------------------------------------------------ issue 16: run-folder faults
SYN = ["--dataset", "synthetic:3:16:16:4:32:8"]


def _raise_on_write(monkeypatch, name: str, code: int, after_calls: int = 0):
    """Make the atomic writer fail with ``code`` once a file called ``name`` is written."""
    import errno  # noqa: F401

    from ssconv.train import checkpoint

    real = checkpoint._Sink._write

    def write(self, data):
        if self.name == name or (name == "ckpt" and self.name.startswith("ckpt-")):
            raise OSError(code, os.strerror(code))
        return real(self, data)

    monkeypatch.setattr(checkpoint._Sink, "_write", write)


@pytest.mark.parametrize(
    "setup, argv, message",
    [
        ("file", [], "is a file, not a folder; pass the path of a folder"),
        ("missing", ["--resume"], "nothing to resume: --out"),
        ("empty", ["--resume"], "is empty; drop --resume"),
        ("notes", ["--resume"], "holds no ssconv run"),
        ("notes", ["--overwrite"], "does not look like an ssconv run folder"),
        ("ENOSPC", [], "ENOSPC (No space left on device); the disk is full"),
        ("EROFS", [], "EROFS (Read-only file system)"),
        ("EACCES", [], "EACCES (Permission denied)"),
        ("mkdir", [], "EACCES"),
        ("epochs", ["--resume", "--epochs", "2"], "--allow-schedule-change"),
    ],
)
def test_run_folder_faults_exit_2_naming_the_path(
    capsys, tmp_path, monkeypatch, setup, argv, message
):
    import errno

    out = tmp_path / "run"
    if setup == "file":
        out.write_text("x")
    elif setup == "empty":
        out.mkdir()
    elif setup == "notes":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    elif setup == "ENOSPC":
        _raise_on_write(monkeypatch, "ckpt", errno.ENOSPC)
    elif setup == "EROFS":
        _raise_on_write(monkeypatch, "config.yaml", errno.EROFS)
    elif setup == "EACCES":
        _raise_on_write(monkeypatch, "final.json", errno.EACCES)
    elif setup == "mkdir":
        real = Path.mkdir

        def mkdir(self, *args, **kwargs):
            if self == out:
                raise PermissionError(errno.EACCES, "Permission denied", str(self))
            return real(self, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", mkdir)
    elif setup == "epochs":
        assert train(capsys, out, *SYN)[0] == 0
    code, _, err = train(capsys, out, *SYN, *argv)
    assert code == 2, err
    assert message in err
    assert "unexpected error" not in err and "Traceback" not in err
    if setup in ("ENOSPC", "EROFS", "EACCES", "mkdir"):
        assert str(out) in err
    if setup == "file":
        assert out.read_text() == "x"
    if setup == "notes":
        assert (out / "notes.txt").read_text() == "mine"
    if setup == "EACCES":  # the run's checkpoints are intact: resume finishes it
        assert "continue with --resume" in err
        monkeypatch.undo()
        assert train(capsys, out, *SYN, "--resume")[0] == 0
    if setup == "epochs":
        code, out_text, _ = train(
            capsys, out, *SYN, "--resume", "--epochs", "2", "--allow-schedule-change"
        )
        assert code == 0, out_text


def test_failed_start_can_simply_be_run_again(capsys, tmp_path):
    """Issue 16 item 5: the second attempt said "not empty", and --overwrite "no config.yaml"."""
    out = tmp_path / "run"
    bad = ["--dataset", "cifar10", "--data-root", str(tmp_path / "nonexistent")]
    for _ in range(2):
        code, _, err = train(capsys, out, *bad)
        assert code == 2 and "cifar-10-batches-py" in err and "not empty" not in err
    assert train(capsys, out, *SYN)[0] == 0
    assert train(capsys, out, *SYN, "--overwrite")[0] == 0
