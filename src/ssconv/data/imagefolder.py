"""Datasets stored as image files: Tiny-ImageNet-200, ImageNet (ILSVRC-2012, Russakovsky et al.,
arXiv:1409.0575) and any ``ImageFolder`` tree (``folder:PATH``).

None of them can be downloaded automatically; when one is missing or laid out differently, the
error names the folder and shows the layout it expects.

A ``folder:PATH`` tree is verified before it is used (:mod:`ssconv.data.verify`): every image
is decoded once (then cached), unreadable files are listed by path, or left out with
``skip_bad_images=True``; a folder of grey images gives one-channel tensors. An image that fails
to decode later anyway raises :class:`DatasetError` naming it (all three datasets).
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import replace
from pathlib import Path

from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.datasets.vision import StandardTransform

from ssconv.data.base import DatasetError, DatasetInfo, ImageListDataset, pil_loader
from ssconv.data.registry import register_dataset
from ssconv.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Augment,
    imagenet_transform,
    small_image_transform,
)
from ssconv.data.verify import ImageCheck, is_grey, verify_images

__all__ = ["IMAGENET_INFO", "TINY_IMAGENET_INFO", "TINY_IMAGENET_URL"]

logger = logging.getLogger(__name__)

TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
#: ImageNet's statistics averaged over the channels, for folders of grey images.
GREY_MEAN = (0.449,)
GREY_STD = (0.226,)

# Tiny-ImageNet is a subset of ImageNet and is normalized with ImageNet's statistics.
TINY_IMAGENET_INFO = DatasetInfo(
    name="tiny_imagenet",
    num_classes=200,
    input_size=(3, 64, 64),
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    train_size=100_000,
    test_size=10_000,
    description="Tiny-ImageNet-200: 64x64 colour images, 200 classes (ROOT/tiny-imagenet-200)",
)
IMAGENET_INFO = DatasetInfo(
    name="imagenet",
    num_classes=1000,
    input_size=(3, 224, 224),
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    train_size=1_281_167,
    test_size=50_000,
    description="ImageNet ILSVRC-2012 as ImageFolder trees ROOT/train and ROOT/val",
)

_TINY_LAYOUT = (
    "expected tiny-imagenet-200/{wnids.txt, words.txt, train/<wnid>/images/*.JPEG, "
    "val/images/*.JPEG, val/val_annotations.txt}"
)
_TINY_GET = f"download {TINY_IMAGENET_URL} and unzip it into the data root (no automatic download)"
_IMAGENET_LAYOUT = (
    "expected ROOT/train/<wnid>/*.JPEG and ROOT/val/<wnid>/*.JPEG (one folder per class in "
    "both); get ILSVRC-2012 from https://image-net.org (it cannot be downloaded automatically) "
    "and sort the validation images into class folders, e.g. with the widely used valprep.sh "
    "script or torchvision.datasets.ImageNet(ROOT, split='val'), which does it from "
    "ILSVRC2012_devkit_t12.tar.gz"
)


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS)


def _class_folders(folder: Path, what: str, layout: str) -> list[str]:
    """Class folder names of an ImageFolder tree, sorted as ImageFolder sorts them."""
    if not folder.is_dir():
        raise DatasetError(f"{what}: folder {folder} not found; {layout}")
    with os.scandir(folder) as it:
        entries = list(it)
    classes = sorted(e.name for e in entries if e.is_dir())
    if not classes:
        flat = sum(1 for e in entries if e.is_file() and _is_image(e.name))
        if flat:
            raise DatasetError(
                f"{what}: {folder} holds {flat} images directly instead of one folder per class "
                f"({folder}/<class>/<image>), so their labels are unknown; {layout}"
            )
        raise DatasetError(f"{what}: {folder} has no class folders; {layout}")
    return classes


def _same_classes(a: list[str], b: list[str], da: Path, db: Path, what: str) -> None:
    if a != b:
        only_a = sorted(set(a) - set(b))[:3]
        only_b = sorted(set(b) - set(a))[:3]
        raise DatasetError(
            f"{what}: {da} and {db} have different class folders ({len(a)} vs {len(b)}; only in "
            f"the first: {only_a}, only in the second: {only_b}); labels would not match"
        )


def _image_folder(folder: Path, transform, what: str, mode: str = "RGB") -> ImageFolder:
    loader = functools.partial(pil_loader, mode=mode)  # errors name the file
    try:
        return ImageFolder(str(folder), transform=transform, loader=loader)
    except FileNotFoundError as e:  # a class folder without images
        raise DatasetError(f"{what}: {folder}: {e}") from e


# ----------------------------------------------------------------------------- Tiny-ImageNet


def _tiny_root(root: Path) -> Path:
    for candidate in (root / "tiny-imagenet-200", root):
        if (candidate / "wnids.txt").is_file():
            return candidate
    raise DatasetError(
        f"tiny_imagenet: {root / 'tiny-imagenet-200' / 'wnids.txt'} not found; {_TINY_LAYOUT}; "
        f"{_TINY_GET}"
    )


def _read_lines(path: Path) -> list[str]:
    try:
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError as e:
        raise DatasetError(f"tiny_imagenet: {path} not found; {_TINY_LAYOUT}; {_TINY_GET}") from e


def _tiny_names(base: Path, wnids: list[str]) -> tuple[str, ...]:
    """Readable class names from words.txt (its first synonym), else the wnids."""
    words: dict[str, str] = {}
    path = base / "words.txt"
    if path.is_file():
        for line in path.read_text().splitlines():
            wnid, _, text = line.partition("\t")
            words[wnid.strip()] = text.split(",")[0].strip()
    return tuple(words.get(w) or w for w in wnids)


def _tiny_samples(base: Path, wnids: list[str], train: bool) -> list[tuple[str, int]]:
    index = {w: i for i, w in enumerate(wnids)}
    samples: list[tuple[str, int]] = []
    if train:
        for wnid in wnids:
            folder = base / "train" / wnid / "images"
            if not folder.is_dir():
                raise DatasetError(
                    f"tiny_imagenet: {folder} not found (class {wnid} of wnids.txt); "
                    f"{_TINY_LAYOUT}; {_TINY_GET}"
                )
            files = sorted(n for n in os.listdir(folder) if _is_image(n))
            if not files:
                raise DatasetError(f"tiny_imagenet: {folder} holds no images; {_TINY_GET}")
            samples += [(str(folder / n), index[wnid]) for n in files]
        return samples
    # The validation images sit in one folder; their labels are in val_annotations.txt
    # (file name, wnid, bounding box; tab-separated).
    folder = base / "val" / "images"
    annotations = base / "val" / "val_annotations.txt"
    if not folder.is_dir():
        raise DatasetError(f"tiny_imagenet: {folder} not found; {_TINY_LAYOUT}; {_TINY_GET}")
    present = set(os.listdir(folder))
    missing: list[str] = []
    for number, line in enumerate(_read_lines(annotations), 1):
        fields = line.split("\t") if "\t" in line else line.split()
        if len(fields) < 2:
            raise DatasetError(
                f"tiny_imagenet: {annotations} line {number} is malformed ({line!r}); "
                f"expected '<file>\\t<wnid>\\t<x0>\\t<y0>\\t<x1>\\t<y1>'; {_TINY_GET}"
            )
        name, wnid = fields[0], fields[1]
        if wnid not in index:
            raise DatasetError(
                f"tiny_imagenet: {annotations} line {number}: class {wnid!r} is not in "
                f"{base / 'wnids.txt'}; {_TINY_GET}"
            )
        if name not in present:
            missing.append(name)
        samples.append((str(folder / name), index[wnid]))
    if missing:
        raise DatasetError(
            f"tiny_imagenet: {folder / missing[0]} (and {len(missing) - 1} more listed in "
            f"{annotations.name}) not found; {_TINY_GET}"
        )
    if not samples:
        raise DatasetError(f"tiny_imagenet: {annotations} lists no images; {_TINY_GET}")
    return samples


def _tiny_info(arg: str | None, size: int | None) -> DatasetInfo:
    return replace(TINY_IMAGENET_INFO, input_size=(3, size, size)) if size else TINY_IMAGENET_INFO


@register_dataset(
    "tiny_imagenet",
    info=_tiny_info,
    usage="Tiny-ImageNet-200 in ROOT/tiny-imagenet-200 (no download)",
)
def build_tiny_imagenet(
    arg: str | None,
    *,
    root: Path,
    train: bool,
    download: bool,
    augment: bool | Augment,
    size: int | None,
    normalize: bool,
) -> tuple[ImageListDataset, DatasetInfo]:
    base = _tiny_root(root)
    wnids = sorted(_read_lines(base / "wnids.txt"))
    if len(set(wnids)) != len(wnids):
        raise DatasetError(f"tiny_imagenet: {base / 'wnids.txt'} lists a class twice")
    samples = _tiny_samples(base, wnids, train)
    transform = small_image_transform(
        native=64,
        size=size,
        padding=4,
        augment=augment,
        mean=TINY_IMAGENET_INFO.mean,
        std=TINY_IMAGENET_INFO.std,
        normalize=normalize,
    )
    ds = ImageListDataset(samples, wnids, transform)
    size = size or 64
    return ds, replace(
        TINY_IMAGENET_INFO,
        num_classes=len(wnids),
        input_size=(3, size, size),
        classes=_tiny_names(base, wnids),
        train_size=len(ds) if train else TINY_IMAGENET_INFO.train_size,
        test_size=TINY_IMAGENET_INFO.test_size if train else len(ds),
        source=str(base),
    )


# ----------------------------------------------------------------------------- ImageNet


def _imagenet_root(root: Path) -> Path:
    nested = root / "imagenet"
    if (nested / "train").is_dir() or (nested / "val").is_dir():
        return nested
    return root


def _imagenet_info(arg: str | None, size: int | None) -> DatasetInfo:
    return replace(IMAGENET_INFO, input_size=(3, size, size)) if size else IMAGENET_INFO


@register_dataset(
    "imagenet",
    info=_imagenet_info,
    usage="ImageNet ILSVRC-2012: ROOT/train and ROOT/val in class folders (no download)",
)
def build_imagenet(
    arg: str | None,
    *,
    root: Path,
    train: bool,
    download: bool,
    augment: bool | Augment,
    size: int | None,
    normalize: bool,
) -> tuple[ImageFolder, DatasetInfo]:
    base = _imagenet_root(root)
    train_dir, val_dir = base / "train", base / "val"
    folder = train_dir if train else val_dir
    classes = _class_folders(folder, "imagenet", _IMAGENET_LAYOUT)
    if not train and train_dir.is_dir():
        _same_classes(
            _class_folders(train_dir, "imagenet", _IMAGENET_LAYOUT),
            classes,
            train_dir,
            val_dir,
            "imagenet",
        )
    size = size or 224
    transform = imagenet_transform(size=size, augment=augment, normalize=normalize)
    ds = _image_folder(folder, transform, "imagenet")
    return ds, replace(
        IMAGENET_INFO,
        num_classes=len(ds.classes),
        input_size=(3, size, size),
        classes=tuple(ds.classes),
        train_size=len(ds) if train else IMAGENET_INFO.train_size,
        test_size=IMAGENET_INFO.test_size if train else len(ds),
        source=str(folder),
    )


# ----------------------------------------------------------------------------- folder:PATH

_FOLDER_LAYOUT = (
    "expected PATH/train/<class>/<image> and PATH/val/<class>/<image> (or PATH/test), "
    "or PATH/<class>/<image>"
)


#: Unreadable files listed by name in an error; the rest are counted.
_LISTED = 8


def _folder_dirs(path: Path) -> tuple[Path, Path]:
    """The training and test folders of ``folder:PATH`` (the same folder when it has no
    separate splits)."""
    if not path.is_dir():
        raise DatasetError(f"folder: {path} not found; {_FOLDER_LAYOUT}")
    train = path / "train"
    test = next((path / n for n in ("val", "test") if (path / n).is_dir()), None)
    if train.is_dir() and test is not None:
        return train, test
    if test is not None:
        raise DatasetError(f"folder: {path} has {test.name}/ but no train/; {_FOLDER_LAYOUT}")
    both = train if train.is_dir() else path
    return both, both


def _folder_info(arg: str | None, size: int | None) -> DatasetInfo:
    path = Path(arg or "").expanduser()
    train_dir, _ = _folder_dirs(path)
    classes = _class_folders(train_dir, f"folder:{arg}", _FOLDER_LAYOUT)
    size = size or 32
    return DatasetInfo(
        name=f"folder:{arg}",
        num_classes=len(classes),
        input_size=(3, size, size),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        classes=tuple(classes),
        description=f"ImageFolder tree {path}, resized to {size}x{size}",
    )


def _bad_files_error(what: str, bad: list[ImageCheck], total: int) -> DatasetError:
    lines = [f"  {c.path}: {c.error}" for c in bad[:_LISTED]]
    if len(bad) > _LISTED:
        lines.append(f"  ... and {len(bad) - _LISTED} more")
    return DatasetError(
        f"{what}: {len(bad)} of {total} image files cannot be read:\n"
        + "\n".join(lines)
        + "\nremove or replace them, or leave them out with skip_bad_images=True "
        "(`ssconv train --skip-bad-images`)"
    )


def _skip_bad(ds: ImageFolder, checks: list[ImageCheck], what: str, folder: Path, quiet: bool):
    """Drop the unreadable files from ``ds`` and say how many."""
    bad = {c.path for c in checks if not c.ok}
    if not bad:
        return
    total = len(ds.samples)
    ds.samples = [s for s in ds.samples if s[0] not in bad]
    ds.imgs = ds.samples
    ds.targets = [t for _, t in ds.samples]
    names = ", ".join(os.path.relpath(p, folder) for p in sorted(bad)[:_LISTED])
    more = f" and {len(bad) - _LISTED} more" if len(bad) > _LISTED else ""
    empty = sorted(set(ds.classes) - {ds.classes[t] for t in ds.targets})
    log = logger.info if quiet else logger.warning
    log(
        "%s: skipped %d unreadable image file(s) of %d in %s (skip_bad_images): %s%s%s",
        what,
        len(bad),
        total,
        folder,
        names,
        more,
        f"; no image left in class(es) {empty}" if empty else "",
    )
    if not ds.samples:
        raise DatasetError(f"{what}: no readable image in {folder}")


@register_dataset(
    "folder",
    info=_folder_info,
    arg="PATH",
    arg_required=True,
    options=("in_channels", "skip_bad_images"),
    usage="any ImageFolder tree: PATH/{train,val}/<class>/<image> or PATH/<class>/<image>; "
    "images verified once before use, resized to --size (default 32); grey folders give "
    "1 channel",
)
def build_folder(
    arg: str | None,
    *,
    root: Path,
    train: bool,
    download: bool,
    augment: bool | Augment,
    size: int | None,
    normalize: bool,
    in_channels: int | None = None,
    skip_bad_images: bool = False,
) -> tuple[ImageFolder, DatasetInfo]:
    """Both splits are verified together (one error lists every unreadable file); the channels
    are 1 when every image of both is grey, unless ``in_channels`` says."""
    what = f"folder:{arg}"
    path = Path(arg or "").expanduser()
    if in_channels not in (None, 1, 3):
        raise DatasetError(f"in_channels: expected 1 (grey) or 3 (colour), got {in_channels!r}")
    train_dir, test_dir = _folder_dirs(path)
    shared = test_dir == train_dir
    if shared and not train:
        logger.warning(
            "%s has no separate train/ and val/ (or test/) folders: the test split is the "
            "training images of %s, so test accuracy is not measured on held-out images",
            what,
            train_dir,
        )
    folder = train_dir if train else test_dir
    classes = _class_folders(folder, what, _FOLDER_LAYOUT)
    other = None
    if not shared:
        other_dir = test_dir if train else train_dir
        pair = (classes, _class_folders(other_dir, what, _FOLDER_LAYOUT))
        _same_classes(*(pair if train else pair[::-1]), train_dir, test_dir, what)
        other = _image_folder(other_dir, None, what)
    ds = _image_folder(folder, None, what)
    paths = [p for p, _ in ds.samples]
    checks = verify_images(
        paths + ([p for p, _ in other.samples] if other is not None else []),
        folder=path,
        what=what,
    )
    bad = [c for c in checks if not c.ok]
    if bad and not skip_bad_images:
        raise _bad_files_error(what, bad, len(checks))
    if in_channels is None:
        in_channels = 1 if is_grey(checks) else 3
    _skip_bad(ds, checks[: len(paths)], what, folder, quiet=shared and not train)
    grey = in_channels == 1
    mean, std = (GREY_MEAN, GREY_STD) if grey else (IMAGENET_MEAN, IMAGENET_STD)
    ds.loader = functools.partial(pil_loader, mode="L" if grey else "RGB")
    size = size or 32
    ds.transform = small_image_transform(
        native=size,
        size=size,
        padding=max(1, size // 8),
        augment=augment,
        mean=mean,
        std=std,
        normalize=normalize,
        resize=True,
    )
    ds.transforms = StandardTransform(ds.transform)  # what ImageFolder(transform=) also sets
    info = _folder_info(arg, size)
    return ds, replace(
        info,
        input_size=(in_channels, size, size),
        mean=mean,
        std=std,
        train_size=len(ds) if train else None,
        test_size=None if train else len(ds),
        source=str(folder),
        description=info.description + (", grey (1 channel)" if grey else ""),
    )
