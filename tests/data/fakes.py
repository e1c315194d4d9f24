"""Small fake copies of the datasets in their real on-disk formats, written independently of
ssconv's own readers (so a reader bug cannot hide behind a matching writer bug).
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image


def pixels(n: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


# ----------------------------------------------------------------------------- CIFAR


def _pickle(path: Path, obj: dict) -> None:
    # The real files are Python 2 pickles with str keys; torchvision loads them with
    # encoding="latin1", which gives str keys ("data", "labels"), so str keys are faithful.
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def make_cifar10(root: Path, per_batch: int = 4, n_test: int = 3) -> Path:
    """``root/cifar-10-batches-py`` with data_batch_1..5, test_batch and batches.meta."""
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    for i in range(1, 6):
        labels = [(i + j) % 10 for j in range(per_batch)]
        _pickle(base / f"data_batch_{i}", {"data": pixels(per_batch, (3072,), i), "labels": labels})
    _pickle(base / "test_batch", {"data": pixels(n_test, (3072,), 9), "labels": [9, 0, 1][:n_test]})
    names = ["airplane", "automobile", "bird", "cat", "deer"]
    names += ["dog", "frog", "horse", "ship", "truck"]
    _pickle(base / "batches.meta", {"label_names": names, "num_vis": 3072})
    return base


def make_cifar100(root: Path, n_train: int = 6, n_test: int = 2) -> Path:
    """``root/cifar-100-python`` with train, test (fine and coarse labels) and meta."""
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    for name, n, seed in (("train", n_train, 1), ("test", n_test, 2)):
        fine = [(7 * k) % 100 for k in range(n)]
        _pickle(
            base / name,
            {"data": pixels(n, (3072,), seed), "fine_labels": fine, "coarse_labels": [0] * n},
        )
    _pickle(
        base / "meta",
        {
            "fine_label_names": [f"fine{k}" for k in range(100)],
            "coarse_label_names": [f"coarse{k}" for k in range(20)],
        },
    )
    return base


# ----------------------------------------------------------------------------- IDX


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim)
    return header + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def make_fashion(folder: Path, n_train: int = 20, n_test: int = 10, gz: bool = True) -> Path:
    """The four Fashion-MNIST IDX files (labels cycle through 0..9)."""
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = pixels(n, (28, 28), n)
        labels = (np.arange(n) % 10).astype(np.uint8)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            raw = idx_bytes(array)
            name = f"{prefix}-{kind}-ubyte"
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
            else:
                (folder / name).write_bytes(raw)
    return folder


# ----------------------------------------------------------------------------- image trees


def jpeg(path: Path, size: tuple[int, int], value: int, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = value if mode == "L" else (value, 255 - value, 128)
    Image.new(mode, size, colour).save(path, "JPEG")


TINY_WNIDS = ["n02", "n01", "n03"]  # wnids.txt is not sorted in the real dataset either


def make_tiny_imagenet(root: Path, per_class: int = 2) -> Path:
    """``root/tiny-imagenet-200`` with 3 classes; val labels only in val_annotations.txt."""
    base = root / "tiny-imagenet-200"
    base.mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(TINY_WNIDS) + "\n")
    (base / "words.txt").write_text(
        "n01\tgoldfish, Carassius auratus\nn02\tEuropean fire salamander\n"
        "n03\tbullfrog, Rana catesbeiana\nn99\tunused class\n"
    )
    for w in TINY_WNIDS:
        for k in range(per_class):
            # One grey JPEG: Tiny-ImageNet has some, and they must come out as 3 channels.
            path = base / "train" / w / "images" / f"{w}_{k}.JPEG"
            jpeg(path, (64, 64), 40 * k, "L" if k else "RGB")
        (base / "train" / w / f"{w}_boxes.txt").write_text(f"{w}_0.JPEG\t0\t0\t63\t63\n")
    lines = []
    for k, w in enumerate(["n03", "n01", "n02", "n03"]):
        jpeg(base / "val" / "images" / f"val_{k}.JPEG", (64, 64), 60 * k)
        lines.append(f"val_{k}.JPEG\t{w}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    (base / "test" / "images").mkdir(parents=True)
    return base


def make_image_tree(folder: Path, classes: list[str], per_class: int, size=(40, 30)) -> Path:
    for c in classes:
        for k in range(per_class):
            jpeg(folder / c / f"{c}_{k}.JPEG", size, 30 * k)
    return folder


def png(path: Path, size: tuple[int, int], seed: int, mode: str = "RGB") -> Path:
    """A PNG of random pixels (incompressible: a cut copy of it is truly truncated)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    Image.fromarray(pixels(1, shape, seed)[0]).save(path, "PNG")  # 2-D: L, else RGB
    return path


def add_bad_images(folder: Path) -> tuple[Path, Path]:
    """A garbage file named ``fake.png`` and a PNG cut in half, in ``folder``."""
    fake = folder / "fake.png"
    fake.parent.mkdir(parents=True, exist_ok=True)
    fake.write_bytes(b"this is not an image\n" * 8)
    data = png(folder / "whole.png", (24, 24), 5).read_bytes()
    (folder / "whole.png").unlink()
    cut = folder / "cut.png"
    cut.write_bytes(data[: len(data) // 2])
    return fake, cut
