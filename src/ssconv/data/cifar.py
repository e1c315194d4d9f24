"""CIFAR-10 and CIFAR-100 through torchvision (Krizhevsky, "Learning Multiple Layers of Features
from Tiny Images", 2009), with the augmentation of He et al. (arXiv:1512.03385, Sec. 4.2).

torchvision checks the md5 of every file when it builds the dataset; we keep that check (it is
what catches a truncated copy) and turn its generic ``RuntimeError`` into a :class:`DatasetError`
that names the missing or corrupt file.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from torchvision import datasets
from torchvision.datasets.utils import check_integrity

from ssconv.data.base import DatasetError, DatasetInfo
from ssconv.data.registry import register_dataset
from ssconv.data.transforms import small_image_transform

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

# Per-channel mean and standard deviation over all pixels of the training set.
CIFAR10_INFO = DatasetInfo(
    name="cifar10",
    num_classes=10,
    input_size=(3, 32, 32),
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
    train_size=50_000,
    test_size=10_000,
    classes=CIFAR10_CLASSES,
    description="CIFAR-10: 32x32 colour images, 10 classes (torchvision, --download)",
    downloadable=True,
)
CIFAR100_INFO = DatasetInfo(
    name="cifar100",
    num_classes=100,
    input_size=(3, 32, 32),
    mean=(0.5071, 0.4865, 0.4409),
    std=(0.2673, 0.2564, 0.2762),
    train_size=50_000,
    test_size=10_000,
    description="CIFAR-100: 32x32 colour images, 100 classes (torchvision, --download)",
    downloadable=True,
)


def _build(
    cls: type[datasets.CIFAR10],
    info: DatasetInfo,
    *,
    root: Path,
    train: bool,
    download: bool,
    augment: bool,
    size: int | None,
    normalize: bool,
) -> tuple[datasets.CIFAR10, DatasetInfo]:
    base = root / cls.base_folder
    files = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    get = (
        f"pass download=True (`--download`) to fetch {cls.url}, or extract {cls.filename} "
        f"into {root}"
    )
    if not download:
        if not base.is_dir():
            raise DatasetError(f"{info.name}: folder {base} not found; {get}")
        missing = [f for f in files if not (base / f).is_file()]
        if missing:
            raise DatasetError(f"{info.name}: {base / missing[0]} is missing; {get}")
    transform = small_image_transform(
        native=32,
        size=size,
        padding=4,
        augment=augment,
        mean=info.mean,
        std=info.std,
        normalize=normalize,
    )
    try:
        ds = cls(str(root), train=train, transform=transform, download=download)
    except OSError as e:  # urllib's URLError is an OSError
        raise DatasetError(
            f"{info.name}: could not download {cls.url} into {root} ({e}); download and "
            f"extract {cls.filename} into {root} by hand"
        ) from e
    except RuntimeError as e:
        # torchvision found a file whose md5 differs from the published one.
        checks = [(f, md5) for f, md5 in cls.train_list + cls.test_list]
        checks.append((cls.meta["filename"], cls.meta["md5"]))
        bad = [f for f, md5 in checks if not check_integrity(str(base / f), md5)]
        which = ", ".join(str(base / f) for f in bad) or str(base)
        raise DatasetError(
            f"{info.name}: {which}: missing or corrupt (md5 differs from the published "
            f"checksum); delete {base} and rerun with download=True (`--download`)"
        ) from e
    size = size or 32
    return ds, replace(
        info,
        input_size=(3, size, size),
        classes=tuple(ds.classes),
        train_size=len(ds) if train else info.train_size,
        test_size=info.test_size if train else len(ds),
        source=str(base),
    )


def _info(info: DatasetInfo):
    def get(arg: str | None, size: int | None) -> DatasetInfo:
        return replace(info, input_size=(3, size, size)) if size else info

    return get


@register_dataset(
    "cifar10", info=_info(CIFAR10_INFO), usage="CIFAR-10 via torchvision (use --download)"
)
def build_cifar10(arg: str | None, **kw) -> tuple[datasets.CIFAR10, DatasetInfo]:
    return _build(datasets.CIFAR10, CIFAR10_INFO, **kw)


@register_dataset(
    "cifar100", info=_info(CIFAR100_INFO), usage="CIFAR-100 via torchvision (use --download)"
)
def build_cifar100(arg: str | None, **kw) -> tuple[datasets.CIFAR100, DatasetInfo]:
    return _build(datasets.CIFAR100, CIFAR100_INFO, **kw)
