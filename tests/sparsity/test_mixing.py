import torch
import torch.nn.functional as F

from ssconv.layers import SSConv2d
from ssconv.sparsity.mixing import ChannelShuffle, shuffle_groups
from ssconv.train.config import TrainConfig
from ssconv.train.methods import build_model


def test_channel_shuffle_is_shufflenets_permutation():
    x = torch.arange(6.0).view(1, 6, 1, 1)
    y = ChannelShuffle(2)(x).flatten().tolist()
    assert y == [0.0, 2.0, 4.0, 1.0, 3.0, 5.0]  # group 0 reads 0, 2, 4: one per block of 2


def test_shuffled_layer_equals_conv_with_permuted_input_columns():
    torch.manual_seed(0)
    layer = SSConv2d(8, 8, 3, padding=1, groups=2, period=2, bias=False)
    model = torch.nn.Sequential(layer)
    assert shuffle_groups(model) == ["0"]
    x = torch.randn(2, 8, 5, 5)
    # Dense equivalent: input channel c of group h is old channel perm[h * 4 + j].
    perm = torch.arange(8).view(4, 2).t().reshape(-1)
    expected = F.conv2d(x[:, perm], layer.to_dense(), None, 1, 1, 1, 2)
    torch.testing.assert_close(model(x), expected)
    # Every output group now depends on both input blocks (mixing).
    grad = torch.autograd.functional.jacobian(lambda t: model(t)[0, :4].sum(), x)[0]
    assert grad[:4].abs().sum() > 0 and grad[4:].abs().sum() > 0


def test_mixing_keeps_the_budget():
    base = {"density": 0.1, "model_kwargs": {"width": 8}}
    plain, info = build_model(
        TrainConfig.from_dict({**base, "method": "ssc_unshuffled"}), 10, 3, (3, 16, 16)
    )
    mixed, info_m = build_model(
        TrainConfig.from_dict({**base, "method": "ssc"}), 10, 3, (3, 16, 16)
    )
    assert not info["shuffle"] and info_m["shuffle"]
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(plain) == count(mixed)


def test_ssc_shuffled_preset_is_the_default_ssc():
    base = {"density": 0.1, "model_kwargs": {"width": 8}, "seed": 0}
    torch.manual_seed(0)
    a, _ = build_model(
        TrainConfig.from_dict({**base, "method": "ssc_shuffled"}), 10, 3, (3, 16, 16)
    )
    torch.manual_seed(0)
    b, _ = build_model(TrainConfig.from_dict({**base, "method": "ssc"}), 10, 3, (3, 16, 16))
    x = torch.randn(2, 3, 16, 16)
    a.eval(), b.eval()
    torch.testing.assert_close(a(x), b(x))


def test_folded_shuffle_equals_the_explicit_module_model():
    """The default model computes what the first form of the study (a ChannelShuffle module
    before each unshuffled layer) computes with the same weights."""
    base = {"density": 0.1, "model_kwargs": {"width": 8}, "seed": 0}
    torch.manual_seed(0)
    folded, _ = build_model(TrainConfig.from_dict({**base, "method": "ssc"}), 10, 3, (3, 16, 16))
    torch.manual_seed(0)
    explicit, _ = build_model(
        TrainConfig.from_dict({**base, "method": "ssc_unshuffled"}), 10, 3, (3, 16, 16)
    )
    names = shuffle_groups(explicit)
    assert names == [n for n, m in folded.named_modules() if isinstance(m, SSConv2d) and m.shuffle]
    folded.load_state_dict(explicit.state_dict())  # the old keys <name>.1.* load
    x = torch.randn(2, 3, 16, 16)
    folded.eval(), explicit.eval()
    torch.testing.assert_close(folded(x), explicit(x))
