import warnings

import pytest
import torch
from torch import nn

import ssconv
from ssconv import SSConv2d
from ssconv.deploy import export_onnx, export_torchscript, fold_batchnorm, freeze
from ssconv.layers.inference import SSConv2dInference


def _randomize_bn(model):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_()
            m.bias.data.normal_()
    return model.eval()


@pytest.mark.parametrize(
    "spec",
    [
        {"density": 0.1},
        {"period": 4, "spatial": "checkerboard"},
        {"period": 3, "include": ["*"]},
        {"period": None},
    ],
)
def test_freeze_folds_bn_and_matches(spec):
    model = _randomize_bn(
        ssconv.convert(ssconv.create_model("cifar_resnet20"), warn_coverage=False, **spec).model
    )
    frozen = freeze(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in frozen.modules())
    assert not any(isinstance(m, SSConv2d) for m in frozen.modules())
    assert any(isinstance(m, SSConv2dInference) for m in frozen.modules())
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(frozen(x), model(x), atol=1e-4)
    dense = freeze(model, dense_above=0.0)
    assert all(m.mode == "dense" for m in dense.modules() if isinstance(m, SSConv2dInference))
    assert torch.allclose(dense(x), model(x), atol=1e-4)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"period": 4, "padding": 1},
        {"period": 2, "pointwise": False, "stride": 2, "padding": 0, "bias": True},
        {"period": 3, "groups": 2, "padding": 2, "dilation": 2, "padding_mode": "reflect"},
        {"period": 4, "padding": 1, "spatial": "checkerboard", "bias": False},
        {"period": None, "padding": 1},
        {"period": 1, "groups": 2, "padding": 1},
    ],
)
def test_inference_layer_matches_ssconv(kwargs):
    c_out = 12 if kwargs.get("period") != 3 else 10  # 3 does not divide 10 / 2: padded rows
    layer = SSConv2d(12, c_out, 3, **kwargs)
    x = torch.randn(2, 12, 9, 9)
    for mode in ("decomposed", "dense"):
        frozen = SSConv2dInference(layer, mode)
        assert torch.allclose(frozen(x), layer(x), atol=1e-5)
        assert frozen.num_params == layer.num_params


def test_fold_batchnorm_on_untraceable_model_warns():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: not traceable by FX
                return self.bn(self.conv(x))
            return self.conv(x)

    with pytest.warns(UserWarning, match="not traceable"):
        out = fold_batchnorm(Branchy())
    assert isinstance(out.bn, nn.BatchNorm2d)


@pytest.mark.parametrize("dynamo", [False, True])
def test_onnx_export_standard_ops_and_onnxruntime(tmp_path, dynamo):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    if dynamo:
        pytest.importorskip("onnxscript")
    model = _randomize_bn(
        ssconv.convert(
            ssconv.create_model("vgg11_bn", width_mult=0.25), density=0.1, warn_coverage=False
        ).model
    )
    report = export_onnx(model, tmp_path / "m.onnx", (3, 32, 32), dynamo=dynamo)
    assert report.max_abs_diff is not None and report.max_abs_diff <= 1e-4
    allowed = {
        "Conv",
        "Add",
        "Reshape",
        "Transpose",
        "Relu",
        "MaxPool",
        "Gemm",
        "ReduceMean",
        "GlobalAveragePool",
        "Flatten",
        "Constant",
        "Slice",
        "Concat",
        "Shape",
        "Gather",
        "Unsqueeze",
        "Identity",
    }
    assert set(report.op_types) <= allowed, set(report.op_types) - allowed
    assert "Conv" in report.op_types and "BatchNormalization" not in report.op_types


def test_torchscript_export(tmp_path):
    model = _randomize_bn(
        ssconv.convert(
            ssconv.create_model("cifar_resnet20"), density=0.1, warn_coverage=False
        ).model
    )
    report = export_torchscript(model, tmp_path / "m.pt", (3, 32, 32))
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    x = torch.randn(3, 3, 32, 32)
    assert torch.allclose(loaded(x), model(x), atol=1e-4)
    assert report.max_abs_diff == 0.0


