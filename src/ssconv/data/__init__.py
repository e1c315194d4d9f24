"""Datasets for training and evaluation: CIFAR-10/100, Fashion-MNIST (and a subset of it shipped
with the package), Tiny-ImageNet, ImageNet, any ``ImageFolder`` and a synthetic dataset, each with
its standard preprocessing.

    >>> from ssconv.data import build_dataset
    >>> train_set, info = build_dataset("embedded", train=True)
    >>> info.num_classes, info.input_size
    (10, (1, 28, 28))
"""

from ssconv.data import cifar, fashion_mnist, imagefolder, synthetic  # noqa: F401  (register)
from ssconv.data.base import (
    DatasetError,
    DatasetInfo,
    ImageListDataset,
    TensorImageDataset,
    default_root,
)
from ssconv.data.fashion_mnist import debian_fashion_mnist_dir
from ssconv.data.idx import read_idx, write_idx
from ssconv.data.registry import (
    build_dataset,
    dataset_info,
    dataset_usage,
    list_datasets,
    register_dataset,
)
from ssconv.data.synthetic import SyntheticDataset
from ssconv.data.transforms import Augment

__all__ = [
    "Augment",
    "DatasetError",
    "DatasetInfo",
    "ImageListDataset",
    "SyntheticDataset",
    "TensorImageDataset",
    "build_dataset",
    "dataset_info",
    "dataset_usage",
    "debian_fashion_mnist_dir",
    "default_root",
    "list_datasets",
    "read_idx",
    "register_dataset",
    "write_idx",
]
