"""timm:NAME / tv:NAME models, --pretrained and --init-checkpoint from the command line (nothing
is downloaded: the pretrained builders are monkeypatched)."""

import urllib.error

import pytest
import torch
import torchvision
import yaml

from ssconv.cli.main import main
from ssconv.models import create_model

TINY_TRAIN = [
    "--epochs",
    "1",
    "--batch-size",
    "4",
    "--max-steps",
    "1",
    "--workers",
    "0",
    "--set",
    "eval_batch_size=50",
    "--set",
    "train_subset=16",
    "--set",
    "latency_batch=0",
]


@pytest.fixture(autouse=True)
def _no_fused(monkeypatch):
    monkeypatch.setenv("SSCONV_NO_FUSED", "1")


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def fake_pretrained(monkeypatch):
    """torchvision.models.get_model recording its calls; weights are never fetched."""
    real = torchvision.models.get_model
    calls = []

    def fake(name, **kwargs):
        calls.append((name, kwargs))
        return real(name, weights=None)

    monkeypatch.setattr(torchvision.models, "get_model", fake)
    return calls


@pytest.fixture
def offline(monkeypatch):
    def fail(name, **kwargs):
        if kwargs.get("weights") is None:
            raise AssertionError("only pretrained builds are faked offline")
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torchvision.models, "get_model", fail)


@pytest.mark.parametrize("name", ["tv:resnet18", "timm:resnet18"])
def test_summary_of_timm_and_torchvision_models(capsys, name):
    if name.startswith("timm"):
        pytest.importorskip("timm")
    code, out, err = run(capsys, "summary", name, "--input-size", "32", "32", "--density", "0.3")
    assert code == 0, err
    assert "total (conv+linear)" in out


def test_unknown_names_exit_2_with_closest(capsys):
    code, _, err = run(capsys, "summary", "tv:resnet19")
    assert code == 2 and "did you mean 'tv:resnet18'" in err
    code, _, err = run(capsys, "summary", "timm/resnet18")
    assert code == 2 and "did you mean 'timm:resnet18'" in err


def test_train_a_torchvision_model_one_step(capsys, tmp_path):
    out = tmp_path / "run"
    code, stdout, err = run(
        capsys, "train", "--out", out, "--model", "tv:mobilenet_v3_small", "--method", "dense",
        *TINY_TRAIN,
    )  # fmt: skip
    assert code == 0, err
    assert "done: dense tv:mobilenet_v3_small" in stdout
    assert yaml.safe_load((out / "config.yaml").read_text())["model"] == "tv:mobilenet_v3_small"


def _dense_grey_resnet(tmp_path, name="dense.pt", width=4):
    torch.manual_seed(5)
    dense = create_model("cifar_resnet20", num_classes=10, in_channels=1, width=width)
    path = tmp_path / name
    torch.save({"model": dense.state_dict()}, path)
    return dense, path


def test_train_from_init_checkpoint_and_bad_key_file(capsys, tmp_path):
    _, path = _dense_grey_resnet(tmp_path)
    base = ["train", "--model", "cifar_resnet20", "--set", "model_kwargs={width: 4}", *TINY_TRAIN]
    out = tmp_path / "run"
    code, _, err = run(capsys, *base, "--out", out, "--density", "0.3", "--init-checkpoint", path)
    assert code == 0, err
    assert yaml.safe_load((out / "config.yaml").read_text())["init_checkpoint"] == str(path)
    # A file of another architecture: exit 2 naming keys, before training.
    torch.save(create_model("vgg11_bn", in_channels=1).state_dict(), tmp_path / "vgg.pt")
    bad = ["--out", tmp_path / "bad", "--init-checkpoint", tmp_path / "vgg.pt"]
    code, _, err = run(capsys, *base, *bad)
    assert code == 2
    assert "init_checkpoint" in err and "missing keys" in err and "unexpected keys" in err
    assert "Traceback" not in err


