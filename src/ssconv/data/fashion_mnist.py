"""Fashion-MNIST (Xiao, Rasul, Vollgraf, "Fashion-MNIST: a Novel Image Dataset for Benchmarking
Machine Learning Algorithms", arXiv:1708.07747) and the small subset shipped inside ssconv.

The full dataset is read, in this order, from ``ROOT/FashionMNIST/raw`` (torchvision's layout)
or ``ROOT`` itself when they hold the IDX files, from the Debian package
``dataset-fashion-mnist`` (found with ``dpkg -L``), or downloaded by torchvision into ``ROOT``
with ``download=True``. ``embedded`` reads the subset under ``ssconv/data/embedded`` (made by
``scripts/make_embedded_subset.py``), so it needs neither the network nor the package.
"""

from __future__ import annotations

import gzip
import logging
import subprocess
import zlib
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ssconv.data.base import DatasetError, DatasetInfo, TensorImageDataset
from ssconv.data.idx import parse_idx, read_idx
from ssconv.data.registry import register_dataset
from ssconv.data.transforms import small_image_transform

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = [
    "EMBEDDED_INFO",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_INFO",
    "debian_fashion_mnist_dir",
    "load_fashion_mnist_arrays",
]

logger = logging.getLogger(__name__)

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

# Mean and standard deviation over all pixels of the 60,000 training images.
FASHION_MNIST_INFO = DatasetInfo(
    name="fashion_mnist",
    num_classes=10,
    input_size=(1, 28, 28),
    mean=(0.2860,),
    std=(0.3530,),
    train_size=60_000,
    test_size=10_000,
    classes=FASHION_MNIST_CLASSES,
    description="Fashion-MNIST: 28x28 grey images, 10 classes (Debian package "
    "dataset-fashion-mnist, or torchvision with --download)",
    downloadable=True,
)
# Normalized with the full training set's statistics, so that models move between the two.
EMBEDDED_INFO = replace(
    FASHION_MNIST_INFO,
    name="embedded",
    train_size=5_000,
    test_size=1_000,
    description="a class-balanced 6,000-image subset of Fashion-MNIST shipped with ssconv "
    "(no download)",
    downloadable=False,
)

DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
_EMBEDDED = "embedded"  # folder inside the ssconv.data package
_PREFIX = {True: "train", False: "t10k"}


def _file_names(train: bool) -> tuple[str, str]:
    p = _PREFIX[train]
    return f"{p}-images-idx3-ubyte", f"{p}-labels-idx1-ubyte"


