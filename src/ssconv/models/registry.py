"""A decorator registry of model builders, after timm's ``register_model`` / ``create_model`` /
``list_models``.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

__all__ = ["ModelInfo", "register_model", "create_model", "list_models", "model_info"]


@dataclass(frozen=True)
class ModelInfo:
    """What a registered model expects and where it comes from."""

    name: str
    family: str
    input_size: tuple[int, int, int]  # (C, H, W) of its default dataset
    num_classes: int
    description: str


_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_INFO: dict[str, ModelInfo] = {}


def register_model(
    *,
    family: str,
    input_size: tuple[int, int, int] = (3, 32, 32),
    num_classes: int = 10,
    description: str = "",
    name: str | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a builder ``fn(*, num_classes, in_channels, conv_layer, **kw) -> nn.Module``."""

    def decorate(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        model_name = name or fn.__name__
        if model_name in _BUILDERS:
            raise ValueError(f"model {model_name!r} is already registered")
        _BUILDERS[model_name] = fn
        _INFO[model_name] = ModelInfo(
            model_name, family, input_size, num_classes, description or (fn.__doc__ or "").strip()
        )
        return fn

    return decorate


def _unknown(name: str) -> ValueError:
    close = difflib.get_close_matches(name, list(_BUILDERS), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return ValueError(
        f"unknown model {name!r}{hint} (`ssconv.models.list_models()` or `ssconv models` lists "
        f"all {len(_BUILDERS)} models)"
    )


def create_model(name: str, *, num_classes: int | None = None, in_channels: int = 3, **kwargs):
    """Build a registered model.

    Args:
        name: a name from :func:`list_models`.
        num_classes: classifier outputs (default: the model's default dataset).
        in_channels: image channels (1 for grey images).
        **kwargs: passed to the builder, e.g. ``conv_layer=SSCFactory(period=4)``.
    """
    if name not in _BUILDERS:
        raise _unknown(name)
    if num_classes is None:
        num_classes = _INFO[name].num_classes
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be positive, got {in_channels}")
    return _BUILDERS[name](num_classes=num_classes, in_channels=in_channels, **kwargs)


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern``, sorted."""
    return sorted(n for n in _BUILDERS if fnmatch.fnmatchcase(n, pattern))


def model_info(name: str) -> ModelInfo:
    if name not in _INFO:
        raise _unknown(name)
    return _INFO[name]
