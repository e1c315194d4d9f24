"""A synthetic, learnable dataset for tests and quick runs: each image is its class's fixed
random pattern plus noise, scaled to unit variance, with balanced, seeded labels.

Every item is a pure function of ``(seed, index)`` (and the class patterns of ``(class,)``), so
the data are the same in every process, worker and run, and nothing is held in memory.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ssconv.data.base import DatasetError, DatasetInfo
from ssconv.data.registry import register_dataset

__all__ = ["SYNTHETIC_INFO", "SyntheticDataset"]

SYNTHETIC_INFO = DatasetInfo(
    name="synthetic",
    num_classes=10,
    input_size=(3, 32, 32),
    mean=(0.0, 0.0, 0.0),
    std=(1.0, 1.0, 1.0),
    train_size=512,
    test_size=128,
    classes=tuple(f"class_{i}" for i in range(10)),
    description="random class patterns plus noise, seeded (for tests; "
    "synthetic:C:H:W:CLASSES[:TRAIN:TEST])",
)
_PATTERN_SEED = 0x5EED  # class patterns do not depend on the split's seed
_MAX_SEED = 2**31


class SyntheticDataset(Dataset):
    """``length`` items ``(tensor (C, H, W), label)``, deterministic given ``seed``.

    Args:
        length: number of items.
        input_size: ``(C, H, W)``.
        num_classes: labels are ``0 .. num_classes - 1``, balanced (counts differ by at most 1).
        seed: picks the labels and the noise; the class patterns are shared by all seeds, so a
            model trained on one seed generalizes to another.
        signal: pattern-to-noise amplitude ratio (0: pure noise, nothing to learn).
    """

    def __init__(
        self,
        length: int = 512,
        input_size: tuple[int, int, int] = (3, 32, 32),
        num_classes: int = 10,
        *,
        seed: int = 0,
        signal: float = 1.0,
    ) -> None:
        if length < 0 or num_classes < 1 or len(input_size) != 3 or min(input_size) < 1:
            raise ValueError(
                f"bad synthetic dataset: length={length}, input_size={input_size}, "
                f"num_classes={num_classes}"
            )
        if not 0 <= seed < _MAX_SEED:
            raise ValueError(f"seed must be in [0, 2**31), got {seed}")
        self.length = length
        self.input_size = tuple(input_size)
        self.num_classes = num_classes
        self.seed = seed
        self.signal = float(signal)
        g = torch.Generator().manual_seed(seed)
        labels = torch.arange(length) % num_classes
        self.targets: list[int] = labels[torch.randperm(length, generator=g)].tolist()
        self.classes = [f"class_{i}" for i in range(num_classes)]

    def __len__(self) -> int:
        return self.length

    def _randn(self, seed: int) -> torch.Tensor:
        return torch.randn(self.input_size, generator=torch.Generator().manual_seed(seed))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} items")
        index %= self.length
        label = self.targets[index]
        pattern = self._randn((_PATTERN_SEED << 32) + label)
        noise = self._randn(((self.seed + 1) << 40) + index)
        x = (self.signal * pattern + noise) / math.sqrt(1.0 + self.signal**2)
        return x, label


def _parse(arg: str | None, size: int | None) -> tuple[tuple[int, int, int], int, int, int]:
    """``C:H:W:CLASSES[:TRAIN:TEST]`` -> input_size, classes, train and test lengths."""
    d = SYNTHETIC_INFO
    c, h, w = d.input_size
    classes, n_train, n_test = d.num_classes, d.train_size or 0, d.test_size or 0
    if arg:
        try:
            parts = [int(p) for p in arg.split(":")]
        except ValueError:
            parts = []
        if len(parts) not in (4, 6) or min(parts) < 1:
            raise DatasetError(
                f"bad synthetic dataset 'synthetic:{arg}'; use synthetic:C:H:W:CLASSES or "
                "synthetic:C:H:W:CLASSES:TRAIN:TEST with positive integers, e.g. "
                "synthetic:1:28:28:10 or synthetic:3:32:32:10:512:128"
            )
        c, h, w, classes = parts[:4]
        if len(parts) == 6:
            n_train, n_test = parts[4:]
    if size:
        h = w = size
    return (c, h, w), classes, n_train, n_test


def _info(arg: str | None, size: int | None) -> DatasetInfo:
    input_size, classes, n_train, n_test = _parse(arg, size)
    return replace(
        SYNTHETIC_INFO,
        name="synthetic" + (f":{arg}" if arg else ""),
        num_classes=classes,
        input_size=input_size,
        mean=(0.0,) * input_size[0],
        std=(1.0,) * input_size[0],
        train_size=n_train,
        test_size=n_test,
        classes=tuple(f"class_{i}" for i in range(classes)),
    )


@register_dataset(
    "synthetic",
    info=_info,
    arg="C:H:W:CLASSES[:TRAIN:TEST]",
    usage="seeded random class patterns for tests (default 3x32x32, 10 classes, 512/128)",
)
def build_synthetic(
    arg: str | None,
    *,
    root: Path,
    train: bool,
    download: bool,
    augment: bool,
    size: int | None,
    normalize: bool,
) -> tuple[SyntheticDataset, DatasetInfo]:
    # Already unit-variance tensors: no augmentation and no normalization to apply.
    info = _info(arg, size)
    length = info.train_size if train else info.test_size
    ds = SyntheticDataset(length or 0, info.input_size, info.num_classes, seed=0 if train else 1)
    return ds, replace(info, source="generated")