def test_pretrained_reaches_the_builder_and_offline_exits_2(capsys, tmp_path, fake_pretrained):
    code, _, err = run(capsys, "summary", "tv:resnet18", "--pretrained", "--input-size", "32", "32")
    assert code == 0, err
    assert fake_pretrained[-1] == ("resnet18", {"weights": "DEFAULT"})
    code, _, err = run(
        capsys, "train", "--out", tmp_path / "run", "--model", "tv:mobilenet_v3_small",
        "--method", "dense", "--pretrained", *TINY_TRAIN,
    )  # fmt: skip
    assert code == 0, err
    assert ("mobilenet_v3_small", {"weights": "DEFAULT"}) in fake_pretrained


@pytest.mark.usefixtures("offline")
@pytest.mark.parametrize("command", ["summary", "train", "prune", "bench"])
def test_pretrained_offline_exits_2_naming_model_and_init_checkpoint(capsys, tmp_path, command):
    argv = {
        "summary": ["summary", "tv:resnet18", "--pretrained"],
        "train": ["train", "--out", tmp_path / "r", "--model", "tv:resnet18", "--pretrained"],
        "prune": ["prune", "tv:resnet18", "--method", "random", "--density", "0.5", "--pretrained"],
        "bench": ["bench", "tv:resnet18", "--pretrained"],
    }[command]
    code, _, err = run(capsys, *argv)
    assert code == 2, err
    assert "'tv:resnet18'" in err and "--init-checkpoint" in err and "URLError" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["summary", "resnet18", "--pretrained"], "'tv:resnet18' has them"),
        (["summary", "cifar_resnet20", "--init-checkpoint", "{tmp}/none.pt"], "does not exist"),
        (["summary", "cifar_resnet20", "--init-checkpoint", "{tmp}"], "is a folder"),
        (["bench", "cifar_resnet20", "--init-checkpoint", "{tmp}/w.txt"], ".safetensors"),
        (
            ["train", "--out", "{tmp}/r", "--model", "cifar_resnet20", "--pretrained"],
            "no pretrained weights",
        ),
        (
            ["export", "cifar_resnet20", "-o", "{tmp}/m.onnx", "--init-checkpoint", "{tmp}/v.pt"],
            "missing keys",
        ),
        (
            ["summary", "tv:resnet18", "--pretrained", "--init-checkpoint", "{tmp}/v.pt"],
            "pass one of them",
        ),
    ],
)
def test_bad_weights_options_exit_2(capsys, tmp_path, argv, message):
    (tmp_path / "w.txt").write_text("x")
    torch.save(create_model("vgg11_bn").state_dict(), tmp_path / "v.pt")
    code, _, err = run(capsys, *[a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert code == 2, err
    assert message in err


def test_prune_and_summary_start_from_init_checkpoint(capsys, tmp_path):
    _, path4 = _dense_grey_resnet(tmp_path, width=4)
    code, _, err = run(
        capsys, "summary", "cifar_resnet20", "--density", "0.3", "--in-channels", "1",
        "--init-checkpoint", path4,
    )  # fmt: skip
    assert code == 2 and "another shape" in err  # the file is width 4, the model width 16
    dense = create_model("cifar_resnet20", num_classes=10, in_channels=1)
    torch.save(dense.state_dict(), tmp_path / "w16.pth")
    code, _, err = run(
        capsys, "prune", "cifar_resnet20", "--method", "magnitude", "--density", "0.3",
        "--in-channels", "1", "--init-checkpoint", tmp_path / "w16.pth", "--json",
    )  # fmt: skip
    assert code == 0, err


def test_summary_from_safetensors(capsys, tmp_path):
    st = pytest.importorskip("safetensors.torch")
    dense = create_model("tv:resnet18", num_classes=10)
    st.save_file(dense.state_dict(), str(tmp_path / "r18.safetensors"))
    code, _, err = run(
        capsys, "summary", "tv:resnet18", "--num-classes", "10", "--density", "0.3",
        "--input-size", "32", "32", "--init-checkpoint", tmp_path / "r18.safetensors",
    )  # fmt: skip
    assert code == 0, err
