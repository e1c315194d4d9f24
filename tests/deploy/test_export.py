import warnings

import pytest
import torch
from torch import nn

import ssconv
from ssconv import SSConv2d
from ssconv.deploy import export_onnx, export_torchscript, freeze
from ssconv.layers.inference import SSConv2dInference
from tests.deploy.bn import randomize_bn


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
    model = randomize_bn(
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


@pytest.mark.parametrize("dynamo", [False, True])
def test_onnx_export_standard_ops_and_onnxruntime(tmp_path, dynamo):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    if dynamo:
        pytest.importorskip("onnxscript")
    model = randomize_bn(
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
    model = randomize_bn(
        ssconv.convert(
            ssconv.create_model("cifar_resnet20"), density=0.1, warn_coverage=False
        ).model
    )
    report = export_torchscript(model, tmp_path / "m.pt", (3, 32, 32))
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    x = torch.randn(3, 3, 32, 32)
    assert torch.allclose(loaded(x), model(x), atol=1e-4)
    assert report.max_abs_diff == 0.0


def test_freezing_a_frozen_model_is_a_no_op_and_exports(tmp_path):
    # ``bench --onnx`` exports frozen models; export_onnx freezes again. A second channel-order
    # pass used to overwrite the first pass's converters (same names) and break VGG-19.
    pytest.importorskip("onnxruntime")
    from ssconv.deploy import export_onnx
    from ssconv.layers.channel_order import ChannelOrder

    model = randomize_bn(
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


def test_freeze_for_onnxruntime_decomposes_depthwise_spatial_layers():
    # ResNet-20's 16-channel layers at 0.10: one spatial kernel per filter (G=2, P=8), a
    # depthwise K x K convolution once decomposed, onnxruntime's fast path.
    model = randomize_bn(
        ssconv.convert(
            ssconv.create_model("cifar_resnet20"), density=0.1, warn_coverage=False
        ).model
    )
    torch_form = freeze(model)
    ort_form = freeze(model, target="onnxruntime")
    x = torch.randn(2, 3, 32, 32)
    modes = {}
    for name, layer in ort_form.named_modules():
        if isinstance(layer, SSConv2dInference):
            depthwise = layer._has_spatial and layer._a == 1
            modes[name] = (depthwise, layer.mode, torch_form.get_submodule(name).mode)
            if depthwise:
                assert layer.mode == "decomposed"
            else:
                assert layer.mode == torch_form.get_submodule(name).mode
    assert any(d for d, _, _ in modes.values()), modes
    with ssconv.kernels.fused.disabled():  # the stock operators, as exported
        assert torch.allclose(ort_form(x), model(x), atol=1e-4)
    with pytest.raises(ValueError, match="target must be one of"):
        freeze(model, target="tensorrt")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"groups": 2, "period": 4},
        {"groups": 4, "period": 2, "stride": 2},
        {"groups": 2, "period": 8, "bias": True},  # one spatial kernel per filter (A = 1)
        {"groups": 2, "period": 4, "spatial": "checkerboard", "padding_mode": "reflect"},
        {"groups": 2, "period": 2, "pointwise": False},
    ],
)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dense_point", [False, True])
def test_gathered_input_form_matches_the_layer(kwargs, channels_last, dense_point):
    # A shuffled layer's shuffle and residue reorders as two index gathers (the form
    # freeze(target="onnxruntime") exports): the same function of the same weights.
    torch.manual_seed(0)
    layer = SSConv2d(16, 16, 3, padding=1, shuffle=True, **kwargs).eval()
    frozen = SSConv2dInference(layer)
    assert frozen.gathered_input_applies()
    frozen.use_gathered_input(dense_point=dense_point)
    assert frozen.gathered and not frozen.fused and "gathered" in repr(frozen)
    if frozen.weight_point is not None:
        assert frozen.point_groups == (1 if dense_point else frozen.groups)
    x = torch.randn(2, 16, 9, 9)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert torch.allclose(frozen(x), layer(x), atol=1e-5)
    with pytest.raises(ValueError, match="gathered form"):
        frozen.dense_weight()


def test_gathered_input_form_refuses_layers_without_it():
    unshuffled = SSConv2dInference(SSConv2d(16, 16, 3, groups=2, period=4).eval())
    dense = SSConv2dInference(SSConv2d(16, 16, 3, groups=2, period=4, shuffle=True), "dense")
    for frozen in (unshuffled, dense):
        assert not frozen.gathered_input_applies()
        with pytest.raises(ValueError, match="shuffled layer with residue classes"):
            frozen.use_gathered_input()


