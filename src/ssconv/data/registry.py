"""The dataset registry: ``build_dataset``, ``dataset_info`` and ``list_datasets``, after the
model registry (:mod:`ssconv.models.registry`).

A dataset name is a registered base name, optionally followed by ``:ARG`` for the kinds that
take one (``folder:PATH``, ``synthetic:C:H:W:CLASSES``).
"""

from __future__ import annotations

import difflib
import fnmatch
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

from ssconv.data.base import DatasetError, DatasetInfo, default_root
from ssconv.data.transforms import Augment

__all__ = ["build_dataset", "dataset_info", "list_datasets", "register_dataset"]

logger = logging.getLogger(__name__)

Builder = Callable[..., tuple[Dataset, DatasetInfo]]
InfoFn = Callable[[str | None, int | None], DatasetInfo]


@dataclass(frozen=True)
class _Entry:
    build: Builder
    info: InfoFn
    arg: str | None  # the argument's metavar, e.g. "PATH"; None: takes none
    arg_required: bool
    usage: str
    options: frozenset[str]  # the optional keywords the builder takes (in_channels, ...)


_DATASETS: dict[str, _Entry] = {}
_OPTIONS = frozenset({"in_channels", "skip_bad_images"})

# Spellings people type, mapped to the registered names.
_ALIASES = {
    "cifar_10": "cifar10",
    "cifar_100": "cifar100",
    "fashionmnist": "fashion_mnist",
    "fmnist": "fashion_mnist",
    "tinyimagenet": "tiny_imagenet",
    "tiny_imagenet_200": "tiny_imagenet",
    "imagefolder": "folder",
    "image_folder": "folder",
}


def register_dataset(
    name: str,
    *,
    info: InfoFn,
    arg: str | None = None,
    arg_required: bool = False,
    usage: str = "",
    options: tuple[str, ...] = (),
) -> Callable[[Builder], Builder]:
    """Register ``fn(arg, *, root, train, download, augment, size, normalize)``.

    Args:
        name: the base name (``folder`` for ``folder:PATH``).
        info: ``info(arg, size) -> DatasetInfo``, what is known before reading data.
        arg: metavar of the ``:ARG`` suffix the name accepts, or None.
        arg_required: whether the suffix must be given.
        usage: one line shown by :func:`list_datasets` users and in errors.
        options: the keywords of :func:`build_dataset` the builder also takes, of
            ``in_channels`` and ``skip_bad_images``; the others are not passed to it.
    """
    unknown = set(options) - _OPTIONS
    if unknown:
        raise ValueError(f"unknown dataset options {sorted(unknown)}; known: {sorted(_OPTIONS)}")

    def decorate(fn: Builder) -> Builder:
        if name in _DATASETS:
            raise ValueError(f"dataset {name!r} is already registered")
        _DATASETS[name] = _Entry(fn, info, arg, arg_required, usage, frozenset(options))
        return fn

    return decorate


def _forms() -> str:
    return ", ".join(
        f"{n}:{e.arg}" if e.arg_required else (f"{n}[:{e.arg}]" if e.arg else n)
        for n, e in sorted(_DATASETS.items())
    )


def _parse(name: str) -> tuple[str, _Entry, str | None]:
    if not isinstance(name, str) or not name.strip():
        raise DatasetError(f"dataset name must be a non-empty string, got {name!r}")
    base, sep, arg = name.strip().partition(":")
    key = base.lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in _DATASETS:
        close = difflib.get_close_matches(key, list(_DATASETS) + list(_ALIASES), n=3, cutoff=0.5)
        close = list(dict.fromkeys(_ALIASES.get(c, c) for c in close))
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise DatasetError(f"unknown dataset {name!r}{hint} (valid names: {_forms()})")
    entry = _DATASETS[key]
    if sep and entry.arg is None:
        raise DatasetError(f"dataset {key!r} takes no ':' argument, got {name!r}")
    if entry.arg_required and not arg:
        raise DatasetError(f"dataset {key!r} needs an argument: {key}:{entry.arg} ({entry.usage})")
    return key, entry, (arg if sep else None)


