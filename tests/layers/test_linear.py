"""SSCLinear: exactness against nn.Linear with the block-diagonal (shuffled) weight, against
SSConv2d's 1x1 pattern, gradients, counting, conversion round trips, meta device and ONNX."""

import pytest
import torch
from torch import nn

import ssconv
from ssconv import SSCLinear, SSConv2d, load_dense_state_dict
from ssconv.sparsity.counting import model_weight_counts, weight_counts


def _reference_weight(layer: SSCLinear) -> torch.Tensor:
    """The dense weight from the definition: block g of outputs reads logical inputs of block g,
    logical input h * (C / G) + j being feature j * G + h when shuffled."""
    g, cin, cout = layer.groups, layer.in_features, layer.out_features
    w = torch.zeros(cout, cin, dtype=layer.weight_point.dtype)
    for o in range(cout):
        block = o // (cout // g)
        for j in range(cin // g):
            q = block * (cin // g) + j
            feature = (q % (cin // g)) * g + q // (cin // g) if layer.shuffle else q
            w[o, feature] = layer.weight_point[o, j]
    return w


@pytest.mark.parametrize("groups,shuffle", [(1, False), (4, False), (4, True), (2, True)])
def test_matches_nn_linear_with_the_pattern_weight(groups, shuffle):
    torch.manual_seed(0)
    layer = SSCLinear(24, 16, groups, shuffle=shuffle)
    reference = _reference_weight(layer).detach()
    assert torch.equal(layer.to_linear().weight, reference)
    x = torch.randn(3, 5, 24)  # any leading shape, features last
    expected = torch.nn.functional.linear(x, reference, layer.bias)
    assert torch.allclose(layer(x), expected, atol=1e-6)
    assert torch.allclose(layer.to_linear()(x), expected, atol=1e-6)
    assert layer.num_params == 24 * 16 // groups == int(reference.count_nonzero())
    assert weight_counts(layer) == (layer.num_params, 24 * 16)


def test_equals_ssconv2d_1x1_on_channels():
    torch.manual_seed(1)
    conv = SSConv2d(16, 8, 1, groups=4, period=None, shuffle=True, backend="decomposed")
    linear = SSCLinear(16, 8, 4, shuffle=True)
    with torch.no_grad():
        linear.weight_point.copy_(conv.weight_point)
        linear.bias.copy_(conv.bias)
    x = torch.randn(2, 16, 3, 3)
    expected = conv(x)
    got = linear(x.movedim(1, -1)).movedim(-1, 1)
    assert torch.allclose(got, expected, atol=1e-5)


def test_gradients_match_the_dense_reference_and_gradcheck():
    torch.manual_seed(2)
    layer = SSCLinear(12, 6, 3, shuffle=True).double()
    x = torch.randn(4, 12, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))
    dense = layer.to_linear()
    y, yd = layer(x), dense(x)
    gx, gw = torch.autograd.grad(y.square().sum(), (x, layer.weight_point))
    gxd, gwd = torch.autograd.grad(yd.square().sum(), (x, dense.weight))
    assert torch.allclose(gx, gxd)
    # The stored weights' gradient is the dense gradient on the pattern.
    probe = SSCLinear(12, 6, 3, shuffle=True).double()
    probe.load_dense_weight(gwd)
    assert torch.allclose(gw, probe.weight_point)


def test_from_linear_copies_the_pattern_and_load_dense_state_dict_round_trips():
    torch.manual_seed(3)
    dense = nn.Linear(16, 12)
    layer = SSCLinear.from_linear(dense, groups=4, shuffle=True, copy_weights=True)
    mask = _reference_weight(layer) != 0
    assert torch.equal(layer.to_linear().weight, dense.weight.detach() * mask)
    assert torch.equal(layer.bias, dense.bias)
    fresh = SSCLinear.from_linear(dense, groups=4, shuffle=True)
    assert not torch.equal(fresh.weight_point, layer.weight_point)
    model = nn.Sequential(fresh)
    result = load_dense_state_dict(model, {"0.weight": dense.weight, "0.bias": dense.bias})
    assert result == ([], [])
    assert torch.equal(fresh.weight_point, layer.weight_point)
    with pytest.raises(ValueError, match="'0.weight' has shape"):
        load_dense_state_dict(model, {"0.weight": dense.weight.t(), "0.bias": dense.bias})


def test_init_scale_follows_the_fan_in():
    torch.manual_seed(4)
    effective = SSCLinear(256, 256, 8).weight_point.std().item()
    dense = SSCLinear(256, 256, 8, init_scale="dense").weight_point.std().item()
    assert effective == pytest.approx((3 * 32) ** -0.5, rel=0.05)  # uniform +-1/sqrt(fan)
    assert dense == pytest.approx((3 * 256) ** -0.5, rel=0.05)


def test_bad_arguments_say_what_is_wrong():
    with pytest.raises(ValueError, match="groups=3 must divide in_features=16"):
        SSCLinear(16, 12, 3)
    with pytest.raises(ValueError, match="in_features must be a positive int"):
        SSCLinear(0, 4)
    with pytest.raises(ValueError, match="init_scale must be one of"):
        SSCLinear(4, 4, init_scale="kaiming")
    with pytest.raises(TypeError, match="linear must be an nn.Linear"):
        SSCLinear.from_linear(nn.Conv2d(4, 4, 1))
    with pytest.raises(ValueError, match="in_features=8 in the last dimension"):
        SSCLinear(8, 4)(torch.randn(2, 4))


def test_meta_device_and_profile_counts_tokens():
    with torch.device("meta"):
        layer = SSCLinear(32, 32, 4, shuffle=True)
    assert layer.weight_point.is_meta and layer.in_index.is_meta
    model = nn.Sequential(nn.Flatten(), SSCLinear(48, 32, 4, shuffle=True), nn.ReLU())
    result = ssconv.profile(model, (3, 4, 4))
    row = result.layers[0]
    assert row.params == 48 * 32 // 4 and row.effective_macs == row.params
    assert row.settings == "linear G=4, shuffled"
    assert model_weight_counts(model) == (384, 1536)


def test_onnx_export_runs_in_onnxruntime(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.Flatten(), SSCLinear(8 * 4 * 4, 16, 4, shuffle=True)
    ).eval()
    report = ssconv.export_onnx(model, tmp_path / "m.onnx", (3, 6, 6), dynamo=False)
    assert report.max_abs_diff is not None and report.max_abs_diff <= 1e-5


def test_fx_traces_it_as_a_leaf_and_freeze_folds_around_it():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), SSCLinear(128, 16, 4, shuffle=True)
    ).eval()
    graph = ssconv.symbolic_trace(model)
    assert [n.target for n in graph.graph.nodes if n.op == "call_module"][-1] == "3"
    with pytest.raises(TypeError, match="ssconv.symbolic_trace"):
        torch.fx.symbolic_trace(model)
    frozen = ssconv.freeze(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in frozen.modules())
    x = torch.randn(2, 3, 6, 6)
    assert torch.allclose(frozen(x), model(x), atol=1e-5)
