"""Deterministic data order and augmentation, so that a resumed run sees exactly the same batches.

The order of epoch ``e`` is a permutation drawn from a generator seeded with ``(seed, e)``; the
random augmentation of image ``i`` in epoch ``e`` runs under a torch RNG seeded with
``(seed, e, i)``. Both are pure functions of their keys, whatever the number of worker processes
and wherever a run was interrupted, so resuming at batch ``k`` of epoch ``e`` needs only
``(e, k)``. Under DDP each process takes every ``world``-th index of the same permutation.

A ``DataLoader`` draws the base seed of its worker processes from its ``generator``, or from
the global torch RNG when it has none, and it does so for every new iterator, also with
``num_workers=0``. :func:`loader_generator` gives each loader a generator of its own, so that
creating a loader never moves the global RNG (which Dropout and other stochastic layers use):
a run resumed mid-epoch, whose new loader is created after the saved RNG state is restored,
then draws exactly the same random numbers as an uninterrupted one.

:func:`worker_init` makes each worker process die with its parent (Linux ``PR_SET_PDEATHSIG``):
without it, the workers of a process killed with ``kill -9`` notice only at their next status
check, several seconds later.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import signal
import sys
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import Dataset, Sampler

__all__ = ["EpochBatchSampler", "SeededDataset", "mix_seed", "loader_generator", "worker_init"]


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integer parts (SplitMix64-style mixing, stable across runs)."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x ^= int(p) + 0x9E3779B97F4A7C15 + ((x << 6) & 0xFFFFFFFFFFFFFFFF) + (x >> 2)
        x &= 0xFFFFFFFFFFFFFFFF
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


class SeededDataset(Dataset):
    """Wraps a dataset; item ``(epoch, index)`` is ``base[index]`` under a per-item RNG seed."""

    def __init__(self, base: Dataset, seed: int) -> None:
        self.base = base
        self.seed = seed

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key):
        epoch, index = key
        # The CPU generator only (torch.manual_seed also reseeds CUDA: 100x slower per item).
        gen = torch.default_generator
        state = gen.get_state()
        gen.manual_seed(mix_seed(self.seed, epoch, index))
        try:
            return self.base[index]
        finally:
            gen.set_state(state)


class EpochBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of ``(epoch, index)`` keys for one epoch, deterministic in ``(seed, epoch)``.

    Args:
        size: dataset length.
        batch_size: per-process batch size.
        seed, epoch: fix the permutation.
        rank, world: this process and the number of processes (DDP).
        shuffle: permute (training) or keep order (evaluation).
        drop_last: drop the last incomplete batch (training).
        start_batch: skip the first batches (resuming mid-epoch).
        max_batches: cap on batches per epoch (``--max-steps``).
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        *,
        seed: int,
        epoch: int,
        rank: int = 0,
        world: int = 1,
        shuffle: bool = True,
        drop_last: bool = True,
        start_batch: int = 0,
        max_batches: int | None = None,
    ) -> None:
        self.size, self.batch_size = size, batch_size
        self.seed, self.epoch = seed, epoch
        self.rank, self.world = rank, world
        self.shuffle, self.drop_last = shuffle, drop_last
        self.start_batch, self.max_batches = start_batch, max_batches

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, 7))
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        per_rank = len(order) // self.world if self.drop_last else -(-len(order) // self.world)
        mine = order[self.rank :: self.world][:per_rank]
        return mine

    def num_batches(self) -> int:
        n = len(self._indices()) if self.world > 1 else self.size
        full = n // self.batch_size if self.drop_last else -(-n // self.batch_size)
        if self.max_batches is not None:
            full = min(full, self.max_batches)
        return full

    def __len__(self) -> int:
        return max(0, self.num_batches() - self.start_batch)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        indices = self._indices()
        total = self.num_batches()
        for b in range(self.start_batch, total):
            chunk = indices[b * self.batch_size : (b + 1) * self.batch_size]
            yield [(self.epoch, i) for i in chunk]


def loader_generator(*parts: int) -> torch.Generator:
    """A CPU generator seeded from ``parts`` for a ``DataLoader`` (see the module docstring)."""
    return torch.Generator().manual_seed(mix_seed(*parts))


def _die_with_parent(parent: int, worker_id: int) -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def worker_init() -> Callable[[int], None]:
    """A ``worker_init_fn`` that ends each worker when the process that made it dies."""
    return functools.partial(_die_with_parent, os.getpid())
