"""timm:NAME / tv:NAME models, pretrained weights (never downloaded here) and dense weight files
loaded before conversion."""

import importlib.util
import sys
import urllib.error

import pytest
import torch
import torchvision
from torch import nn

from ssconv import SSConv2d
from ssconv.cli.common import user_message
from ssconv.models import (
    PretrainedWeightsError,
    WeightsError,
    create_model,
    load_init_checkpoint,
    model_info,
    read_state_dict,
)
from ssconv.pruning import get_masks
from ssconv.train.config import ConfigError, TrainConfig
from ssconv.train.methods import build_model


@pytest.mark.parametrize("name", ["tv:resnet18", "torchvision:mobilenet_v3_small"])
def test_torchvision_names_build_with_classes_and_grey_input(name):
    model = create_model(name, num_classes=7, in_channels=1).eval()
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 7)
    info = model_info(name)
    assert info.family == "torchvision" and info.input_size == (3, 224, 224)
    assert model_info("tv:inception_v3").input_size == (3, 299, 299)


def test_timm_names_build_with_classes_and_grey_input():
    pytest.importorskip("timm")
    model = create_model("timm:resnet18", num_classes=7, in_channels=1).eval()
    assert model.conv1.in_channels == 1 and model.fc.out_features == 7
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 7)
    assert model_info("timm:resnet18").family == "timm"


def test_unknown_names_give_closest_matches():
    with pytest.raises(ValueError, match="did you mean 'tv:resnet18'"):
        model_info("tv:resnet19")
    with pytest.raises(ValueError, match="did you mean 'timm:resnet18'"):
        model_info("timm/resnet18")
    with pytest.raises(ValueError, match="did you mean 'tv:efficientnet_b0'"):
        create_model("efficientnet_b0")
    if importlib.util.find_spec("timm") is not None:
        with pytest.raises(ValueError, match="did you mean 'timm:resnet18'"):
            create_model("timm:resnet19")


def test_timm_missing_says_pip_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError
    with pytest.raises(ValueError, match="pip install timm"):
        model_info("timm:resnet18")


def test_pretrained_torchvision_asks_for_default_weights(monkeypatch):
    """The flag reaches torchvision (get_model(weights="DEFAULT")); a fresh head of num_classes
    and an adapted grey stem are put on the (here: random) pretrained model."""
    real = torchvision.models.get_model
    calls = []

    def fake(name, **kwargs):
        calls.append((name, kwargs))
        torch.manual_seed(3)
        return real(name, weights=None)

    monkeypatch.setattr(torchvision.models, "get_model", fake)
    model = create_model("tv:resnet18", num_classes=10, in_channels=1, pretrained=True)
    assert calls == [("resnet18", {"weights": "DEFAULT"})]
    assert model.fc.out_features == 10
    rgb = fake("resnet18").conv1.weight
    assert torch.allclose(model.conv1.weight, rgb.sum(1, keepdim=True))


def test_pretrained_failure_names_model_and_init_checkpoint(monkeypatch):
    def offline(name, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torchvision.models, "get_model", offline)
    with pytest.raises(PretrainedWeightsError, match="'tv:resnet18'.*init_checkpoint=PATH") as e:
        create_model("tv:resnet18", pretrained=True)
    flags = user_message(e.value)
    assert "--init-checkpoint PATH" in flags and "--pretrained" in flags
    with pytest.raises(PretrainedWeightsError, match="'tv:resnet18' has them"):
        create_model("resnet18", pretrained=True)


def test_read_state_dict_unwraps_and_refuses(tmp_path):
    sd = nn.Linear(3, 2).state_dict()
    for i, obj in enumerate(
        [
            sd,
            {"state_dict": sd},
            {"model": sd, "epoch": 3},
            {f"module.{k}": v for k, v in sd.items()},
        ]
    ):
        torch.save(obj, tmp_path / f"{i}.pth")
        got = read_state_dict(tmp_path / f"{i}.pth")
        assert got.keys() == sd.keys()
    (tmp_path / "w.txt").write_text("x")
    with pytest.raises(WeightsError, match="suffix '.txt'"):
        read_state_dict(tmp_path / "w.txt")
    with pytest.raises(WeightsError, match="does not exist"):
        read_state_dict(tmp_path / "none.pt")
    torch.save({"epoch": 3}, tmp_path / "bad.pt")
    with pytest.raises(WeightsError, match="not tensors"):
        read_state_dict(tmp_path / "bad.pt")


