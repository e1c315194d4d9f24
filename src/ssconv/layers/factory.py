"""Convolution factories: one callable with the ``nn.Conv2d`` signature that models call for every
convolution, so that a model can be built dense or directly with SSC (the timm ``create_conv2d``
idea).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ssconv.layers.pattern import SSCPattern, resolve_period
from ssconv.layers.ssconv import DEFAULT_INIT_SCALE, SSConv2d
from ssconv.utils.modules import replace_module

__all__ = [
    "DEFAULT_PERIOD",
    "ConvFactory",
    "SSCFactory",
    "dense_conv",
    "replace_convs",
    "ssc_applicable",
]

ConvFactory = Callable[..., nn.Module]


#: The period of the model-level tools (:class:`SSCFactory`, :func:`ssconv.convert` with fixed
#: settings). :class:`SSConv2d` and :class:`SSCPattern` themselves default to ``period=1``, on
#: purpose: with no SSC argument the layer is exactly ``nn.Conv2d`` (a drop-in that fits every
#: shape), while 4 must divide each layer's group width.
DEFAULT_PERIOD = 4


def dense_conv(in_channels: int, out_channels: int, kernel_size, **kwargs) -> nn.Conv2d:
    """The default factory: a plain ``nn.Conv2d``."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, **kwargs)


def ssc_applicable(
    in_channels: int,
    out_channels: int,
    kernel_size,
    groups: int = 1,
    *,
    ssc_groups: int = 1,
    period: int | None = 1,
    pointwise: bool = True,
    spatial: str = "full",
) -> str | None:
    """Why an SSC pattern cannot be used on a conv of this geometry (``None`` when it can)."""
    total_groups = groups * ssc_groups
    try:
        SSCPattern(in_channels, out_channels, kernel_size, total_groups, period, pointwise, spatial)
    except ValueError as exc:
        return str(exc)
    return None


@dataclass
class SSCFactory:
    """Build :class:`SSConv2d` layers with fixed SSC settings; fall back to ``nn.Conv2d``.

    The fallback (a dense conv) is used for the stem (``in_channels <= max_stem_channels``), for
    1 x 1 convolutions, for depthwise convolutions and wherever the pattern does not fit the
    shape (e.g. ``period`` not dividing the group width), so that one factory serves a whole
    model. ``groups`` multiplies the conv's own ``groups``.

    The stem rule differs from :func:`ssconv.convert`'s on purpose: the factory is called one
    conv at a time while the model is built and cannot know which conv comes first, so it
    treats a conv that reads the image (``in_channels <= max_stem_channels``) as the stem;
    ``convert`` sees the built model and keeps its first conv.

    Example::

        model = create_model("cifar_resnet32", conv_layer=SSCFactory(period=4))
    """

    groups: int = 1
    #: An int, None (no spatial kernel) or ``"depthwise"`` (each layer's group width).
    period: int | str | None = DEFAULT_PERIOD
    pointwise: bool = True
    spatial: str = "full"
    backend: str = "auto"
    max_stem_channels: int = 4
    convert_pointwise: bool = False
    #: Initialization scale of the SSC layers (``SSConv2d(init_scale=...)``).
    init_scale: str = DEFAULT_INIT_SCALE
    #: Channel shuffle of layers with several groups (``SSConv2d(shuffle=...)``), not for
    #: convs that are grouped themselves; the default, as in :func:`ssconv.convert`.
    shuffle: bool = True

    def __call__(self, in_channels: int, out_channels: int, kernel_size, **kwargs) -> nn.Module:
        k = kernel_size if isinstance(kernel_size, tuple) else (kernel_size, kernel_size)
        conv_groups = kwargs.get("groups", 1)
        period = resolve_period(self.period, in_channels, conv_groups * self.groups)
        dense = (
            in_channels <= self.max_stem_channels
            or (k == (1, 1) and not self.convert_pointwise)
            or conv_groups == in_channels
            or ssc_applicable(
                in_channels,
                out_channels,
                k,
                conv_groups,
                ssc_groups=self.groups,
                period=period,
                pointwise=self.pointwise,
                spatial=self.spatial,
            )
            is not None
        )
        if dense:
            return nn.Conv2d(in_channels, out_channels, kernel_size, **kwargs)
        kwargs["groups"] = conv_groups * self.groups
        return SSConv2d(
            in_channels,
            out_channels,
            kernel_size,
            period=period,
            pointwise=self.pointwise,
            spatial=self.spatial,
            backend=self.backend,
            init_scale=self.init_scale,
            shuffle=self.shuffle and conv_groups == 1,
            **kwargs,
        )


def replace_convs(model: nn.Module, conv_layer: ConvFactory) -> nn.Module:
    """Rebuild every ``nn.Conv2d`` of ``model`` with ``conv_layer`` (same geometry), in place.

    This is how models defined elsewhere (torchvision) take a conv factory.
    """
    for name, conv in [(n, m) for n, m in model.named_modules() if type(m) is nn.Conv2d]:
        new = conv_layer(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
        )
        if new is not conv:
            replace_module(model, name, new)
    return model
