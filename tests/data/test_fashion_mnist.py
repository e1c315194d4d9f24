"""Fashion-MNIST (IDX files from ROOT, the Debian package, or torchvision's download), the IDX
reader's validation, and the subset shipped in the package (``embedded``)."""

import gzip
import hashlib
import re
import subprocess
import sys
from collections import Counter
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets

import ssconv.data.fashion_mnist as fm
from ssconv.data import DatasetError, build_dataset, read_idx, write_idx

from .fakes import idx_bytes, make_fashion

REPO = Path(__file__).resolve().parents[2]
EMBEDDED = REPO / "src" / "ssconv" / "data" / "embedded"
DEBIAN = fm.debian_fashion_mnist_dir()
needs_debian = pytest.mark.skipif(DEBIAN is None, reason="dataset-fashion-mnist not installed")


@pytest.fixture
def no_debian(monkeypatch):
    """Behave as on a machine without the Debian package."""
    monkeypatch.setattr(fm, "debian_fashion_mnist_dir", lambda: None)


# ----------------------------------------------------------------------------- full dataset


def test_reads_torchvision_layout_under_root(tmp_path):
    folder = make_fashion(tmp_path / "FashionMNIST" / "raw", gz=False)  # torchvision extracts
    train, info = build_dataset("fashion_mnist", root=tmp_path, train=True)
    test, _ = build_dataset("fashion_mnist", root=tmp_path, train=False)
    assert len(train) == 20 and len(test) == 10 and info.source == str(folder)
    assert info.num_classes == 10 and info.input_size == (1, 28, 28) and info.in_channels == 1
    assert info.classes[0] == "T-shirt/top" and info.classes[9] == "Ankle boot"
    assert [test[i][1] for i in range(10)] == list(range(10))
    x, _ = test[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32


def test_reads_gz_files_in_root_itself(tmp_path):
    make_fashion(tmp_path)
    raw, info = build_dataset(
        "fashion_mnist", root=tmp_path, train=True, augment=False, normalize=False
    )
    assert info.source == str(tmp_path)
    expected = np.random.default_rng(20).integers(0, 256, (20, 28, 28), dtype=np.uint8)
    assert torch.equal(raw[3][0][0], torch.from_numpy(expected[3]).float() / 255)


def test_augmentation(tmp_path):
    make_fashion(tmp_path)
    train, _ = build_dataset("fashion_mnist", root=tmp_path, train=True)
    test, _ = build_dataset("fashion_mnist", root=tmp_path, train=False)
    names = [type(t).__name__ for t in train.transform.transforms]
    assert names == ["RandomCrop", "RandomHorizontalFlip", "ToTensor", "Normalize"]
    assert train.transform.transforms[0].padding == 2
    assert [type(t).__name__ for t in test.transform.transforms] == ["ToTensor", "Normalize"]


def test_debian_package_is_found_with_dpkg(tmp_path, monkeypatch):
    listing = f"/.\n{tmp_path}\n{tmp_path}/train-images-idx3-ubyte.gz\n"

    def fake_run(cmd, **kw):
        assert cmd == ["dpkg", "-L", "dataset-fashion-mnist"]
        return subprocess.CompletedProcess(cmd, 0, listing, "")

    monkeypatch.setattr(fm.subprocess, "run", fake_run)
    assert fm.debian_fashion_mnist_dir() == tmp_path


@pytest.mark.parametrize("failure", [FileNotFoundError, "not-installed"])
def test_without_dpkg_falls_back_to_known_path(tmp_path, monkeypatch, failure):
    def fake_run(cmd, **kw):
        if failure == "not-installed":
            return subprocess.CompletedProcess(cmd, 1, "", "package not installed")
        raise failure("dpkg")

    monkeypatch.setattr(fm.subprocess, "run", fake_run)
    monkeypatch.setattr(fm, "DEBIAN_DIR", tmp_path)
    assert fm.debian_fashion_mnist_dir() is None
    make_fashion(tmp_path)
    assert fm.debian_fashion_mnist_dir() == tmp_path
    _, info = build_dataset("fashion_mnist", root=tmp_path / "empty", train=False)
    assert info.source == str(tmp_path)


def test_missing_data_says_what_to_do(tmp_path, no_debian):
    with pytest.raises(DatasetError) as e:
        build_dataset("fashion_mnist", root=tmp_path, train=True)
    msg = str(e.value)
    for part in ("dataset-fashion-mnist", "--download", "embedded", str(tmp_path)):
        assert part in msg


def test_download_goes_through_torchvision(tmp_path, no_debian, monkeypatch):
    calls = []

    class FakeFashionMNIST:
        def __init__(self, root, train=True, download=False):
            calls.append((root, download))
            make_fashion(Path(root) / "FashionMNIST" / "raw", gz=False)

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FakeFashionMNIST)
    ds, info = build_dataset("fashion_mnist", root=tmp_path, train=True, download=True)
    assert calls == [(str(tmp_path), True)] and len(ds) == 20


