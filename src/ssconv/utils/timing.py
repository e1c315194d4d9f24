"""Timing utilities: candidates measured side by side, interleaved, in one process.

Interleaving (A, B, C, A, B, C, ...) spreads machine noise over all candidates instead of
penalizing whichever ran during a noisy spell; medians and quartiles describe the spread.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from ssconv.utils import malloc

__all__ = ["Stats", "measure", "machine_info"]


@dataclass
class Stats:
    """Wall-clock seconds of one candidate over ``runs`` repeats."""

    median: float
    p25: float
    p75: float
    runs: int

    @property
    def spread(self) -> float:
        """Interquartile range relative to the median."""
        return (self.p75 - self.p25) / self.median if self.median else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "spread": self.spread}


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    candidates: dict[str, Callable[[], object]],
    *,
    repeats: int = 15,
    warmup: int = 3,
    device: torch.device | str | None = None,
    min_time: float = 0.0,
) -> dict[str, Stats]:
    """Time each callable ``repeats`` times, interleaved, after ``warmup`` calls each.

    ``min_time`` (seconds): keep repeating rounds until every candidate ran that long in total.
    On CUDA each sample times enough back-to-back calls to last about 2 ms (as ``timeit``'s
    autorange does), so that launch and synchronization overheads do not dominate short kernels;
    the figures stay per call.
    """
    dev = torch.device(device) if isinstance(device, str) else device
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    _sync(dev)
    number = {k: 1 for k in candidates}
    if dev is not None and dev.type == "cuda":
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            _sync(dev)
            number[name] = max(1, min(1000, int(2e-3 / max(time.perf_counter() - start, 1e-6))))
    times: dict[str, list[float]] = {k: [] for k in candidates}
    rounds = 0
    while rounds < repeats or min(sum(t) for t in times.values()) < min_time:
        for name, fn in candidates.items():
            _sync(dev)
            start = time.perf_counter()
            for _ in range(number[name]):
                fn()
            _sync(dev)
            times[name].append((time.perf_counter() - start) / number[name])
        rounds += 1
    out = {}
    for name, ts in times.items():
        q = statistics.quantiles(ts, n=4) if len(ts) > 1 else [ts[0]] * 3
        out[name] = Stats(statistics.median(ts), q[0], q[2], len(ts))
    return out


def machine_info(device: torch.device | str = "cpu") -> dict:
    """What the figures were measured on."""
    dev = torch.device(device)
    info = {
        "date": time.strftime("%Y-%m-%d"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": _cpu_name(),
        "threads": torch.get_num_threads(),
        "device": str(dev),
        "malloc_tuned": malloc.tuned(),
    }
    if dev.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(dev)
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
