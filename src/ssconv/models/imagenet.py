"""ImageNet architectures from torchvision, registered with a conv factory and ``in_channels``.

The definitions are torchvision's own (``torchvision.models.resnet18/34/50``, ``mobilenet_v2``;
"Deep Residual Learning for Image Recognition", arXiv:1512.03385; "MobileNetV2: Inverted
Residuals and Linear Bottlenecks", arXiv:1801.04381); no weights are downloaded. A conv factory
rebuilds each ``nn.Conv2d`` with the same geometry.
"""

from __future__ import annotations

from torch import nn

from ssconv.layers.factory import ConvFactory, dense_conv, replace_convs
from ssconv.models.registry import register_model
from ssconv.utils.modules import replace_module

__all__: list[str] = []


def _first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    return next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))


def _build(tv_name: str, num_classes: int, in_channels: int, conv_layer: ConvFactory, **kwargs):
    import torchvision  # here, not at import time: it adds seconds to `import ssconv`

    model = getattr(torchvision.models, tv_name)(weights=None, num_classes=num_classes, **kwargs)
    if in_channels != 3:
        name, stem = _first_conv(model)
        replace_module(
            model,
            name,
            nn.Conv2d(
                in_channels,
                stem.out_channels,
                stem.kernel_size,
                stem.stride,
                stem.padding,
                stem.dilation,
                stem.groups,
                stem.bias is not None,
            ),
        )
    if conv_layer is not dense_conv:
        replace_convs(model, conv_layer)
    return model


def _make(tv_name: str, doc: str):
    def builder(
        *,
        num_classes: int = 1000,
        in_channels: int = 3,
        conv_layer: ConvFactory = dense_conv,
        **kwargs,
    ) -> nn.Module:
        return _build(tv_name, num_classes, in_channels, conv_layer, **kwargs)

    builder.__name__ = tv_name
    builder.__doc__ = doc
    return builder


for _name, _doc in (
    ("resnet18", "torchvision ResNet-18 (ImageNet, 224 x 224)."),
    ("resnet34", "torchvision ResNet-34 (ImageNet, 224 x 224)."),
    ("resnet50", "torchvision ResNet-50 (ImageNet, 224 x 224)."),
    ("mobilenet_v2", "torchvision MobileNetV2 (ImageNet, 224 x 224)."),
):
    register_model(family="imagenet", input_size=(3, 224, 224), num_classes=1000)(
        _make(_name, _doc)
    )
