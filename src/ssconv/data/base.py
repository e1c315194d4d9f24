"""Shared pieces of :mod:`ssconv.data`: the error type, :class:`DatasetInfo`, the default data
root and two small dataset classes (in-memory uint8 images, and a list of image files).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

__all__ = [
    "DatasetError",
    "DatasetInfo",
    "ImageListDataset",
    "TensorImageDataset",
    "default_root",
    "pil_loader",
]


class DatasetError(ValueError):
    """A dataset is unknown, missing, incomplete or corrupt.

    The message names the dataset name, file or folder at fault and says what to do about it.
    """

    def __init__(self, *args: object) -> None:
        # Raised in a DataLoader worker, it is raised again in the main process with the
        # worker's traceback as its message ("Caught DatasetError in DataLoader worker ...");
        # keep the original message (the traceback stays in ``worker_traceback``).
        text = args[0] if len(args) == 1 else None
        if isinstance(text, str) and text.startswith("Caught ") and "\nOriginal Traceback" in text:
            head, sep, message = text.rpartition(f"{type(self).__name__}: ")
            if sep:
                self.worker_traceback = text
                args = (message.strip(),)
        super().__init__(*args)


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset holds and how its images are normalized.

    :func:`ssconv.data.dataset_info` returns what is known without reading the data: published
    sizes, or ``None`` where they depend on the files. :func:`ssconv.data.build_dataset` returns
    the info of the data it found: the size of the split it built is counted (the other split
    keeps its published size), the classes are read from the data, and ``source`` is set.
    """

    name: str
    num_classes: int
    input_size: tuple[int, int, int]  # (C, H, W) of the tensors the dataset yields
    mean: tuple[float, ...]  # per channel, of the [0, 1] images (what Normalize subtracts)
    std: tuple[float, ...]
    train_size: int | None = None  # number of training images, None when unknown
    test_size: int | None = None  # number of test (or validation) images
    classes: tuple[str, ...] | None = None  # class names in label order, None when unknown
    description: str = ""
    downloadable: bool = False  # whether ``download=True`` can fetch it
    source: str | None = None  # where the data was read from (set by build_dataset)

    @property
    def in_channels(self) -> int:
        """Image channels, the ``in_channels`` of a model's first layer."""
        return self.input_size[0]


def default_root() -> Path:
    """Where datasets live when no ``root`` is given: ``$SSCONV_DATA``, else ``./data``."""
    return Path(os.environ.get("SSCONV_DATA") or "data").expanduser()


def pil_loader(path: str | Path, mode: str = "RGB") -> Image.Image:
    """Open an image file as RGB (grey and CMYK JPEGs exist in ImageNet and Tiny-ImageNet), or
    as ``mode`` (``"L"`` for grey models).

    Raises:
        DatasetError: the file cannot be read or decoded (missing, not an image, truncated);
            the message names it, where Pillow's own errors do not.
    """
    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            return img.convert(mode)
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, ... by format
        raise DatasetError(f"{path}: cannot read this image: {image_error(e)}") from e


def image_error(exc: BaseException) -> str:
    """A short reason for an image that Pillow failed to open or decode."""
    if isinstance(exc, UnidentifiedImageError):
        return "not an image file (Pillow recognizes no image format in it)"
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    text = str(exc) or type(exc).__name__
    if "truncated" in text or isinstance(exc, EOFError):
        return f"truncated or incomplete ({text})"
    return f"corrupt or unsupported ({type(exc).__name__}: {text})"


class TensorImageDataset(Dataset):
    """Images held in memory as uint8, returned as PIL images through ``transform``.

    Mirrors torchvision's MNIST/CIFAR classes: attributes ``data``, ``targets``, ``classes``.

    Args:
        data: uint8 array ``(N, H, W)`` (grey) or ``(N, H, W, C)``.
        targets: ``N`` integer labels.
        classes: class names in label order.
        transform: applied to each PIL image.
    """

    def __init__(
        self,
        data: np.ndarray,
        targets: Sequence[int] | np.ndarray,
        classes: Sequence[str],
        transform: Callable[[Image.Image], Any] | None = None,
    ) -> None:
        if data.dtype != np.uint8 or data.ndim not in (3, 4):
            raise ValueError(f"data must be uint8 (N, H, W[, C]), got {data.dtype} {data.shape}")
        if len(targets) != len(data):
            raise ValueError(f"{len(data)} images but {len(targets)} labels")
        self.data = data
        self.targets = [int(t) for t in targets]
        self.classes = list(classes)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        img: Any = Image.fromarray(self.data[index])
        if self.transform is not None:
            img = self.transform(img)
        return img, self.targets[index]


class ImageListDataset(Dataset):
    """Image files with their labels, loaded on access (Tiny-ImageNet's layout needs this).

    Attributes ``samples`` (path, label), ``targets`` and ``classes`` follow ``ImageFolder``.
    """

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        classes: Sequence[str],
        transform: Callable[[Image.Image], Any] | None = None,
        loader: Callable[[str], Image.Image] = pil_loader,
    ) -> None:
        self.samples = list(samples)
        self.targets = [t for _, t in self.samples]
        self.classes = list(classes)
        self.transform = transform
        self.loader = loader

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, target = self.samples[index]
        img: Any = self.loader(path)
        if self.transform is not None:
            img = self.transform(img)
        return img, target
