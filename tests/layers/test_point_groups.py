"""``point_groups``: a 1 x 1 part with its own (finer) group count."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ssconv import SSConv2d
from ssconv.kernels import fused
from ssconv.layers.inference import SSConv2dInference
from ssconv.layers.pattern import KernelType, SSCPattern

from .spec_oracle import spec_dense_mask, spec_kernel_type
from .test_fused import assert_trains_like

needs_kernel = pytest.mark.skipif(
    not fused.available(), reason=f"fused kernel not built: {fused.build_error()}"
)


@st.composite
def point_group_patterns(draw):
    groups = draw(st.integers(1, 3))
    r = draw(st.integers(1, 3))  # point groups per group
    g1 = groups * r
    period = draw(st.sampled_from([None, 1, 2, 3]))
    w1 = draw(st.integers(1, 3)) * (1 if period is None else period)  # C_in / G1
    cout_sub = draw(st.integers(1, 4))
    k = draw(st.sampled_from([1, 3, (3, 5)]))
    spatial = "full"
    if k != 1 and period is not None:
        spatial = draw(st.sampled_from(["full", "checkerboard"]))
    return g1 * w1, g1 * cout_sub, k, groups, period, True, spatial, g1


@given(point_group_patterns())
@settings(max_examples=120, deadline=None)
def test_pattern_matches_the_oracle_and_counts_in_closed_form(args):
    pat = SSCPattern(*args)
    mask = pat.dense_mask()
    assert torch.equal(mask, spec_dense_mask(*args))
    assert int(mask.sum()) == pat.num_params
    tm = pat.type_map()
    point = tm == KernelType.POINT
    assert int(point.sum()) == pat.num_point_weights
    assert (point.sum(1) == pat.point_per_filter).all()  # the same count in every filter
    c_in, c_out, _, groups, period, pointwise, _, g1 = args
    o, i = 1 % c_out, (c_in - 1)
    expected = spec_kernel_type(o, i, c_in, c_out, groups, period, pointwise, g1)
    assert KernelType.NAMES[int(tm[o, i])] == expected


def test_point_groups_equal_to_groups_is_the_plain_pattern():
    plain = SSCPattern(16, 16, 3, 2, 4)
    assert SSCPattern(16, 16, 3, 2, 4, point_groups=2) == plain
    assert SSCPattern(16, 16, 3, 2, 4, point_groups=None) == plain
    # Without a 1 x 1 part the value means nothing and is normalised.
    assert SSCPattern(16, 16, 3, 2, 1, point_groups=8).point_groups == 2
    assert SSCPattern(16, 16, 3, 2, 4, pointwise=False, point_groups=8).point_groups == 2


def test_thinner_point_part_frees_weights_at_the_same_spatial_part():
    plain = SSCPattern(64, 64, 3, 2, 8)
    thin = SSCPattern(64, 64, 3, 2, 8, point_groups=4)
    assert thin.num_spatial_weights == plain.num_spatial_weights
    assert plain.point_per_filter == 28 and thin.point_per_filter == 14
    assert thin.executed_params == plain.executed_params - 64 * 16
    assert thin.describe() == "G=2 P=8 pw Gp=4 full"
    assert thin.fan_in_channels == 4 + 14


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"point_groups": 3}, r"point_groups=3 must be a multiple of groups=2.*allowed: \[2, 4\]"),
        ({"point_groups": 8}, r"period=4 dividing in_channels/point_groups"),
        ({"point_groups": 0}, "point_groups must be a positive int"),
        ({"point_groups": 2.0}, "point_groups must be a positive int"),
    ],
)
def test_invalid_point_groups_name_the_argument_and_the_allowed_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SSCPattern(16, 16, 3, 2, 4, **kwargs)
    with pytest.raises(ValueError, match=match):
        SSConv2d(16, 16, 3, groups=2, period=4, **kwargs)


LAYERS = [
    dict(groups=2, period=4, point_groups=4),
    dict(groups=1, period=2, point_groups=2, spatial="checkerboard"),
    dict(groups=1, period=None, point_groups=4),
    dict(groups=2, period=2, point_groups=4, shuffle=True),
    dict(groups=1, period=4, point_groups=2, stride=2),
]


def _layer(kwargs, dtype=torch.float32, backend="auto"):
    kwargs = dict(kwargs)
    stride = kwargs.pop("stride", 1)
    layer = SSConv2d(16, 16, 3, stride, 1, backend=backend, **kwargs).to(dtype)
    with torch.no_grad():
        layer.bias.normal_()
    return layer


@pytest.mark.parametrize("kwargs", LAYERS)
@pytest.mark.parametrize("backend", ["masked", "decomposed", "split", "fused", "auto"])
def test_backends_equal_conv2d_with_the_spec_masked_weight(kwargs, backend):
    if backend == "fused" and not fused.available():
        pytest.skip("fused kernel not built")
    layer = _layer(kwargs, backend=backend)
    args = (16, 16, 3, layer.groups, layer.period, True, layer.spatial, layer.point_groups)
    dense = layer.to_dense()
    # The stored weights land exactly on the oracle's taps, and nowhere else.
    assert torch.equal(dense != 0, spec_dense_mask(*args))
    conv = nn.Conv2d(16, 16, 3, layer.stride, 1, groups=layer.groups)
    with torch.no_grad():
        conv.weight.copy_(dense)
        conv.bias.copy_(layer.bias)
    x = torch.randn(2, 16, 9, 10)
    xin = x[:, layer.in_index] if layer.shuffle else x
    for memory_format in (torch.contiguous_format, torch.channels_last):
        xm = x.contiguous(memory_format=memory_format)
        with torch.no_grad():
            torch.testing.assert_close(layer(xm), conv(xin), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kwargs", LAYERS)
def test_decomposed_gradients_equal_the_masked_reference(kwargs):
    layer = _layer(kwargs, torch.float64, backend="decomposed")
    ref = _layer(kwargs, torch.float64, backend="masked")
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(2, 16, 7, 8, dtype=torch.float64, requires_grad=True)
    xr = x.detach().clone().requires_grad_(True)
    g = torch.randn_like(ref(xr))
    (layer(x) * g).sum().backward()
    (ref(xr) * g).sum().backward()
    torch.testing.assert_close(x.grad, xr.grad)
    for pa, pb in zip(layer.parameters(), ref.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad)
    # Only the pattern's weights exist: the gradient has one entry per stored 1 x 1 weight.
    assert layer.weight_point.shape == (16, layer.pattern.point_per_filter)


@needs_kernel
@pytest.mark.parametrize("kwargs", [k for k in LAYERS if k.get("period")])
def test_fused_training_kernels_equal_the_masked_reference(kwargs):
    layer = _layer(kwargs, backend="fused")
    ref = _layer(kwargs, backend="masked")
    ref.load_state_dict(layer.state_dict())
    assert_trains_like(layer, layer, ref, 16, grad_fn="FusedConvTrain")


def test_weights_round_trip_through_dense_conv2d_and_state_dict():
    layer = _layer(LAYERS[0])
    conv = layer.to_conv2d()
    back = SSConv2d.from_conv2d(conv, groups=2, period=4, point_groups=4, copy_weights=True)
    torch.testing.assert_close(back.to_dense(), layer.to_dense(), atol=0, rtol=0)
    again = _layer(LAYERS[0])
    again.load_state_dict(layer.state_dict())
    torch.testing.assert_close(again.to_dense(), layer.to_dense(), atol=0, rtol=0)
    assert "point_groups=4" in repr(layer)
    # A layer without the option cannot take these weights: the shapes say why.
    plain = SSConv2d(16, 16, 3, 1, 1, groups=2, period=4)
    with pytest.raises(RuntimeError, match="weight_point"):
        plain.load_state_dict(layer.state_dict())


@pytest.mark.parametrize("kwargs", LAYERS)
def test_frozen_layer_runs_a_grouped_point_conv_and_matches(kwargs):
    layer = _layer(kwargs)
    frozen = SSConv2dInference(layer)
    assert frozen.point_groups == layer.point_groups
    assert frozen.residue_tags() is None and not frozen.gathered_input_applies()
    torch.testing.assert_close(frozen.dense_weight(), layer.to_dense(), atol=0, rtol=0)
    frozen.fused = frozen.pixels = False  # the stock operators an export runs
    x = torch.randn(2, 16, 9, 10)
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), layer(x), atol=1e-5, rtol=1e-5)
    wp = frozen.weight_point
    assert wp.shape == (16, 16 // layer.point_groups, 1, 1)


def test_point_conv_executes_only_the_point_groups_macs():
    layer = SSConv2d(16, 16, 3, 1, 1, groups=1, period=None, point_groups=4, backend="decomposed")
    x = torch.randn(1, 16, 5, 5)
    with torch.no_grad():
        y = layer(x)
    wl = layer.point_group_matrix().view(16, 4, 1, 1)
    torch.testing.assert_close(y, F.conv2d(x, wl, layer.bias, groups=4))


def test_solver_thins_the_point_part_within_the_budget_and_exports(tmp_path):
    import ssconv
    from ssconv.deploy import export_onnx

    model = ssconv.create_model("cifar_resnet20", in_channels=1)
    plain = ssconv.convert(model, density=0.05, warn_coverage=False)
    thin = ssconv.convert(model, density=0.05, point_groups="auto", warn_coverage=False)
    assert plain.density <= 0.05 and thin.density <= 0.05
    layers = [m for m in thin.model.modules() if isinstance(m, SSConv2d)]
    assert any(m.point_groups > m.groups for m in layers)
    assert all(m.point_groups == m.groups for m in plain.model.modules() if isinstance(m, SSConv2d))
    # The report counts what the layers hold.
    assert sum(m.num_params for m in layers) + 144 + 640 == thin.weight_params  # stem, fc
    report = export_onnx(thin.model.eval(), tmp_path / "m.onnx", (1, 28, 28))
    assert report.max_abs_diff is not None and report.max_abs_diff <= 1e-4
    with pytest.raises(ValueError, match="point_groups='auto' needs density="):
        ssconv.convert(model, period=4, point_groups="auto")
    with pytest.raises(ValueError, match="point_groups must be a positive int or 'auto'"):
        ssconv.convert(model, density=0.1, point_groups=0)


def test_config_key_and_preset_reach_the_solver():
    from ssconv.train.config import ConfigError, TrainConfig
    from ssconv.train.methods import ssc_settings

    preset = TrainConfig.from_dict({"method": "ssc_thin_point", "density": 0.05})
    assert ssc_settings(preset)["point_groups"] == "auto"
    explicit = TrainConfig.from_dict({"method": "ssc", "ssc_point_groups": 2})
    assert ssc_settings(explicit)["point_groups"] == 2
    default = TrainConfig.from_dict({"method": "ssc", "density": 0.05})
    assert "point_groups" not in ssc_settings(default)
    # The neutral default leaves earlier runs' digests as they were (this one's digest
    # before the key existed, with the layer distribution of the time), and a value other
    # than 1 changes it.
    earlier = TrainConfig.from_dict({"method": "ssc", "density": 0.05, "distribution": "uniform"})
    assert earlier.digest() == "6ff46cddd7"
    thin = TrainConfig.from_dict({"method": "ssc", "density": 0.05, "ssc_point_groups": "auto"})
    assert thin.digest() != default.digest()
    with pytest.raises(ConfigError, match="ssc_point_groups"):
        TrainConfig.from_dict({"method": "ssc", "ssc_point_groups": 0})
