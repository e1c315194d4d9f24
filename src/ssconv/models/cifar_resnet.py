"""ResNets for 32 x 32 images, as in "Deep Residual Learning for Image Recognition" (He, Zhang,
Ren, Sun, CVPR 2016, arXiv:1512.03385), section 4.2: depth ``6n + 2``, three stages of 16, 32
and 64 channels, global average pooling and one linear layer.

Shortcut variants (section 3.3 of the paper):

* ``"A"`` (default, the paper's CIFAR choice): identity shortcuts; where the shape changes, the
  input is subsampled by 2 and zero-padded in channels (no parameters). ResNet-20/32/44/56/110
  then have 0.27M / 0.46M / 0.66M / 0.85M / 1.7M parameters, as published.
* ``"B"``: a 1 x 1 projection convolution with batch norm where the shape changes.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ssconv.layers.factory import ConvFactory, dense_conv
from ssconv.models.registry import register_model

__all__ = ["CifarResNet", "BasicBlock"]


class _PadShortcut(nn.Module):
    """Option A: subsample by the stride and zero-pad the new channels (no parameters)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        extra = out_channels - in_channels
        self.pad = (extra // 2, extra - extra // 2)

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, *self.pad))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        shortcut: str,
        conv_layer: ConvFactory,
        norm_layer: type[nn.Module],
    ) -> None:
        super().__init__()
        self.conv1 = conv_layer(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm_layer(out_channels)
        self.conv2 = conv_layer(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = norm_layer(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            if shortcut == "A":
                self.shortcut = _PadShortcut(in_channels, out_channels, stride)
            else:
                self.shortcut = nn.Sequential(
                    conv_layer(in_channels, out_channels, 1, stride=stride, bias=False),
                    norm_layer(out_channels),
                )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """CIFAR-style ResNet of depth ``6n + 2`` (He et al. 2016, section 4.2)."""

    def __init__(
        self,
        depth: int,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        width: int = 16,
        shortcut: str = "A",
        conv_layer: ConvFactory = dense_conv,
        norm_layer: type[nn.Module] = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"depth must be 6n + 2 (20, 32, 44, 56, 110, ...), got {depth}")
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
        if width < 1:
            raise ValueError(f"width must be positive, got {width}")
        n = (depth - 2) // 6
        widths = [width, 2 * width, 4 * width]
        self.conv1 = conv_layer(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = norm_layer(widths[0])
        self.relu = nn.ReLU(inplace=True)
        stages = []
        channels = widths[0]
        for i, w in enumerate(widths):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(channels, w, stride, shortcut, conv_layer, norm_layer))
                channels = w
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.pool(x).flatten(1))


def _make(depth: int):
    def builder(**kwargs) -> CifarResNet:
        return CifarResNet(depth, **kwargs)

    builder.__name__ = f"cifar_resnet{depth}"
    builder.__doc__ = f"ResNet-{depth} for 32 x 32 images (He et al. 2016), option-A shortcuts."
    return builder


for _depth in (20, 32, 44, 56, 110):
    register_model(family="cifar_resnet", input_size=(3, 32, 32), num_classes=10)(_make(_depth))