@pytest.mark.parametrize("name", ["cifar_resnet20", "vgg11_bn"])
def test_channel_order_pass_removes_transposes_and_keeps_outputs(name):
    from ssconv.layers.channel_order import ChannelOrder, residue_permutation

    model = _randomize_bn(
        ssconv.convert(ssconv.create_model(name), period=4, warn_coverage=False).model
    )
    plain = freeze(model, channel_order=False)
    fast = freeze(model)
    residue = [m for m in fast.modules() if getattr(m, "residue", False)]
    conversions = [m for m in fast.modules() if isinstance(m, ChannelOrder)]
    assert residue and len(conversions) < len(residue)  # fewer than 2 transposes per layer
    for fmt in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(2, 3, 32, 32).contiguous(memory_format=fmt)
        assert torch.allclose(fast(x), model(x), atol=1e-4)
        assert torch.allclose(fast(x), plain(x), atol=1e-4)
    perm = residue_permutation(2, 4, 16)
    assert sorted(perm.tolist()) == list(range(16))
    assert perm[:2].tolist() == [0, 4]  # group 0 (8 channels, P=4): residue 0 is 0, 4


def test_freezing_a_frozen_model_is_a_no_op_and_exports(tmp_path):
    # ``bench --onnx`` exports frozen models; export_onnx freezes again. A second channel-order
    # pass used to overwrite the first pass's converters (same names) and break VGG-19.
    pytest.importorskip("onnxruntime")
    from ssconv.deploy import export_onnx
    from ssconv.layers.channel_order import ChannelOrder

    model = _randomize_bn(
        ssconv.convert(ssconv.create_model("vgg11_bn"), density=0.1, warn_coverage=False).model
    )
    once = freeze(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "not traceable" fallback either
        twice = freeze(once)
    before = sorted(n for n, m in once.named_modules() if isinstance(m, ChannelOrder))
    after = sorted(n for n, m in twice.named_modules() if isinstance(m, ChannelOrder))
    assert before and before == after
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(twice(x), model(x), atol=1e-4)
    report = export_onnx(once, tmp_path / "m.onnx", (3, 32, 32))
    assert report.max_abs_diff is not None and report.max_abs_diff < 1e-4


def test_onnx_export_does_not_repeat_the_constant_folding_warnings(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model = ssconv.convert(ssconv.create_model("cifar_resnet20"), density=0.1).model
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_onnx(model, tmp_path / "m.onnx", (3, 32, 32), dynamo=False)
    assert not [w for w in caught if "Constant folding" in str(w.message)]


@pytest.mark.parametrize("dynamo", [False, True])
def test_onnx_batch_axis_is_dynamic_and_checked_at_two_batches(tmp_path, dynamo):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    if dynamo:
        pytest.importorskip("onnxscript")
    model = ssconv.convert(
        ssconv.create_model("cifar_resnet20", width=8), density=0.1, warn_coverage=False
    ).model.eval()
    report = export_onnx(model, tmp_path / "m.onnx", (3, 16, 16), dynamo=dynamo, batch=1)
    assert report.checked_batches == [1, 3] and report.max_abs_diff <= 1e-4
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    (shape,) = [i.shape for i in session.get_inputs()]
    assert isinstance(shape[0], str)  # a symbolic batch dimension
    x = torch.randn(5, 3, 16, 16)
    out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(out), freeze(model)(x), rtol=1e-4, atol=1e-4)
    static = export_onnx(
        model, tmp_path / "s.onnx", (3, 16, 16), dynamo=dynamo, batch=4, dynamic_batch=False
    )
    assert static.checked_batches == [4]
    assert ort.InferenceSession(str(tmp_path / "s.onnx")).get_inputs()[0].shape[0] == 4
