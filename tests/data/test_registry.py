"""Names, infos and errors of the dataset registry; every dataset kind is picklable."""

import pickle

import pytest

from ssconv.data import DatasetError, DatasetInfo, build_dataset, dataset_info, list_datasets
from ssconv.data.registry import dataset_usage

NAMES = [
    "cifar10",
    "cifar100",
    "embedded",
    "fashion_mnist",
    "folder",
    "imagenet",
    "synthetic",
    "tiny_imagenet",
]


def test_list_datasets():
    assert list_datasets() == NAMES
    assert list_datasets("cifar*") == ["cifar10", "cifar100"]
    assert set(dataset_usage()) == set(NAMES) and all(dataset_usage().values())


@pytest.mark.parametrize("name", [n for n in NAMES if n != "folder"])
def test_dataset_info_needs_no_data(name, monkeypatch, tmp_path):
    monkeypatch.setenv("SSCONV_DATA", str(tmp_path / "nothing-here"))
    info = dataset_info(name)
    assert isinstance(info, DatasetInfo) and info.name == name
    c, h, w = info.input_size
    assert len(info.mean) == len(info.std) == c and info.num_classes >= 10
    assert info.classes is None or len(info.classes) == info.num_classes
    assert dataset_info(name, size=48).input_size == (c, 48, 48)


PINNED = {
    "cifar10": (10, (3, 32, 32), 50_000, 10_000),
    "cifar100": (100, (3, 32, 32), 50_000, 10_000),
    "fashion_mnist": (10, (1, 28, 28), 60_000, 10_000),
    "embedded": (10, (1, 28, 28), 5_000, 1_000),
    "tiny_imagenet": (200, (3, 64, 64), 100_000, 10_000),
    "imagenet": (1000, (3, 224, 224), 1_281_167, 50_000),
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_published_sizes(name):
    info = dataset_info(name)
    assert (info.num_classes, info.input_size, info.train_size, info.test_size) == PINNED[name]


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("CIFAR-10", "cifar10"),
        ("fashion-mnist", "fashion_mnist"),
        ("Tiny-ImageNet", "tiny_imagenet"),
    ],
)
def test_aliases(alias, name):
    assert dataset_info(alias) == dataset_info(name)


def test_unknown_name_suggests_and_lists():
    with pytest.raises(DatasetError) as e:
        build_dataset("cifar1O", train=True)
    msg = str(e.value)
    assert "unknown dataset 'cifar1O'; did you mean 'cifar10'" in msg
    for name in ("embedded", "folder:PATH", "tiny_imagenet", "synthetic[:C:H:W:CLASSES"):
        assert name in msg
    with pytest.raises(DatasetError, match=r"unknown dataset 'zzz' \(valid names: cifar10"):
        dataset_info("zzz")


def test_dataset_error_is_a_value_error():
    assert issubclass(DatasetError, ValueError)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_size(bad):
    with pytest.raises(DatasetError, match="size must be a positive integer"):
        build_dataset("synthetic", train=True, size=bad)


def test_argument_where_none_is_taken():
    with pytest.raises(DatasetError, match="'cifar10' takes no ':' argument"):
        dataset_info("cifar10:foo")


def test_default_root_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SSCONV_DATA", str(tmp_path / "mine"))
    with pytest.raises(DatasetError, match=str(tmp_path / "mine" / "cifar-10-batches-py")):
        build_dataset("cifar10", train=True)


@pytest.mark.parametrize("name", ["embedded", "synthetic"])
def test_datasets_pickle_for_spawned_workers(name):
    ds, _ = build_dataset(name, train=False)
    copy = pickle.loads(pickle.dumps(ds))
    assert len(copy) == len(ds) and copy[3][1] == ds[3][1]
