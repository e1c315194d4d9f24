"""Masks: from scores to exact keep counts, and masks that keep pruned weights at exactly zero.

The shared half of every pruning-at-initialization method (as in open_lth's "strategy -> mask"
layering): a method only computes scores; :func:`scores_to_masks` turns scores into boolean
masks at an exact number of kept weights, either with one ranking over all layers (global scope)
or with per-layer keep counts from :func:`layer_budgets` (uniform, or the Erdos-Renyi-Kernel
densities of "Rigging the Lottery: Making All Tickets Winners", Evci, Gale, Menick, Castro,
Elsen, ICML 2020, arXiv:1911.11134).

Masks are applied with :mod:`torch.nn.utils.parametrize`: the layer's ``weight`` becomes
``torch.where(mask, original, 0)``, recomputed at every access, with ``mask`` a persistent
boolean buffer (``<layer>.parametrizations.weight.<i>.mask`` in the ``state_dict``). The
effective weight is therefore exactly zero wherever the mask is off, whatever an optimizer does
to ``original``; :func:`apply_masks` also zeroes ``original`` there, and since its gradient is
exactly zero there too, SGD (momentum, weight decay), AdamW and AMP keep it at zero as well.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ssconv.sparsity.budget import DISTRIBUTIONS, LayerSpec, layer_densities, resolve_distribution
from ssconv.sparsity.masking import WeightMask, mask_parametrization

__all__ = [
    "WeightMask",
    "apply_masks",
    "get_masks",
    "prepare_masks",
    "remove_masks",
    "scores_to_masks",
    "layer_budgets",
    "DISTRIBUTIONS",
]

#: Layer-wise density rules of :func:`layer_budgets`.

_MASK_KEY = re.compile(r"^(?:(.*)\.)?parametrizations\.weight\.(\d+)\.mask$")


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Mapping[str, Tensor]) -> nn.Module:
    """Mask the ``weight`` of each named layer of ``model`` in place; returns ``model``.

    Args:
        model: the model whose layers are masked.
        masks: layer name (as in ``model.named_modules()``) -> mask of the weight's shape
            (bool, or numbers where nonzero means kept).

    A layer that already carries a :class:`WeightMask` gets its mask replaced. The stored
    weight (``parametrizations.weight.original``) is zeroed where the mask is off, and keeps its
    identity, so an optimizer built before this call still updates it.
    """
    for name, mask in masks.items():
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"masks: model has no layer named {name!r}") from None
        weight = getattr(module, "weight", None)
        if not isinstance(weight, Tensor):
            raise ValueError(f"masks: layer {name!r} has no weight tensor to mask")
        if tuple(mask.shape) != tuple(weight.shape):
            raise ValueError(
                f"masks: mask of {name!r} has shape {tuple(mask.shape)}, the weight "
                f"{tuple(weight.shape)}"
            )
        mask = mask.detach().to(device=weight.device, dtype=torch.bool)
        existing = mask_parametrization(module)
        if existing is not None:
            existing.mask.copy_(mask)
        else:
            parametrize.register_parametrization(module, "weight", WeightMask(mask))
        original = module.parametrizations["weight"].original
        original.mul_(mask.to(original.dtype))
    return model


def get_masks(model: nn.Module) -> dict[str, Tensor]:
    """Layer name -> a copy of its boolean mask, for every layer masked by :func:`apply_masks`."""
    out = {}
    for name, module in model.named_modules():
        wm = mask_parametrization(module)
        if wm is not None:
            out[name] = wm.mask.detach().clone()
    return out


def prepare_masks(model: nn.Module, state_dict: Mapping[str, Tensor]) -> list[str]:
    """Give ``model`` the mask structure of ``state_dict``, so that it then loads it.

    A pruned model's ``state_dict`` holds ``<layer>.parametrizations.weight.original`` and
    ``<layer>.parametrizations.weight.<i>.mask`` instead of ``<layer>.weight``. To load it into
    a freshly built dense model, call ``prepare_masks(model, state_dict)`` (it applies all-ones
    masks where the checkpoint has masks) and then ``model.load_state_dict(state_dict)``, which
    brings the real masks and weights. Layers already masked are left as they are.

    Call it **before** building an optimizer over ``model.parameters()``: registering a mask
    moves a layer's weight after its bias in the parameter order (as ``torch.nn.utils.prune``
    does too), and optimizer states are matched by position.

    Returns:
        The names of the layers that received a mask.
    """
    names = []
    for key, value in state_dict.items():
        match = _MASK_KEY.match(key)
        if match is None:
            continue
        name = match.group(1) or ""
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise ValueError(
                f"state_dict has a mask for layer {name!r}, which the model does not have"
            ) from None
        if mask_parametrization(module) is not None:
            continue
        apply_masks(model, {name: torch.ones(value.shape, dtype=torch.bool)})
        names.append(name)
    return names


def remove_masks(model: nn.Module) -> nn.Module:
    """Bake the masks into plain weights (zeros where pruned) and drop them; returns ``model``.

    The layers are replaced by new, ordinary ``nn.Conv2d`` / ``nn.Linear`` modules (for export,
    or to convert the model): an optimizer built before does not follow them.
    ``ssconv.profile`` then counts them as dense.
    """
    from ssconv.utils.modules import replace_module

    for name, module in list(model.named_modules()):
        if mask_parametrization(module) is not None:
            # A fresh plain layer instead of parametrize.remove_parametrizations: removal edits
            # the parametrized class, which a deepcopy of the model shares with the original.
            replace_module(model, name, _plain_twin(module))
    return model


@torch.no_grad()
def _plain_twin(module: nn.Module) -> nn.Module:
    """An ``nn.Conv2d`` / ``nn.Linear`` holding ``module``'s masked weight and bias."""
    weight = module.weight.detach().clone()
    bias = module.bias
    kind = parametrize.type_before_parametrizations(module)
    factory = {"device": weight.device, "dtype": weight.dtype}
    if issubclass(kind, nn.Linear):
        twin = nn.Linear(module.in_features, module.out_features, bias is not None, **factory)
    elif issubclass(kind, nn.Conv2d):
        twin = nn.Conv2d(
            module.in_channels,
            module.out_channels,
            module.kernel_size,
            module.stride,
            module.padding,
            module.dilation,
            module.groups,
            bias is not None,
            module.padding_mode,
            **factory,
        )
    else:
        raise TypeError(f"cannot bake masks of a {kind.__name__}")
    twin.weight.copy_(weight)
    if bias is not None:
        twin.bias.copy_(bias)
    twin.train(module.training)
    return twin


