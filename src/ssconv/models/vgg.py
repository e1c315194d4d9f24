"""VGG with batch normalization for small images, after "Very Deep Convolutional Networks for
Large-Scale Image Recognition" (Simonyan, Zisserman, ICLR 2015, arXiv:1409.1556), configurations
A (11), B (13), D (16) and E (19), in the CIFAR form used by the pruning-at-initialization
literature (SNIP, GraSP, SynFlow): 3 x 3 convolutions with batch norm, global average pooling
and a single linear classifier. Works for 32 x 32 (CIFAR) and 64 x 64 (Tiny-ImageNet) inputs.
"""

from __future__ import annotations

from torch import Tensor, nn

from ssconv.layers.factory import ConvFactory, dense_conv
from ssconv.models.registry import register_model

__all__ = ["VGG", "VGG_CONFIGS"]

VGG_CONFIGS: dict[int, list[int | str]] = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    19: [
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        512,
    ],
}


class VGG(nn.Module):
    """VGG-BN for small images: ``features`` (conv-BN-ReLU, max pools), average pool, linear."""

    def __init__(
        self,
        depth: int,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        width_mult: float = 1.0,
        conv_layer: ConvFactory = dense_conv,
        norm_layer: type[nn.Module] = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        if depth not in VGG_CONFIGS:
            raise ValueError(f"depth must be one of {sorted(VGG_CONFIGS)}, got {depth}")
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")
        layers: list[nn.Module] = []
        channels = in_channels
        for v in VGG_CONFIGS[depth]:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                out = max(1, int(round(int(v) * width_mult)))
                layers += [
                    conv_layer(channels, out, 3, padding=1, bias=False),
                    norm_layer(out),
                    nn.ReLU(inplace=True),
                ]
                channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


def _make(depth: int):
    def builder(**kwargs) -> VGG:
        return VGG(depth, **kwargs)

    builder.__name__ = f"vgg{depth}_bn"
    builder.__doc__ = f"VGG-{depth} with batch norm for 32 x 32 / 64 x 64 images."
    return builder


for _depth in (11, 13, 16, 19):
    register_model(family="vgg", input_size=(3, 32, 32), num_classes=10)(_make(_depth))
