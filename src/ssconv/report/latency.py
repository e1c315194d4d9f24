"""Measure the inference latency of finished runs and store it in their run folders.

A run's model is loaded from its checkpoint and put in its deployable form (masks baked into
plain weights, BatchNorm folded, SSC kernels precomputed: :func:`ssconv.deploy.freeze`), then
timed on a batch of random images in one process, so that all runs of a report are measured
under the same conditions (one after the other, not while other runs train).

A recorded cell (a sweep's ``results`` copy: ``config.yaml`` and ``final.json``, no checkpoint)
is timed on its structure rebuilt from ``config.yaml``, with freshly initialized weights. The
time does not depend on the weights' values: an SSC model's pattern follows from its config,
and a pruned model runs dense once its masks are baked in, so it is timed as its dense
structure. ``latency_source`` says which of the two was timed.
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

    folder = Path(folder)
    model, cfg, size, source = _timed_model(folder)
    model = freeze(model).to(device)  # pruning masks baked in
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
            "latency_source": f"ssconv report --measure-latency ({source}, frozen, one process)",
        }
    )
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".final.", suffix=".json")
    with os.fdopen(fd, "w") as fh:
        json.dump(final, fh, indent=2)
    os.replace(tmp, final_path)
    return latency


def _timed_model(folder: Path):
    """``(model, config, input size, what was timed)`` for a run folder or a recorded cell."""
    from ssconv.train.checkpoint import CheckpointError
    from ssconv.train.trainer import load_trained_model

    try:
        model, cfg, state = load_trained_model(folder)
        return model, cfg, tuple(state["data_info"]["input_size"]), "trained model"
    except CheckpointError:
        if not (folder / "config.yaml").is_file():
            raise
    # A recorded cell: no checkpoint, its config only.
    from ssconv.data import dataset_info
    from ssconv.train.config import load_config
    from ssconv.train.methods import build_model

    cfg = load_config(folder / "config.yaml", what=f"{folder}: recorded config")
    info = dataset_info(cfg.dataset, size=cfg.image_size)
    size = tuple(info.input_size)
    if cfg.in_channels:  # the data is converted to this many channels (build_dataset)
        size = (cfg.in_channels, *size[1:])
    model, _ = build_model(cfg, info.num_classes, size[0], size, for_loading=True)
    return model.eval(), cfg, size, "structure rebuilt from config.yaml, untrained weights"
