"""Dense weights from a file, for starting SSC (or pruning) from pretrained weights.

:func:`read_state_dict` reads a ``.pt`` / ``.pth`` / ``.bin`` / ``.ckpt`` file (a state_dict,
possibly wrapped as ``{"state_dict": ...}`` or ``{"model": ...}``, read with
``torch.load(weights_only=True)``) or a ``.safetensors`` file (needs the ``safetensors``
package). :func:`load_init_checkpoint` loads it into the dense model strictly, before
conversion: ``convert(..., copy_weights=True)`` then restricts each converted layer's weights
to its pattern.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = ["WeightsError", "load_init_checkpoint", "read_state_dict"]

log = logging.getLogger(__name__)

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
SUFFIXES = (*TORCH_SUFFIXES, ".safetensors")
_WRAPPERS = ("state_dict", "model", "model_state_dict", "state_dict_ema")


class WeightsError(ValueError):
    """A weights file that cannot be read or does not fit the model."""


def _unwrap(obj, path: Path) -> dict[str, Tensor]:
    for _ in range(3):  # {"state_dict": {"model": {...}}} at most
        if not isinstance(obj, Mapping):
            break
        if obj and all(isinstance(v, Tensor) for v in obj.values()):
            break
        inner = next((obj[k] for k in _WRAPPERS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(
            f"{str(path)!r} holds no state_dict (expected a mapping of names to tensors, or one "
            f"under {' / '.join(repr(k) for k in _WRAPPERS)}; got {type(obj).__name__})"
        )
    bad = [k for k, v in obj.items() if not isinstance(v, Tensor)]
    if bad:
        raise WeightsError(
            f"{str(path)!r}: not a state_dict: entries {bad[:5]} are not tensors (a training "
            f"checkpoint? pass the model's state_dict)"
        )
    state = dict(obj)
    if all(k.startswith("module.") for k in state):  # saved from DistributedDataParallel
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The state_dict stored in ``path`` (on the CPU); :class:`WeightsError` if it cannot be."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"{str(path)!r} does not exist" + (" (a folder)" if path.is_dir() else "")
        )
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise WeightsError(
                f"{str(path)!r}: .safetensors files need the safetensors package: "
                f"pip install safetensors"
            ) from None
        try:
            return _unwrap(load_file(str(path), device="cpu"), path)
        except WeightsError:
            raise
        except Exception as exc:
            raise WeightsError(
                f"{str(path)!r}: cannot read it: {type(exc).__name__}: {exc}"
            ) from None
    if suffix not in TORCH_SUFFIXES:
        got = f"suffix {path.suffix!r}" if path.suffix else "no suffix"
        raise WeightsError(f"{str(path)!r} has {got}; use one of {', '.join(SUFFIXES)}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(
            f"{str(path)!r}: cannot read it as a state_dict (torch.load(weights_only=True)): "
            f"{type(exc).__name__}: {str(exc)[:300]}"
        ) from None
    return _unwrap(obj, path)


def _classifier(model: nn.Module) -> str | None:
    """The name of the last ``nn.Linear`` of ``model`` (its classifier), if any."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return names[-1] if names else None


def _short(keys: list[str], n: int = 5) -> str:
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(repr(k) for k in keys[:n]) + more


def load_init_checkpoint(model: nn.Module, path: str | Path, *, what: str = "the model") -> None:
    """Load the dense weights of ``path`` into the (dense, unconverted) ``model``, strictly.

    Every key must match in name and shape, except that a classifier of another size (the
    last ``nn.Linear``: an ImageNet checkpoint fine-tuned to 10 classes) keeps its fresh
    initialization, which is logged; missing ``num_batches_tracked`` buffers are allowed.
    Anything else raises :class:`WeightsError` naming some missing / unexpected / mismatched
    keys, before anything is loaded.
    """
    state = read_state_dict(path)
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    head = _classifier(model)
    head_keys = [k for k in shapes if head is not None and k.rsplit(".", 1)[0] == head]
    shapes = [k for k in shapes if k not in head_keys]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(
                f"{len(missing)} missing keys (in the model, not the file): {_short(missing)}"
            )
        if unexpected:
            parts.append(
                f"{len(unexpected)} unexpected keys (in the file, not the model): "
                f"{_short(unexpected)}"
            )
        if shapes:
            parts.append(
                f"{len(shapes)} keys of another shape: "
                + ", ".join(
                    f"{k!r} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in shapes[:3]
                )
            )
        raise WeightsError(
            f"{str(path)!r} does not fit {what}: " + "; ".join(parts) + ". Pass the state_dict "
            "of the same dense architecture (same module names; before any SSC conversion)"
        )
    if head_keys:
        log.warning(
            "%s: the classifier %r has another size in %s (%s); it keeps its fresh initialization",
            what,
            head,
            path,
            ", ".join(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in head_keys),
        )
        state = {k: v for k, v in state.items() if k not in head_keys}
    model.load_state_dict(state, strict=False)
