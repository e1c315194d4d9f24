"""CIFAR-10/100 through torchvision, on fake copies in the real on-disk format.

torchvision's ``CIFAR10.__init__`` verifies the md5 of every file (``_check_integrity`` and
``_load_meta`` call ``torchvision.datasets.cifar.check_integrity``), which fake files cannot
pass. The library keeps that check for users (it is what catches a truncated copy); these tests
replace ``check_integrity`` by an existence check (fixture ``no_md5``) to exercise the real
loading code, and one test leaves it in place to check the corrupt-file error.
"""

import os
import urllib.error

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar
from torchvision import transforms as T

from ssconv.data import DatasetError, build_dataset

from .fakes import make_cifar10, make_cifar100


@pytest.fixture
def no_md5(monkeypatch):
    monkeypatch.setattr(
        torchvision.datasets.cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath)
    )


def test_cifar10_train_and_test_split(tmp_path, no_md5):
    make_cifar10(tmp_path)
    train, info = build_dataset("cifar10", root=tmp_path, train=True)
    test, test_info = build_dataset("cifar10", root=tmp_path, train=False)
    assert len(train) == 20 and len(test) == 3
    assert info.num_classes == 10 and info.input_size == (3, 32, 32) and info.in_channels == 3
    assert info.classes[0] == "airplane" and info.classes[-1] == "truck"
    assert info.train_size == 20 and test_info.test_size == 3
    assert info.source == str(tmp_path / "cifar-10-batches-py")
    x, y = train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert [train[i][1] for i in range(4)] == [1, 2, 3, 4]  # data_batch_1 labels (1 + j) % 10
    assert [test[i][1] for i in range(3)] == [9, 0, 1]


def test_cifar10_pixels_and_normalization(tmp_path, no_md5):
    make_cifar10(tmp_path)
    raw, _ = build_dataset("cifar10", root=tmp_path, train=False, normalize=False)
    norm, info = build_dataset("cifar10", root=tmp_path, train=False)
    # CIFAR rows are (R plane, G plane, B plane), each 32x32 in row-major order.
    expected = torch.from_numpy(raw.data[0].transpose(2, 0, 1).astype(np.float32) / 255)
    assert torch.equal(raw[0][0], expected)
    mean = torch.tensor(info.mean).view(3, 1, 1)
    std = torch.tensor(info.std).view(3, 1, 1)
    torch.testing.assert_close(norm[0][0], (expected - mean) / std)
    # Published per-channel statistics of the CIFAR-10 training set.
    assert info.mean == (0.4914, 0.4822, 0.4465) and info.std == (0.2470, 0.2435, 0.2616)


def test_cifar_augmentation_on_for_train_off_for_test(tmp_path, no_md5):
    make_cifar10(tmp_path)
    train, _ = build_dataset("cifar10", root=tmp_path, train=True)
    test, _ = build_dataset("cifar10", root=tmp_path, train=False)
    kinds = [type(t) for t in train.transform.transforms]
    assert kinds == [T.RandomCrop, T.RandomHorizontalFlip, T.ToTensor, T.Normalize]
    assert train.transform.transforms[0].padding == 4
    assert [type(t) for t in test.transform.transforms] == [T.ToTensor, T.Normalize]
    # augment=False on the training split is deterministic; augment=True is not.
    plain, _ = build_dataset("cifar10", root=tmp_path, train=True, augment=False)
    assert torch.equal(plain[0][0], plain[0][0])
    draws = [train[0][0] for _ in range(8)]
    assert any(not torch.equal(draws[0], d) for d in draws[1:])


def test_cifar10_size_resizes(tmp_path, no_md5):
    make_cifar10(tmp_path)
    ds, info = build_dataset("cifar10", root=tmp_path, train=True, size=40)
    assert ds[0][0].shape == (3, 40, 40) and info.input_size == (3, 40, 40)


def test_cifar100_fine_labels(tmp_path, no_md5):
    make_cifar100(tmp_path)
    train, info = build_dataset("cifar100", root=tmp_path, train=True)
    test, _ = build_dataset("cifar100", root=tmp_path, train=False)
    assert len(train) == 6 and len(test) == 2
    assert info.num_classes == 100 and len(info.classes) == 100 and info.classes[7] == "fine7"
    assert [train[i][1] for i in range(6)] == [0, 7, 14, 21, 28, 35]
    assert train[0][0].shape == (3, 32, 32)


def test_missing_folder_says_download(tmp_path):
    with pytest.raises(DatasetError) as e:
        build_dataset("cifar10", root=tmp_path, train=True)
    msg = str(e.value)
    assert str(tmp_path / "cifar-10-batches-py") in msg and "--download" in msg
    assert "cifar-10-python.tar.gz" in msg


def test_missing_file_is_named(tmp_path):
    (make_cifar100(tmp_path) / "test").unlink()
    with pytest.raises(DatasetError, match=r"cifar-100-python/test is missing.*--download"):
        build_dataset("cifar100", root=tmp_path, train=True)


def test_corrupt_file_fails_md5_and_is_named(tmp_path):
    # No monkeypatch: torchvision's own md5 check rejects the fake files.
    base = make_cifar10(tmp_path)
    with pytest.raises(DatasetError) as e:
        build_dataset("cifar10", root=tmp_path, train=True)
    msg = str(e.value)
    assert str(base / "data_batch_1") in msg and "md5" in msg and "--download" in msg


def test_download_failure_is_a_dataset_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", offline)
    with pytest.raises(DatasetError, match=r"could not download .*cifar-10-python.tar.gz"):
        build_dataset("cifar10", root=tmp_path, train=True, download=True)