def debian_fashion_mnist_dir() -> Path | None:
    """The folder of the Debian package's IDX files, or None when it is not installed.

    Asks ``dpkg -L dataset-fashion-mnist``; without dpkg (or if it fails) falls back to
    ``/usr/share/datasets/fashion-mnist`` when that holds the training images.
    """
    try:
        out = subprocess.run(
            ["dpkg", "-L", DEBIAN_PACKAGE],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as e:
        logger.debug("dpkg -L %s failed: %s", DEBIAN_PACKAGE, e)
    else:
        if out.returncode == 0:
            for line in out.stdout.splitlines():
                if line.strip().endswith("/train-images-idx3-ubyte.gz"):
                    return Path(line.strip()).parent
    if (DEBIAN_DIR / "train-images-idx3-ubyte.gz").is_file():
        return DEBIAN_DIR
    return None


def _find(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _holds_any(folder: Path) -> bool:
    return any(_find(folder, s) for t in (True, False) for s in _file_names(t))


def _validated(images: np.ndarray, labels: np.ndarray, source: str, hint: str) -> None:
    if images.shape[1:] != (28, 28):
        raise DatasetError(f"{source}: images are {images.shape[1:]}, expected 28x28; {hint}")
    if len(images) != len(labels):
        raise DatasetError(
            f"{source}: {len(images)} images but {len(labels)} labels; the two files do not "
            f"belong together; {hint}"
        )
    if len(labels) and labels.max() >= 10:
        raise DatasetError(f"{source}: label {int(labels.max())} out of range 0..9; {hint}")


def load_fashion_mnist_arrays(
    folder: str | Path, *, train: bool, hint: str = ""
) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 (N, 28, 28), labels uint8 (N,))`` from the IDX files in ``folder``.

    The files may be gzip-compressed (``*.gz``) or not. Raises :class:`DatasetError` naming
    the file when one is missing, truncated or not IDX.
    """
    folder = Path(folder)
    arrays = []
    for stem, ndim in zip(_file_names(train), (3, 1)):
        path = _find(folder, stem)
        if path is None:
            raise DatasetError(f"{folder / stem}(.gz): file not found; {hint}")
        arrays.append(read_idx(path, ndim=ndim, hint=hint))
    images, labels = arrays
    _validated(images, labels, str(folder), hint)
    return images, labels


def _transform(augment: bool, size: int | None, normalize: bool):
    return small_image_transform(
        native=28,
        size=size,
        padding=2,
        augment=augment,
        mean=FASHION_MNIST_INFO.mean,
        std=FASHION_MNIST_INFO.std,
        normalize=normalize,
    )


def _with(info: DatasetInfo, n: int, train: bool, size: int | None, source: str) -> DatasetInfo:
    return replace(
        info,
        input_size=(1, size or 28, size or 28),
        train_size=n if train else info.train_size,
        test_size=info.test_size if train else n,
        source=source,
    )


def _locate(root: Path, download: bool) -> tuple[Path, str]:
    """The folder to read and the advice to give if its files are bad."""
    redownload = (
        "get a fresh copy: delete the damaged or partial files and rerun with download=True "
        f"(`--download`), or install the Debian package {DEBIAN_PACKAGE}"
    )
    for folder in (root / "FashionMNIST" / "raw", root):
        if _holds_any(folder):
            return folder, redownload
    debian = debian_fashion_mnist_dir()
    if debian is not None:
        return debian, f"reinstall it: `sudo apt-get install --reinstall {DEBIAN_PACKAGE}`"
    if not download:
        raise DatasetError(
            f"fashion_mnist: no data found in {root / 'FashionMNIST' / 'raw'} or {root}, and the "
            f"Debian package {DEBIAN_PACKAGE} is not installed; install it "
            f"(`sudo apt-get install {DEBIAN_PACKAGE}`), pass download=True (`--download`), "
            "or copy train-images-idx3-ubyte.gz and the three other IDX files there; the "
            "bundled subset `embedded` needs no download"
        )
    from torchvision.datasets import FashionMNIST

    try:
        FashionMNIST(str(root), train=True, download=True)
    except Exception as e:  # network and checksum failures come as several types
        raise DatasetError(
            f"fashion_mnist: download into {root / 'FashionMNIST' / 'raw'} failed ({e}); "
            f"install the Debian package {DEBIAN_PACKAGE} or copy the IDX files there"
        ) from e
    return root / "FashionMNIST" / "raw", redownload


def _info(info: DatasetInfo):
    def get(arg: str | None, size: int | None) -> DatasetInfo:
        return replace(info, input_size=(1, size, size)) if size else info

    return get


@register_dataset(
    "fashion_mnist",
    info=_info(FASHION_MNIST_INFO),
    usage="Fashion-MNIST: Debian package dataset-fashion-mnist, ROOT, or --download",
)
def build_fashion_mnist(
    arg: str | None,
    *,
    root: Path,
    train: bool,
    download: bool,
    augment: bool,
    size: int | None,
    normalize: bool,
) -> tuple[TensorImageDataset, DatasetInfo]:
    folder, hint = _locate(root, download)
    images, labels = load_fashion_mnist_arrays(folder, train=train, hint=hint)
    transform = _transform(augment, size, normalize)
    ds = TensorImageDataset(images, labels, FASHION_MNIST_CLASSES, transform)
    return ds, _with(FASHION_MNIST_INFO, len(ds), train, size, str(folder))


def embedded_files() -> Traversable:
    """The folder of the embedded subset inside the installed package."""
    return resources.files("ssconv.data").joinpath(_EMBEDDED)


@register_dataset(
    "embedded",
    info=_info(EMBEDDED_INFO),
    usage="6,000 Fashion-MNIST images shipped with ssconv (5,000 train / 1,000 test)",
)
def build_embedded(
    arg: str | None,
    *,
    root: Path,
    train: bool,
    download: bool,
    augment: bool,
    size: int | None,
    normalize: bool,
) -> tuple[TensorImageDataset, DatasetInfo]:
    folder = embedded_files()
    hint = "the ssconv installation is damaged; reinstall ssconv"
    arrays = []
    for stem, ndim in zip(_file_names(train), (3, 1)):
        res = folder.joinpath(f"{stem}.gz")
        source = f"ssconv/data/{_EMBEDDED}/{stem}.gz"
        try:
            raw = gzip.decompress(res.read_bytes())
        except FileNotFoundError as e:
            raise DatasetError(f"{source}: file not found; {hint}") from e
        except (EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise DatasetError(f"{source}: truncated or corrupt gzip file ({e}); {hint}") from e
        arrays.append(parse_idx(raw, source=source, ndim=ndim, hint=hint))
    images, labels = arrays
    _validated(images, labels, f"ssconv/data/{_EMBEDDED}", hint)
    transform = _transform(augment, size, normalize)
    ds = TensorImageDataset(images, labels, FASHION_MNIST_CLASSES, transform)
    return ds, _with(EMBEDDED_INFO, len(ds), train, size, str(folder))