def _check_size(size: int | None) -> None:
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise DatasetError(f"size must be a positive integer or None, got {size!r}")


def list_datasets(pattern: str = "*") -> list[str]:
    """Registered dataset base names matching a shell-style ``pattern``, sorted.

    ``folder`` is used as ``folder:PATH``; ``synthetic`` also as ``synthetic:C:H:W:CLASSES``.
    """
    return sorted(n for n in _DATASETS if fnmatch.fnmatchcase(n, pattern))


def dataset_usage() -> dict[str, str]:
    """Each registered base name with a one-line description of its form, for help texts."""
    return {n: e.usage for n, e in sorted(_DATASETS.items())}


def dataset_info(name: str, *, size: int | None = None) -> DatasetInfo:
    """What is known about a dataset without reading its data.

    Sizes and class names that depend on the files may be ``None`` (ImageNet, Tiny-ImageNet);
    ``folder:PATH`` lists its class folders (no images are read) to count the classes.
    """
    _check_size(size)
    _, entry, arg = _parse(name)
    return entry.info(arg, size)


def build_dataset(
    name: str,
    *,
    root: str | Path | None = None,
    train: bool,
    download: bool = False,
    augment: bool | Augment | None = None,
    size: int | None = None,
    normalize: bool = True,
    in_channels: int | None = None,
    skip_bad_images: bool = False,
) -> tuple[Dataset, DatasetInfo]:
    """Build the training or test split of a dataset with its standard preprocessing.

    Args:
        name: a name from :func:`list_datasets`, e.g. ``cifar10``, ``fashion_mnist``,
            ``embedded``, ``tiny_imagenet``, ``imagenet``, ``folder:PATH``, ``synthetic`` or
            ``synthetic:C:H:W:CLASSES``.
        root: the folder that holds the datasets (default: ``$SSCONV_DATA``, else ``./data``).
            Not used by ``embedded``, ``synthetic`` and ``folder:PATH``.
        train: the training split (else the test split; Tiny-ImageNet and ImageNet: val).
        download: fetch the data into ``root`` if missing (CIFAR, Fashion-MNIST only).
        augment: random crop + flip (default: on for the training split); an
            :class:`~ssconv.data.transforms.Augment` turns the flip off or sets the padding.
        size: image side; the images are resized when it differs from the dataset's own.
        normalize: end with ``Normalize(info.mean, info.std)``; off gives tensors in [0, 1].
        in_channels: image channels, 1 (grey) or 3; ``folder:PATH`` converts its images to
            them (default: 1 when every image is grey, else 3); the other datasets have fixed
            channels and refuse a different number.
        skip_bad_images: ``folder:PATH`` leaves out the files that cannot be decoded (logged
            with their count) instead of refusing the folder; the other datasets ignore it.

    Returns:
        ``(dataset, info)``: items are ``(image tensor (C, H, W), int label)``.

    Raises:
        DatasetError: unknown name, or the data is missing or corrupt; the message names the
            file or folder and says what to do.
    """
    _check_size(size)
    key, entry, arg = _parse(name)
    root_path = Path(root).expanduser() if root is not None else default_root()
    if augment is None:
        augment = bool(train)
    elif not isinstance(augment, Augment):
        augment = bool(augment)
    given = {"in_channels": in_channels, "skip_bad_images": bool(skip_bad_images)}
    dataset, info = entry.build(
        arg,
        root=root_path,
        train=bool(train),
        download=bool(download),
        augment=augment,
        size=size,
        normalize=bool(normalize),
        **{k: v for k, v in given.items() if k in entry.options},
    )
    if in_channels is not None and info.in_channels != in_channels:
        raise DatasetError(
            f"in_channels: {info.name} has {info.in_channels}-channel images, not "
            f"{in_channels}; only folder:PATH datasets convert their images (leave "
            "in_channels unset)"
        )
    logger.info(
        "dataset %s (%s split, %d images, %d classes) from %s",
        info.name,
        "train" if train else "test",
        len(dataset),
        info.num_classes,
        info.source,
    )
    return dataset, info