def test_download_failure_is_a_dataset_error(tmp_path, no_debian, monkeypatch):
    class Offline:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", Offline)
    with pytest.raises(DatasetError, match=r"download into .*FashionMNIST.raw failed"):
        build_dataset("fashion_mnist", root=tmp_path, train=True, download=True)


# ----------------------------------------------------------------------------- bad files


def test_truncated_gz_names_the_file(tmp_path):
    make_fashion(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DatasetError) as e:
        build_dataset("fashion_mnist", root=tmp_path, train=True)
    msg = str(e.value)
    assert str(path) in msg and "truncated or corrupt gzip" in msg and "--download" in msg


def test_bad_magic_number(tmp_path):
    make_fashion(tmp_path)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[3] = 3  # claims 3 dimensions: an image file where labels belong
    path.write_bytes(gzip.compress(bytes(raw)))
    match = r"t10k-labels-idx1-ubyte.gz: bad magic number 00 00 08 03"
    with pytest.raises(DatasetError, match=match):
        build_dataset("fashion_mnist", root=tmp_path, train=False)


def test_short_data_inside_valid_gzip(tmp_path):
    make_fashion(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-5]))
    with pytest.raises(DatasetError, match=r"truncated: its header says shape \(10, 28, 28\)"):
        build_dataset("fashion_mnist", root=tmp_path, train=False)


def test_missing_one_file(tmp_path):
    make_fashion(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match=r"t10k-labels-idx1-ubyte\(\.gz\): file not found"):
        build_dataset("fashion_mnist", root=tmp_path, train=False)


def test_images_and_labels_must_agree(tmp_path):
    make_fashion(tmp_path)
    labels = np.zeros(7, np.uint8)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    with pytest.raises(DatasetError, match=r"20 images but 7 labels"):
        build_dataset("fashion_mnist", root=tmp_path, train=True)


