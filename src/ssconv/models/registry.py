"""A decorator registry of model builders, after timm's ``register_model`` / ``create_model`` /
``list_models``; :func:`create_model` also builds any timm or torchvision classification model by
a prefixed name (``timm:NAME``, ``tv:NAME`` / ``torchvision:NAME``), optionally pretrained.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ssconv.errors import RemedyError

__all__ = [
    "ModelInfo",
    "PretrainedWeightsError",
    "create_model",
    "list_models",
    "model_info",
    "register_model",
]

#: Name prefixes of the model libraries :func:`create_model` builds from -> library.
ECOSYSTEM_PREFIXES = {"timm": "timm", "tv": "torchvision", "torchvision": "torchvision"}


class PretrainedWeightsError(RemedyError):
    """Pretrained weights were asked for and could not be had (offline, none published); the
    message names the arguments that fix it (:class:`ssconv.errors.Remedy`)."""


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


def _split(name: str) -> tuple[str | None, str]:
    """``(library or None, name in it)`` of a model name, e.g. ``("timm", "resnet18")``."""
    prefix, sep, rest = name.partition(":")
    if sep and prefix.lower() in ECOSYSTEM_PREFIXES:
        return ECOSYSTEM_PREFIXES[prefix.lower()], rest
    return None, name


def _tv_names() -> list[str]:
    import torchvision  # here, not at import time: it adds seconds to `import ssconv`

    return torchvision.models.list_models(module=torchvision.models)


def _timm():
    try:
        import timm
    except ImportError:
        raise ValueError(
            "timm:NAME models need timm, which is not installed: pip install timm"
        ) from None
    return timm


def _unknown(name: str) -> ValueError:
    close = difflib.get_close_matches(name, list(_BUILDERS), n=3, cutoff=0.5)
    prefix, sep, rest = name.replace("/", ":", 1).partition(":")
    if sep and prefix.lower() in ECOSYSTEM_PREFIXES:  # timm/resnet18 -> timm:resnet18
        close = [f"{prefix.lower()}:{rest}"]
    elif not close and name in _tv_names():
        close = [f"tv:{name}"]
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return ValueError(
        f"unknown model {name!r}{hint} (`ssconv models` lists the {len(_BUILDERS)} registered "
        f"models; timm:NAME and tv:NAME build timm / torchvision models)"
    )


def _unknown_in(library: str, name: str, names: list[str], lister: str) -> ValueError:
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    prefix = "timm" if library == "timm" else "tv"
    hint = f"; did you mean {', '.join(repr(f'{prefix}:{c}') for c in close)}?" if close else ""
    return ValueError(
        f"unknown {library} model {name!r}{hint} ({lister} lists all {len(names)} of them)"
    )


def _check_ecosystem(library: str, name: str) -> None:
    if library == "timm":
        timm = _timm()
        if not timm.is_model(name):
            raise _unknown_in("timm", name, timm.list_models(), "timm.list_models()")
    elif name not in (names := _tv_names()):
        raise _unknown_in(
            "torchvision", name, names, "torchvision.models.list_models(module=torchvision.models)"
        )


def _ecosystem_info(library: str, name: str, full: str) -> ModelInfo:
    _check_ecosystem(library, name)
    size = 224
    if library == "timm":
        cfg = _timm().models.get_pretrained_cfg(name)
        if cfg is not None and cfg.input_size:
            size = int(cfg.input_size[-1])
        num_classes = int(cfg.num_classes) if cfg is not None and cfg.num_classes else 1000
        return ModelInfo(full, "timm", (3, size, size), num_classes, f"timm {name}")
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT
        size = int(weights.transforms.keywords.get("crop_size", 224))
    except (ValueError, AttributeError, TypeError):
        pass
    return ModelInfo(full, "torchvision", (3, size, size), 1000, f"torchvision {name}")


def _pretrained_failed(full: str, exc: Exception) -> PretrainedWeightsError:
    return PretrainedWeightsError(
        "cannot get the pretrained weights of {model} ({error}). They are downloaded on first "
        "use and cached: run once with internet access, or pass {init_checkpoint} (a local "
        "state_dict / .safetensors file) instead of {pretrained}",
        model=repr(full),
        error=f"{type(exc).__name__}: {exc}",
    )


def _first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    for n, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            return n, m
    raise ValueError("the model has no nn.Conv2d to take the input channels")


def _adapt_stem(model: nn.Module, in_channels: int, full: str) -> None:
    """Replace the first conv of a torchvision model by one reading ``in_channels``; its
    (pretrained) weights are summed over RGB for 1 channel, else repeated and rescaled by
    3 / in_channels, as timm's ``adapt_input_conv`` does."""
    import torch

    from ssconv.utils.modules import replace_module

    name, stem = _first_conv(model)
    if stem.in_channels != 3 or stem.groups != 1:
        raise ValueError(
            f"{full}: in_channels={in_channels}: its first conv {name!r} is not a plain RGB conv "
            f"({stem.in_channels} inputs, groups {stem.groups}); use 3 channels"
        )
    new = type(stem)(
        in_channels,
        stem.out_channels,
        stem.kernel_size,
        stem.stride,
        stem.padding,
        stem.dilation,
        1,
        stem.bias is not None,
        stem.padding_mode,
    )
    with torch.no_grad():
        w = stem.weight
        if in_channels == 1:
            new.weight.copy_(w.sum(1, keepdim=True))
        else:
            reps = -(-in_channels // 3)
            new.weight.copy_(w.repeat(1, reps, 1, 1)[:, :in_channels] * (3 / in_channels))
        if stem.bias is not None:
            new.bias.copy_(stem.bias)
    replace_module(model, name, new)


def _replace_head(model: nn.Module, num_classes: int, default: int, full: str) -> None:
    """A fresh classifier of ``num_classes`` outputs in place of the last ``nn.Linear`` (or
    1 x 1 ``nn.Conv2d``, SqueezeNet) with ``default`` outputs."""
    from ssconv.utils.modules import replace_module

    head = None
    for n, m in model.named_modules():
        if (isinstance(m, nn.Linear) and m.out_features == default) or (
            type(m) is nn.Conv2d and m.out_channels == default and m.kernel_size == (1, 1)
        ):
            head = (n, m)
    if head is None:
        raise ValueError(
            f"{full}: no classifier layer with {default} outputs to replace for num_classes="
            f"{num_classes}"
        )
    name, m = head
    if isinstance(m, nn.Linear):
        new: nn.Module = nn.Linear(m.in_features, num_classes, bias=m.bias is not None)
    else:
        new = nn.Conv2d(m.in_channels, num_classes, 1, bias=m.bias is not None)
    replace_module(model, name, new.to(m.weight))


def _create_ecosystem(library, name, full, num_classes, in_channels, pretrained, kwargs):
    _check_ecosystem(library, name)
    if library == "timm":
        timm = _timm()
        if num_classes is not None:
            kwargs["num_classes"] = num_classes
        try:
            return timm.create_model(name, pretrained=pretrained, in_chans=in_channels, **kwargs)
        except Exception as exc:
            if pretrained:
                raise _pretrained_failed(full, exc) from exc
            raise
    import torchvision

    if pretrained:
        try:
            model = torchvision.models.get_model(name, weights="DEFAULT", **kwargs)
        except Exception as exc:
            raise _pretrained_failed(full, exc) from exc
        if num_classes is not None and num_classes != 1000:
            _replace_head(model, num_classes, 1000, full)
    else:
        if num_classes is not None:
            kwargs["num_classes"] = num_classes
        model = torchvision.models.get_model(name, weights=None, **kwargs)
    if in_channels != 3:
        _adapt_stem(model, in_channels, full)
    return model


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    in_channels: int = 3,
    pretrained: bool = False,
    **kwargs,
):
    """Build a registered model, or a timm / torchvision one by a prefixed name.

    Args:
        name: a name from :func:`list_models`; or ``timm:NAME`` (``timm.create_model``, needs
            timm) or ``tv:NAME`` / ``torchvision:NAME`` (``torchvision.models.get_model``, its
            classification models) for any model of those libraries.
        num_classes: classifier outputs (default: the model's default dataset; 1000 for timm /
            torchvision). With ``pretrained``, a torchvision model gets a fresh classifier of
            this size (timm does the same itself).
        in_channels: image channels (1 for grey images). timm takes them as ``in_chans``; a
            torchvision model gets its first conv replaced (pretrained weights summed over RGB
            for 1 channel, else repeated and rescaled by 3 / in_channels, as timm does).
        pretrained: timm / torchvision models only: their default pretrained weights,
            downloaded on first use (and cached by the library); a failure raises
            :class:`PretrainedWeightsError`.
        **kwargs: passed to the builder, e.g. ``conv_layer=SSCFactory(period=4)`` (for timm /
            torchvision models ``conv_layer`` rebuilds their ``nn.Conv2d`` layers afterwards;
            the other keywords go to the library).
    """
    library, base = _split(name)
    if library is None and name not in _BUILDERS:
        raise _unknown(name)
    if num_classes is not None and num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be positive, got {in_channels}")
    if library is None:
        if pretrained:
            alt = f"; 'tv:{name}' has them" if name in _tv_names() else ""
            raise PretrainedWeightsError(
                "registry model {model} has no pretrained weights{alt} (pretrained weights come "
                "from timm:NAME / tv:NAME models, or a file: {init_checkpoint})",
                model=repr(name),
                alt=alt,
            )
        if num_classes is None:
            num_classes = _INFO[name].num_classes
        return _BUILDERS[name](num_classes=num_classes, in_channels=in_channels, **kwargs)
    conv_layer = kwargs.pop("conv_layer", None)
    model = _create_ecosystem(library, base, name, num_classes, in_channels, pretrained, kwargs)
    if conv_layer is not None:
        from ssconv.layers.factory import dense_conv, replace_convs

        if conv_layer is not dense_conv:
            replace_convs(model, conv_layer)
    return model


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern``, sorted."""
    return sorted(n for n in _BUILDERS if fnmatch.fnmatchcase(n, pattern))


def model_info(name: str) -> ModelInfo:
    """What a model expects: a registered name, or ``timm:NAME`` / ``tv:NAME`` (checked against
    that library's list; input size from its pretrained config, num_classes 1000)."""
    library, base = _split(name)
    if library is not None:
        return _ecosystem_info(library, base, name)
    if name not in _INFO:
        raise _unknown(name)
    return _INFO[name]
