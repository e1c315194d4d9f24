"""The channel-order pass: residue order between SSC layers, outputs unchanged."""

import pytest
import torch

import ssconv
from ssconv.deploy import freeze
from tests.deploy.bn import randomize_bn


@pytest.mark.parametrize("name", ["cifar_resnet20", "vgg11_bn"])
def test_channel_order_pass_removes_transposes_and_keeps_outputs(name):
    from ssconv.layers.channel_order import ChannelOrder, residue_permutation

    model = randomize_bn(
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
