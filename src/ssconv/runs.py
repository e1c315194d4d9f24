"""Load a trained run back into Python: ``model, config = ssconv.load_run("runs/my_run")``.

``which="best"`` / ``"final"`` load the run's weights-only files (``best.safetensors``: the
epoch with the best validation top-1; ``model.safetensors``: the final weights) instead of its
newest checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

if TYPE_CHECKING:
    from ssconv.train.config import TrainConfig

__all__ = ["WHICH", "load_run"]

#: What :func:`load_run` can load from a run folder.
WHICH = ("latest", "best", "final")


def load_run(
    path: str | Path, map_location: Any = "cpu", *, which: str = "latest"
) -> tuple[nn.Module, TrainConfig]:
    """The trained model of a run folder, or of one checkpoint or weights file.

    Args:
        path: a run folder (``ssconv train --out``), a checkpoint (``.pt``) or a run's
            weights-only file (``.safetensors``).
        map_location: as in :func:`torch.load`.
        which: for a run folder: ``"latest"``, its newest valid checkpoint (a run still
            training or stopped included); ``"best"``, ``best.safetensors`` (the weights of the
            epoch with the best validation top-1); ``"final"``, ``model.safetensors`` (the
            weights at the end of training).

    The model is rebuilt from the run's saved :class:`~ssconv.train.config.TrainConfig` as
    ``ssconv train`` built it (SSC layers, pruning masks), its trained weights loaded, and
    returned in eval mode on ``map_location`` with that config, as ``ssconv eval`` loads it.
    Raises :class:`~ssconv.train.checkpoint.CheckpointError` when ``path`` holds no usable
    checkpoint or weights file (runs from before ssconv wrote weights files have only
    checkpoints: ``which="latest"``).
    """
    from ssconv.train.checkpoint import BEST_WEIGHTS, FINAL_WEIGHTS, CheckpointError
    from ssconv.train.trainer import load_trained_model

    if which not in WHICH:
        raise ValueError(f"which: expected one of {', '.join(WHICH)}, got {which!r}")
    path = Path(path)
    if which != "latest":
        if not path.is_dir():
            raise ValueError(f"which={which!r} needs a run folder; {str(path)!r} is none")
        name = BEST_WEIGHTS if which == "best" else FINAL_WEIGHTS
        path = path / name
        if not path.is_file():
            raise CheckpointError(
                f"run {str(path.parent)!r} has no {name} (a run that has not finished "
                f"{'an epoch' if which == 'best' else 'training'}, or one from before ssconv "
                f"wrote weights files: which='latest' loads its newest checkpoint)"
            )
    model, config, _ = load_trained_model(path, map_location)
    return model, config
