import torch
from torch import nn
from torch.nn.utils import prune

from ssconv import SSConv2d
from ssconv.report.pattern_plot import kernel_type_image, plot_pattern


def test_kernel_type_image_codes():
    layer = SSConv2d(8, 4, 3, period=2, pointwise=True, spatial="checkerboard")
    image = kernel_type_image(layer)
    assert image.shape == (4, 8)
    # Filter 0: spatial on inputs 0, 2, 4, 6 with parities 0, 1, 0, 1; points elsewhere.
    assert image[0].tolist() == [3, 1, 4, 1, 3, 1, 4, 1]
    dense = nn.Conv2d(4, 4, 3, groups=2)
    assert kernel_type_image(dense).tolist() == [[2, 2, 0, 0]] * 2 + [[0, 0, 2, 2]] * 2


def test_masked_conv_image_and_plot(tmp_path):
    conv = nn.Conv2d(4, 2, 3)
    mask = torch.zeros(2, 4, 3, 3)
    mask[0, 0] = 1
    mask[1, 1, 1, 1] = 1
    prune.custom_from_mask(conv, "weight", mask)
    assert kernel_type_image(conv).tolist() == [[2, 0, 0, 0], [0, 1, 0, 0]]
    out = plot_pattern(SSConv2d(128, 128, 3, period=8), tmp_path / "x.png", max_channels=32)
    assert out.exists()
