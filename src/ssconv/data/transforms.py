"""The standard preprocessing of each dataset family, as torchvision transforms.

Small images (CIFAR, Fashion-MNIST, Tiny-ImageNet, image folders) follow He et al., "Deep
Residual Learning for Image Recognition" (arXiv:1512.03385), Sec. 4.2: pad-and-random-crop plus
horizontal flip for training. ImageNet follows torchvision's reference recipe:
RandomResizedCrop + flip for training, Resize(256) + CenterCrop(224) for evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence

from torchvision import transforms as T

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "imagenet_transform", "small_image_transform"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
    augment: bool,
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
        padding: crop padding at the native size.
        augment: add RandomCrop(size, padding) and RandomHorizontalFlip.
        resize: always resize (shorter side to ``size``, then a centre crop), for folders of
            images of any size.
    """
    size = size or native
    steps: list = []
    if resize or size != native:
        steps += [T.Resize(size), T.CenterCrop(size)]
    if augment:
        pad = max(1, round(padding * size / native))
        steps += [T.RandomCrop(size, padding=pad), T.RandomHorizontalFlip()]
    return T.Compose(steps + _tail(mean, std, normalize))


def imagenet_transform(
    *,
    size: int = 224,
    augment: bool,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    normalize: bool = True,
) -> T.Compose:
    """RandomResizedCrop(size) + flip, or Resize(size * 256 / 224) + CenterCrop(size)."""
    if augment:
        steps: list = [T.RandomResizedCrop(size), T.RandomHorizontalFlip()]
    else:
        steps = [T.Resize(round(size * 256 / 224)), T.CenterCrop(size)]
    return T.Compose(steps + _tail(mean, std, normalize))
