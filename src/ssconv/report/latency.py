"""Measure the inference latency of finished runs and store it in their run folders.

A run's model is loaded from its checkpoint and put in its deployable form (masks baked into
plain weights, BatchNorm folded, SSC kernels precomputed: :func:`ssconv.deploy.freeze`), then
timed on a batch of random images in one process, so that all runs of a report are measured
under the same conditions (one after the other, not while other runs train).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

from ssconv.utils.timing import machine_info, measure

__all__ = ["measure_run_latency"]


@torch.inference_mode()
def measure_run_latency(
    folder: str | Path, *, batch: int = 64, repeats: int = 15, device: str = "cpu"
) -> float:
    """Median latency (ms) of one inference batch; written into ``folder/final.json``.

    The quartiles of the timed repeats (``latency_p25_ms``, ``latency_p75_ms``) and the machine
    (``latency_machine``: processor, threads, device, versions) are stored with it, so that
    plots can show the spread and say where it was measured.
    """
    from ssconv.deploy import freeze
    from ssconv.pruning import remove_masks
    from ssconv.train.trainer import load_trained_model

    folder = Path(folder)
    model, cfg, state = load_trained_model(folder)
    remove_masks(model)
    model = freeze(model).to(device)
    size = tuple(state["data_info"]["input_size"])
    x = torch.randn(batch, *size, device=device)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    stats = measure({"m": lambda: model(x)}, repeats=repeats, warmup=3, device=device)
    latency = stats["m"].median * 1e3
    machine = machine_info(device)
    final_path = folder / "final.json"
    final = json.loads(final_path.read_text())
    final.update(
        {
            "latency_ms": latency,
            "latency_batch": batch,
            "latency_threads": torch.get_num_threads(),
            "latency_device": device,
            "latency_spread": stats["m"].spread,
            "latency_p25_ms": stats["m"].p25 * 1e3,
            "latency_p75_ms": stats["m"].p75 * 1e3,
            "latency_repeats": stats["m"].runs,
            "latency_machine": machine,
            "latency_source": "ssconv report --measure-latency (frozen model, one process)",
        }
    )
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".final.", suffix=".json")
    with os.fdopen(fd, "w") as fh:
        json.dump(final, fh, indent=2)
    os.replace(tmp, final_path)
    return latency