def layer_budgets(
    specs: Sequence[LayerSpec], num_keep: int, distribution: str = "uniform"
) -> tuple[list[int], list[float]]:
    """Integer keep counts per layer that sum to exactly ``num_keep``, and the layer densities.

    Args:
        specs: the prunable layers (a linear layer is a ``LayerSpec`` with ``kernel_size=()``).
        num_keep: weights to keep over all of ``specs``.
        distribution: ``"uniform"`` (the same density everywhere) or ``"erk"`` (ERK densities,
            Evci et al. 2020, from :func:`ssconv.sparsity.erk_densities`; a layer's density
            is proportional to ``(C_in + C_out + kh + kw) / (C_in * C_out * kh * kw)``, capped
            at 1; for a linear layer ``(in + out) / (in * out)`` as in RigL's code), or
            ``"equal"`` (the same number of weights in every layer, capped at dense:
            :func:`ssconv.sparsity.equal_densities`), or ``"auto"`` (SSC's default rule,
            resolved at the density ``num_keep`` / dense weights of ``specs``).

    Each count is within one weight of ``density * dense count`` (largest-remainder rounding,
    ties to the earlier layer).
    """
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    sizes = [spec.dense_params for spec in specs]
    total = sum(sizes)
    if not 0 <= num_keep <= total:
        raise ValueError(f"num_keep must be in [0, {total}], got {num_keep}")
    if total:
        distribution = resolve_distribution(distribution, num_keep / total)
    if not specs:
        return [], []
    if num_keep == 0:
        return [0] * len(specs), [0.0] * len(specs)
    if num_keep == total:  # (erk_densities cannot make every layer dense)
        return list(sizes), [1.0] * len(specs)
    if distribution == "uniform":
        densities = [num_keep / total] * len(specs)
    else:
        densities = layer_densities(distribution, specs, num_keep / total, fixed_params=0)
    ideal = [d * n for d, n in zip(densities, sizes)]
    counts = [min(n, math.floor(x)) for x, n in zip(ideal, sizes)]
    order = sorted(range(len(specs)), key=lambda i: (-(ideal[i] - math.floor(ideal[i])), i))
    rest = num_keep - sum(counts)
    while rest > 0:
        for i in order:
            if rest and counts[i] < sizes[i]:
                counts[i] += 1
                rest -= 1
    while rest < 0:  # only if rounding errors of the densities overshoot
        for i in reversed(order):
            if rest and counts[i] > 0:
                counts[i] -= 1
                rest += 1
    return counts, densities


def scores_to_masks(
    scores: Mapping[str, Tensor], num_keep: int | Mapping[str, int]
) -> dict[str, Tensor]:
    """Boolean masks keeping the highest scores: exactly ``num_keep`` weights.

    Args:
        scores: layer name -> scores of its weight (higher = keep).
        num_keep: an int ranks all layers together (global scope); a mapping gives each layer
            its own count (per-layer scope, e.g. from :func:`layer_budgets`).

    Ties are broken deterministically: at equal scores the earlier layer (in ``scores``' order)
    and then the lower flat index inside the weight wins, so the count is always exact. NaN
    scores rank lowest.
    """
    if isinstance(num_keep, Mapping):
        missing = set(scores) - set(num_keep)
        if missing:
            raise ValueError(f"num_keep: no count for layers {sorted(missing)}")
        return {
            name: _top_k(s.reshape(-1), int(num_keep[name])).view(s.shape)
            for name, s in scores.items()
        }
    names = list(scores)
    if not names:
        if num_keep:
            raise ValueError(f"num_keep={num_keep} but there are no scores")
        return {}
    flat = torch.cat([scores[n].detach().reshape(-1).to(torch.float64) for n in names])
    keep = _top_k(flat, int(num_keep))
    out = {}
    start = 0
    for n in names:
        size = scores[n].numel()
        out[n] = keep[start : start + size].view(scores[n].shape).to(scores[n].device)
        start += size
    return out


def _top_k(flat: Tensor, k: int) -> Tensor:
    if not 0 <= k <= flat.numel():
        raise ValueError(f"cannot keep {k} of {flat.numel()} weights")
    flat = torch.where(torch.isnan(flat), float("-inf"), flat.detach())
    # A stable sort keeps equal scores in index order: deterministic ties, exact count.
    order = torch.sort(flat, descending=True, stable=True).indices[:k]
    keep = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    keep[order] = True
    return keep
