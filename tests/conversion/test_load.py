"""Loading dense weights into converted models, and trained runs back into Python."""

import pytest
import torch
import torchvision

import ssconv
from ssconv import SSConv2d, convert, load_dense_state_dict
from ssconv.layers.ssconv import _regroup  # the dense weight in the SSC layer's groups


def test_dense_resnet18_state_dict_into_its_conversion(tmp_path):
    dense = torchvision.models.resnet18(weights=None, num_classes=10)  # random, no download
    path = tmp_path / "resnet18.pt"
    torch.save(dense.state_dict(), path)
    report = convert(
        torchvision.models.resnet18(weights=None, num_classes=10),
        density=0.3,
        warn_coverage=False,
    )
    model = report.model
    state = torch.load(path, weights_only=True)
    assert load_dense_state_dict(model, state) == ([], [])
    layers = {n: m for n, m in model.named_modules() if isinstance(m, SSConv2d)}
    assert len(layers) == len(report.converted) > 0
    assert any(m.shuffle for m in layers.values())  # convert's default
    for name, layer in layers.items():
        # The dense conv's weight and the SSC layer's, both over the input channels as they
        # come (the shuffle folded in; ungrouped when shuffled).
        w = state[f"{name}.weight"]
        if not layer.shuffle:
            w = _regroup(w, layer.dense_groups, layer.groups)
        ssc = layer.to_conv2d().weight.detach()
        on = ssc != 0
        assert torch.equal(on, layer.full_mask() if layer.shuffle else layer.to_dense() != 0)
        assert torch.equal(ssc[on], w[on])  # the SSC weights are the dense ones on the pattern
        assert on.sum() == layer.num_params  # (random weights: no zero on the pattern)
        ref = SSConv2d.from_conv2d(
            dense.get_submodule(name),
            period=layer.period,
            pointwise=layer.pointwise,
            spatial=layer.spatial,
            groups=layer.groups,
            copy_weights=True,
            shuffle=layer.shuffle,
        )
        assert torch.equal(ref.to_dense(), layer.to_dense())  # as convert(copy_weights=True)
    own = model.state_dict()
    for key in ("conv1.weight", "bn1.running_mean", "fc.weight", "layer1.0.bn2.bias"):
        assert torch.equal(own[key], state[key])  # kept layers and other keys load as usual


def test_load_dense_state_dict_names_unmatched_keys():
    model = convert(
        torchvision.models.resnet18(weights=None, num_classes=10), density=0.3, warn_coverage=False
    ).model
    state = torchvision.models.resnet18(weights=None, num_classes=10).state_dict()
    state["bogus.weight"] = torch.zeros(1)
    del state["layer1.0.conv1.weight"], state["fc.bias"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(KeyError, match="bogus.weight") as info:
        load_dense_state_dict(model, state)
    assert "layer1.0.conv1.weight" in str(info.value) and "fc.bias" in str(info.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # untouched
    missing, unexpected = load_dense_state_dict(model, state, strict=False)
    assert missing == ["layer1.0.conv1.weight", "fc.bias"] and unexpected == ["bogus.weight"]
    bad = dict(torchvision.models.resnet18(weights=None, num_classes=10).state_dict())
    bad["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    with pytest.raises(ValueError, match="'layer1.0.conv1.weight' has shape"):
        load_dense_state_dict(model, bad)


def test_load_run(tmp_path):
    from ssconv.train.config import TrainConfig
    from ssconv.train.trainer import Trainer

    config = TrainConfig.from_dict(
        dict(
            model="cifar_resnet20",
            model_kwargs={"width": 4},
            dataset="synthetic:3:16:16:4:32:16",
            method="ssc",
            density=0.3,
            epochs=1,
            batch_size=16,
            max_steps=1,
            workers=0,
            eval_batch_size=16,
            device="cpu",
        )
    )
    result = Trainer(config, tmp_path / "run", progress=False).run()
    model, loaded = ssconv.load_run(tmp_path / "run")
    assert loaded == config and not model.training
    # (The run saves its settings as used: "distribution" resolved from the method's default.)
    assert (config.distribution, loaded.distribution) == (None, "uniform")
    assert any(isinstance(m, SSConv2d) for m in model.modules())
    trained = result.model.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in model.state_dict().items())