def test_mismatched_keys_are_named_and_a_classifier_of_another_size_starts_fresh(tmp_path):
    model = create_model("cifar_resnet20", width=4)
    other = create_model("vgg11_bn")
    torch.save(other.state_dict(), tmp_path / "vgg.pt")
    with pytest.raises(WeightsError, match="missing keys.*unexpected keys"):
        load_init_checkpoint(model, tmp_path / "vgg.pt")
    # an ImageNet-style checkpoint of 1000 classes fine-tuned to 10: the head keeps its init
    big = create_model("cifar_resnet20", width=4, num_classes=100)
    torch.save(big.state_dict(), tmp_path / "c100.pt")
    head = model.fc.weight.clone()
    load_init_checkpoint(model, tmp_path / "c100.pt")
    assert torch.equal(model.fc.weight, head)
    assert torch.equal(model.conv1.weight, big.conv1.weight)


def _ssc_equals_dense_on_pattern(model, dense_sd):
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, SSConv2d)]
    assert layers
    for name, layer in layers:
        w, mask = layer.to_conv2d().weight, layer.full_mask()
        dense = dense_sd[f"{name}.weight"]
        assert w.shape == mask.shape == dense.shape
        assert torch.equal(w[mask], dense[mask]), name
        assert (w[~mask] == 0).all(), name


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_init_checkpoint_ssc_starts_from_dense_weights_on_its_pattern(tmp_path, fmt):
    torch.manual_seed(1)
    dense = create_model("tv:resnet18", num_classes=10)
    path = tmp_path / f"dense.{fmt}"
    if fmt == "pt":
        torch.save({"state_dict": dense.state_dict()}, path)
    else:
        st = pytest.importorskip("safetensors.torch")
        st.save_file(dense.state_dict(), str(path))
    cfg = TrainConfig.from_dict(
        {"model": "tv:resnet18", "method": "ssc", "density": 0.3, "init_checkpoint": str(path)}
    )
    model, info = build_model(cfg, 10, 3, (3, 32, 32))
    assert info["init"] == f"init_checkpoint {path}"
    _ssc_equals_dense_on_pattern(model, dense.state_dict())
    assert torch.equal(model.fc.weight, dense.fc.weight)
    assert torch.equal(model.bn1.running_var, dense.bn1.running_var)
    # Loading a checkpoint into the structure reads no weights file.
    path.unlink()
    build_model(cfg, 10, 3, (3, 32, 32), for_loading=True)


def test_init_checkpoint_pruning_masks_the_dense_weights(tmp_path):
    dense = create_model("cifar_resnet20", width=4)
    torch.save(dense.state_dict(), tmp_path / "d.pt")
    cfg = TrainConfig.from_dict(
        {
            "model": "cifar_resnet20",
            "model_kwargs": {"width": 4},
            "method": "magnitude",
            "density": 0.3,
            "init_checkpoint": str(tmp_path / "d.pt"),
        }
    )
    model, _ = build_model(cfg, 10, 3, (3, 32, 32))
    masks = get_masks(model)
    assert masks
    modules = dict(model.named_modules())
    sd = dense.state_dict()
    for name, mask in masks.items():
        assert torch.equal(modules[name].weight, sd[f"{name}.weight"] * mask), name


def test_config_errors_name_the_key(tmp_path):
    torch.save(create_model("vgg11_bn").state_dict(), tmp_path / "vgg.pt")
    cfg = TrainConfig.from_dict(
        {"model": "cifar_resnet20", "method": "dense", "init_checkpoint": str(tmp_path / "vgg.pt")}
    )
    with pytest.raises(ConfigError, match="init_checkpoint: .*missing keys"):
        build_model(cfg, 10, 3, (3, 32, 32))
    cfg = TrainConfig.from_dict({"model": "cifar_resnet20", "method": "dense", "pretrained": True})
    with pytest.raises(ConfigError, match="pretrained: registry model"):
        build_model(cfg, 10, 3, (3, 32, 32))
