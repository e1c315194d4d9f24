"""One initialization-scale rule for every sparse model, SSC and pruned alike.

A convolution followed by BatchNorm is invariant to the scale of its weights, so the scale set
at initialization does not change what the network computes, only how fast SGD moves it: the
effective step of a scale-invariant filter ``w`` goes as ``lr / ||w||^2`` (van Laarhoven 2017,
arXiv:1706.05350; Hoffer et al. 2018, arXiv:1803.01814). Two conventions exist:

* ``"effective"``: Kaiming-normal over each filter's *nonzero* fan-in (the specification's
  section 3; what :class:`~ssconv.layers.SSConv2d` does on construction). A filter's squared
  norm is about 2 whatever its density.
* ``"dense"``: Kaiming-normal over the *dense* fan-in, then restricted to the pattern or mask,
  as pruning at initialization does (it masks the dense model's initialization). A filter's
  squared norm is about ``2 * density``: at the same learning rate its effective steps are
  about ``1 / density`` times larger.
* ``"balanced"``: the variance ``2 / sqrt(nonzero * dense)`` between the two. Under
  BatchNorm the per-weight gradient goes as ``1 / ||w||``, so a filter's relative update
  ``lr * ||g|| / ||w||`` goes as ``lr * sqrt(n) / ||w||^2`` for ``n`` nonzero weights: the dense
  filter's rate is matched by ``||w||^2 = 2 * sqrt(density)``, which is this rule, while
  ``"effective"`` moves ``sqrt(density)`` times slower and ``"dense"`` ``1 / sqrt(density)``
  times faster than the dense model at the same learning rate.

Before this module the library mixed the two (SSC ``effective``, pruned models ``dense``), so
at equal learning rate the two families trained with effective step sizes 10-20 times apart.
:func:`rescale_init` puts a freshly built model on one convention; the design study in
``docs/ssc.md`` measures which one trains better.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["INIT_SCALES", "rescale_init"]

#: Accepted values of :func:`rescale_init`'s ``fan_in``.
INIT_SCALES = ("effective", "dense", "balanced")

# Exponent a of the rule std^2 = 2 / (nonzero^(1-a) * dense^a).
_EXPONENT = {"effective": 0.0, "dense": 1.0, "balanced": 0.5}


def _dense_fan_in(module: nn.Module) -> int:
    weight = module.weight
    return math.prod(weight.shape[1:])


@torch.no_grad()
def rescale_init(model: nn.Module, fan_in: str) -> dict[str, float]:
    """Rescale the weights of a freshly initialized sparse ``model`` in place to one convention.

    Args:
        model: a model whose sparse layers still hold their initialization: ``SSConv2d`` layers
            as constructed (effective fan-in) and masked layers (``ssconv.pruning``) as pruned
            from a dense initialization (dense fan-in). Dense layers are left alone.
        fan_in: ``"effective"``, ``"dense"`` or ``"balanced"`` (see the module docstring).

    Returns:
        layer name -> the factor its weights were multiplied by (1.0 entries omitted).

    Masked layers are rescaled per filter (output channel), from the dense rule: by
    ``(dense / nonzero) ** ((1 - a) / 2)`` of that filter, ``a`` = 0, 1, 1/2 for effective,
    dense, balanced. ``SSConv2d`` layers from the effective rule, by
    ``(effective / dense) ** (a / 2)`` (their dense fan-in is that of the layer they stand for,
    see ``dense_groups``).
    Do not call it on trained or pretrained weights: it assumes the initialization's scale.
    """
    from ssconv.layers.ssconv import SSConv2d
    from ssconv.pruning.masks import _weight_mask_module

    if fan_in not in INIT_SCALES:
        raise ValueError(f"fan_in must be one of {INIT_SCALES}, got {fan_in!r}")
    factors: dict[str, float] = {}
    for name, module in model.named_modules():
        a = _EXPONENT[fan_in]
        if isinstance(module, SSConv2d):
            if a == 0.0:
                continue
            kh, kw = module.kernel_size
            dense = (module.in_channels // module.dense_groups) * kh * kw
            factor = (module.effective_fan_in / dense) ** (a / 2)
            for w in (module.weight_spatial, module.weight_point):
                if w is not None:
                    w.mul_(factor)
            factors[name] = factor
            continue
        wm = _weight_mask_module(module)
        if wm is None or a == 1.0:
            continue
        mask = wm.mask
        original = module.parametrizations["weight"].original
        kept = mask.flatten(1).sum(1).to(original.dtype)  # nonzeros per output filter
        ratio = _dense_fan_in(module) / kept.clamp(min=1)
        scale = torch.where(kept > 0, ratio ** ((1 - a) / 2), 1.0)
        original.mul_(scale.view(-1, *([1] * (original.dim() - 1))))
        total = float(mask.sum())
        if total:
            factors[name] = (mask.numel() / total) ** ((1 - a) / 2)
    return factors