def test_idx_round_trip_is_reproducible(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", a)
    first = (tmp_path / "a.gz").read_bytes()
    write_idx(tmp_path / "a.gz", a)
    assert (tmp_path / "a.gz").read_bytes() == first  # no timestamp in the gzip header
    assert np.array_equal(read_idx(tmp_path / "a.gz", ndim=3), a)
    assert gzip.decompress(first) == idx_bytes(a)
    with pytest.raises(DatasetError, match="not found"):
        read_idx(tmp_path / "missing.gz")


# ----------------------------------------------------------------------------- Debian package


@needs_debian
def test_debian_package_full_dataset():
    train, info = build_dataset("fashion_mnist", root="/nonexistent", train=True, normalize=False)
    test, _ = build_dataset("fashion_mnist", root="/nonexistent", train=False)
    assert len(train) == 60_000 and len(test) == 10_000 and info.source == str(DEBIAN)
    assert Counter(train.targets) == dict.fromkeys(range(10), 6000)
    # The pinned normalization statistics are those of the full training set.
    counts = np.bincount(train.data.ravel(), minlength=256)
    values = np.arange(256) / 255
    mean = (counts * values).sum() / counts.sum()
    std = np.sqrt((counts * (values - mean) ** 2).sum() / counts.sum())
    assert mean == pytest.approx(info.mean[0], abs=5e-5)
    assert std == pytest.approx(info.std[0], abs=5e-5)


@needs_debian
def test_embedded_subset_is_reproducible_from_the_debian_files():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import make_embedded_subset
    finally:
        sys.path.remove(str(REPO / "scripts"))
    for name, array in make_embedded_subset.subset(DEBIAN).items():
        assert np.array_equal(read_idx(EMBEDDED / name), array), name


# ----------------------------------------------------------------------------- embedded


def test_embedded_sizes_and_balance(no_debian):
    train, info = build_dataset("embedded", train=True, normalize=False)
    test, test_info = build_dataset("embedded", train=False, normalize=False)
    assert (len(train), len(test)) == (5000, 1000)
    assert (info.train_size, test_info.test_size) == (5000, 1000)
    assert Counter(train.targets) == dict.fromkeys(range(10), 500)
    assert Counter(test.targets) == dict.fromkeys(range(10), 100)
    assert info.num_classes == 10 and info.input_size == (1, 28, 28)
    assert info.classes == fm.FASHION_MNIST_CLASSES and not info.downloadable
    x = torch.stack([train[i][0] for i in range(0, 5000, 50)])
    assert x.shape == (100, 1, 28, 28) and x.min() >= 0 and x.max() <= 1
    assert x.max() > 0.9  # real images, not blank
    # The full training set's statistics normalize the subset to about zero mean, unit std.
    normed, _ = build_dataset("embedded", train=False)
    y = torch.stack([normed[i][0] for i in range(1000)])
    assert abs(y.mean().item()) < 0.1 and abs(y.std().item() - 1) < 0.1


def test_embedded_augmentation_default_follows_split(no_debian):
    train, _ = build_dataset("embedded", train=True)
    test, _ = build_dataset("embedded", train=False)
    assert type(train.transform.transforms[0]).__name__ == "RandomCrop"
    assert type(test.transform.transforms[0]).__name__ == "ToTensor"


def test_embedded_files_licence_and_packaging():
    files = {p.name: p for p in EMBEDDED.iterdir()}
    assert set(files) == {
        "LICENSE",
        "README.md",
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    }
    assert sum(p.stat().st_size for p in files.values()) < 3_000_000
    licence = files["LICENSE"].read_text(encoding="utf-8")
    assert "Zalando SE" in licence and "MIT License" in licence
    assert "Permission is hereby granted, free of charge" in licence
    assert "https://github.com/zalandoresearch/fashion-mnist" in licence
    readme = files["README.md"].read_text(encoding="utf-8")
    assert "make_embedded_subset.py" in readme and "Zalando SE" in readme
    # The README's checksums describe the shipped data.
    sums = dict(re.findall(r"`(\S+\.gz)` \| \d+ \| `([0-9a-f]{64})`", readme))
    assert len(sums) == 4
    for name, digest in sums.items():
        assert hashlib.sha256(gzip.decompress(files[name].read_bytes())).hexdigest() == digest
    # ... and pyproject's package data ships every one of them.
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    with open(REPO / "pyproject.toml", "rb") as f:
        patterns = tomllib.load(f)["tool"]["setuptools"]["package-data"]["ssconv"]
    for name in files:
        assert any(fnmatch(f"data/embedded/{name}", p) for p in patterns), name


def test_embedded_reads_package_resources_not_the_repo(no_debian):
    # importlib.resources finds the same folder in an editable install.
    assert Path(str(fm.embedded_files())).resolve() == EMBEDDED.resolve()
