"""The standard preprocessing of each dataset family, as torchvision transforms.

Small images (CIFAR, Fashion-MNIST, Tiny-ImageNet, image folders) follow He et al., "Deep
Residual Learning for Image Recognition" (arXiv:1512.03385), Sec. 4.2: pad-and-random-crop plus
horizontal flip for training. ImageNet follows torchvision's reference recipe:
RandomResizedCrop + flip for training, Resize(256) + CenterCrop(224) for evaluation.

Those recipes are each dataset's default; :class:`Augment` turns the flip off (digits, text,
symbols are not mirror-symmetric) or sets the crop padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torchvision import transforms as T

from ssconv.data.base import DatasetError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Augment",
    "imagenet_transform",
    "small_image_transform",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Augment:
    """The training augmentation, where it departs from the dataset's recipe.

    Pass it as ``augment=`` of :func:`ssconv.data.build_dataset` (``augment=True`` is
    ``Augment()``: the dataset's recipe unchanged).

    Attributes:
        hflip: random horizontal flip; ``None``: the dataset's default (on for every built-in
            dataset but ``synthetic``, which is not augmented).
        crop_padding: padding in pixels of the random crop, at the output image size (0: no
            random crop); ``None``: the dataset's default (CIFAR, Tiny-ImageNet 4 at their
            native sizes, Fashion-MNIST 2, folders a 1/8 of the side; scaled with ``size``).
            ImageNet crops with RandomResizedCrop and takes no padding.
    """

    hflip: bool | None = None
    crop_padding: int | None = None

    def __post_init__(self) -> None:
        p = self.crop_padding
        if p is not None and (isinstance(p, bool) or not isinstance(p, int) or p < 0):
            raise DatasetError(f"crop_padding must be an integer >= 0 or None, got {p!r}")


def _options(augment: bool | Augment) -> Augment | None:
    """The augmentation options, or None for no augmentation."""
    if isinstance(augment, Augment):
        return augment
    return Augment() if augment else None


def _tail(mean: Sequence[float], std: Sequence[float], normalize: bool) -> list:
    tail: list = [T.ToTensor()]
    if normalize:
        tail.append(T.Normalize(tuple(mean), tuple(std)))
    return tail


def small_image_transform(
    *,
    native: int,
    size: int | None,
    padding: int,
    augment: bool | Augment,
    mean: Sequence[float],
    std: Sequence[float],
    normalize: bool = True,
    resize: bool = False,
) -> T.Compose:
    """Pad-and-crop + flip (``augment``), ``ToTensor`` and ``Normalize`` for small images.

    Args:
        native: the dataset's image side.
        size: output side; images are resized to it first when it differs from ``native``
            (``None``: ``native``). The crop padding scales with it.
        padding: crop padding at the native size (the default of ``Augment.crop_padding``).
        augment: add RandomCrop(size, padding) and RandomHorizontalFlip (an :class:`Augment`:
            as it says, each of its ``None`` fields at the default).
        resize: always resize (shorter side to ``size``, then a centre crop), for folders of
            images of any size.
    """
    size = size or native
    steps: list = []
    if resize or size != native:
        steps += [T.Resize(size), T.CenterCrop(size)]
    options = _options(augment)
    if options is not None:
        pad = options.crop_padding
        if pad is None:
            pad = max(1, round(padding * size / native))
        if pad:
            steps.append(T.RandomCrop(size, padding=pad))
        if options.hflip is not False:
            steps.append(T.RandomHorizontalFlip())
    return T.Compose(steps + _tail(mean, std, normalize))


def imagenet_transform(
    *,
    size: int = 224,
    augment: bool | Augment,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    normalize: bool = True,
) -> T.Compose:
    """RandomResizedCrop(size) + flip, or Resize(size * 256 / 224) + CenterCrop(size)."""
    options = _options(augment)
    if options is not None:
        if options.crop_padding is not None:
            raise DatasetError(
                "crop_padding: ImageNet is augmented with RandomResizedCrop, which takes no "
                f"padding; leave crop_padding unset (got {options.crop_padding})"
            )
        steps: list = [T.RandomResizedCrop(size)]
        if options.hflip is not False:
            steps.append(T.RandomHorizontalFlip())
    else:
        steps = [T.Resize(round(size * 256 / 224)), T.CenterCrop(size)]
    return T.Compose(steps + _tail(mean, std, normalize))
