"""The runnable examples of ``examples/`` run, on tiny synthetic data and offline: the
"pretrained" weights are a local file of random weights, and sockets refuse to connect."""

import importlib.util
import socket
import sys
from pathlib import Path

import pytest
import torch

from ssconv import SSConv2d

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--dataset", "synthetic:3:16:16:4:32:16", "--batch-size", "8", "--max-steps", "2"]


def example(name: str):
    path = ROOT / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses / pickling look modules up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    def refuse(self, address):
        raise OSError(f"no network in tests (connect to {address!r})")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("SSCONV_NO_FUSED", "1")


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    """A dense torchvision ResNet-18 state_dict of random weights (1000 classes), as a user's
    downloaded ImageNet checkpoint would be."""
    import torchvision

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return path


def test_finetune_torchvision_keeps_the_weights_on_the_pattern(resnet18_file):
    module = example("finetune_torchvision")
    report = module.build(4, pretrained=False, weights=str(resnet18_file), density=0.3)
    dense = torch.load(resnet18_file, weights_only=True)
    conv = report.model.get_submodule("layer1.0.conv1")
    assert isinstance(conv, SSConv2d) and not conv.shuffle
    weight = conv.to_dense().detach()  # (C_out, C_in, 3, 3), zero off the pattern
    on = weight != 0
    assert 0.1 < on.float().mean() < 0.5
    assert torch.equal(weight[on], dense["layer1.0.conv1.weight"][on])
    assert torch.equal(report.model.bn1.weight, dense["bn1.weight"])
    assert report.model.fc.out_features == 4  # a fresh 4-class head


def test_finetune_torchvision_runs(tmp_path, resnet18_file, capsys):
    from safetensors.torch import load_file

    module = example("finetune_torchvision")
    out = tmp_path / "ft.safetensors"
    acc = module.main(["--weights", str(resnet18_file), "--epochs", "1", "--out", str(out), *TINY])
    assert 0.0 <= acc <= 1.0
    text = capsys.readouterr().out
    assert "model density (target 0.3000, achieved)" in text and "epoch 1:" in text
    weights = load_file(str(out))
    model = module.build(4, pretrained=False, weights=None, density=0.3).model
    model.load_state_dict(weights)  # the fine-tuned SSC model's own keys


def test_finetune_torchvision_refuses_both_starts(resnet18_file):
    module = example("finetune_torchvision")
    with pytest.raises(SystemExit):
        module.main(["--weights", str(resnet18_file), "--pretrained"])


def test_lightning_example_runs_and_its_checkpoint_loads(tmp_path):
    pytest.importorskip("lightning", reason="the Lightning example needs pip install lightning")
    module = example("lightning_ssconv")
    out = tmp_path / "lightning"
    metrics = module.main([*TINY, "--epochs", "2", "--width", "8", "--out", str(out)])
    assert {"train_loss", "val_loss", "val_acc"} <= set(metrics)
    (ckpt,) = out.rglob("*.ckpt")
    lit = module.LitSSC.load_from_checkpoint(ckpt, map_location="cpu")
    assert lit.hparams.num_classes == 4
    assert sum(isinstance(m, SSConv2d) for m in lit.modules()) == 4
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    for key, value in lit.state_dict().items():
        assert torch.equal(value, state[key]), key