def test_onnx_export_runs_shuffled_layers_as_gathers(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    model = randomize_bn(
        ssconv.convert(
            ssconv.create_model("cifar_resnet20"),
            density=0.05,
            distribution="uniform",  # (uniform densities group every layer at 0.05)
            warn_coverage=False,
        ).model
    ).eval()
    frozen = freeze(model, target="onnxruntime")
    gathered = [m for m in frozen.modules() if isinstance(m, SSConv2dInference) and m.gathered]
    assert len(gathered) >= 10, "the shuffled, grouped ResNet-20 at 0.05 should use gathers"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(frozen(x), model(x), atol=1e-4)
    export_onnx(model, tmp_path / "m.onnx", input_size=(3, 32, 32))  # checked in onnxruntime
    ops = [n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node]
    # One input gather per layer; output gathers only where the next consumer cannot absorb
    # the order (a layer chained to the next SSC layer through ReLU / adds leaves it out).
    chained = [m for m in gathered if m.out_gather is None]
    assert chained, "consecutive shuffled layers should share their gathers"
    assert len(gathered) <= ops.count("Gather") < 2 * len(gathered)
    # Three Reshape / Transpose / Reshape reorders per shuffled layer before; the rest now.
    assert ops.count("Transpose") < len(gathered)
    refrozen = freeze(frozen, target="onnxruntime")  # freezing again changes nothing
    with torch.no_grad():
        assert torch.allclose(refrozen(x), model(x), atol=1e-4)


@pytest.mark.parametrize(
    "source,target",
    [
        (None, ("perm", (2, 0, 3, 1, 5, 4, 7, 6))),
        (("perm", (2, 0, 3, 1, 5, 4, 7, 6)), None),
        ((2, 2, 8), ("perm", (1, 0, 2, 3, 7, 6, 5, 4))),
        (("perm", (1, 0, 2, 3, 7, 6, 5, 4)), (2, 2, 8)),
    ],
)
def test_channel_gather_converts_between_any_orders(source, target):
    from ssconv.layers.channel_order import ChannelGather, order_index

    canonical = torch.randn(2, 8, 3, 3)

    def in_order(tag):
        index = order_index(tag)
        return canonical if index is None else canonical[:, index]

    converted = ChannelGather(source, target, 8)(in_order(source))
    assert torch.equal(converted, in_order(target))


def test_freeze_bakes_pruning_masks_so_batchnorm_folds(tmp_path):
    from ssconv.pruning import prune
    from ssconv.pruning.masks import mask_parametrization

    model = randomize_bn(ssconv.create_model("cifar_resnet20"))
    prune(model, "magnitude", density=0.1)
    model.eval()
    frozen = freeze(model)
    assert not any(mask_parametrization(m) is not None for m in frozen.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in frozen.modules())
    assert any(mask_parametrization(m) is not None for m in model.modules())  # model untouched
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(frozen(x), model(x), atol=1e-4)
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    export_onnx(model, tmp_path / "p.onnx", input_size=(3, 32, 32))
    ops = {n.op_type for n in onnx.load(str(tmp_path / "p.onnx")).graph.node}
    assert "Where" not in ops and "BatchNormalization" not in ops, ops


def test_depthwise_preset_exports_depthwise_convolutions(tmp_path):
    # ssc_depthwise's spatial parts export as depthwise Conv nodes (one channel per group).
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    model = randomize_bn(
        ssconv.convert(
            ssconv.create_model("cifar_resnet20"),
            density=0.05,
            period="depthwise",
            warn_coverage=False,
        ).model
    ).eval()
    export_onnx(model, tmp_path / "d.onnx", input_size=(3, 32, 32))  # checked in onnxruntime
    graph = onnx.load(str(tmp_path / "d.onnx")).graph
    shapes = {i.name: list(i.dims) for i in graph.initializer}
    spatial = [
        shapes[n.input[1]]
        for n in graph.node
        if n.op_type == "Conv" and shapes.get(n.input[1], [0, 0, 1, 1])[2:] == [3, 3]
    ]
    assert len(spatial) >= 18  # the stem and the 18 converted layers
    assert sum(w[1] == 1 for w in spatial) >= 18, spatial  # one input channel per group
