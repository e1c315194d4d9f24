"""Load a trained run back into Python: ``model, config = ssconv.load_run("runs/my_run")``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

if TYPE_CHECKING:
    from ssconv.train.config import TrainConfig

__all__ = ["load_run"]


def load_run(path: str | Path, map_location: Any = "cpu") -> tuple[nn.Module, TrainConfig]:
    """The trained model of a run folder (its newest valid checkpoint) or checkpoint file.

    The model is rebuilt from the run's saved :class:`~ssconv.train.config.TrainConfig` as
    ``ssconv train`` built it (SSC layers, pruning masks), its trained weights loaded, and
    returned in eval mode on ``map_location`` with that config, as ``ssconv eval`` loads it.
    Raises :class:`~ssconv.train.checkpoint.CheckpointError` when ``path`` holds no usable
    checkpoint.
    """
    from ssconv.train.trainer import load_trained_model

    model, config, _ = load_trained_model(path, map_location)
    return model, config
