"""One initialization-scale rule for every sparse model, SSC and pruned alike.

A convolution followed by BatchNorm is invariant to the scale of its weights, so the scale set
at initialization does not change what the network computes, only how fast SGD moves it: the
effective step of a scale-invariant filter ``w`` goes as ``lr / ||w||^2`` (van Laarhoven 2017,
arXiv:1706.05350; Hoffer et al. 2018, arXiv:1803.01814). Three rules are offered:

* ``"effective"``: Kaiming-normal over each filter's *nonzero* fan-in (the specification's
  section 3; what :class:`~ssconv.layers.SSConv2d` does by default). A filter's squared
  norm is about 2 whatever its density.
* ``"dense"``: Kaiming-normal over the *dense* fan-in, then restricted to the pattern or mask,
  as pruning at initialization does (it masks the dense model's initialization); the default of
  ``convert``, ``SSCFactory`` and training (``DEFAULT_INIT_SCALE``). A filter's
  squared norm is about ``2 * density``: at the same learning rate its effective steps are
  about ``1 / density`` times larger.
* ``"balanced"``: the variance ``2 / sqrt(nonzero * dense)`` between the two. Under
  BatchNorm the per-weight gradient goes as ``1 / ||w||``, so a filter's relative update
  ``lr * ||g|| / ||w||`` goes as ``lr * sqrt(n) / ||w||^2`` for ``n`` nonzero weights: the dense
  filter's rate is matched by ``||w||^2 = 2 * sqrt(density)``, which is this rule, while
  ``"effective"`` moves ``sqrt(density)`` times slower and ``"dense"`` ``1 / sqrt(density)``
  times faster than the dense model at the same learning rate.

Before this module the library mixed two of them (SSC ``effective``, pruned models ``dense``),
so at equal learning rate the two families trained with effective step sizes 10-20 times apart.
:func:`rescale_init` puts a freshly built model on one rule; the design study in
``docs/ssc.md`` measured which one trains better. ``SSConv2d(init_scale=...)``, ``convert``
and ``SSCFactory`` initialize SSC layers by any of the rules directly.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ssconv.layers.ssconv import DEFAULT_INIT_SCALE, INIT_SCALES, SSConv2d, init_variance
from ssconv.sparsity.masking import mask_parametrization

__all__ = ["DEFAULT_INIT_SCALE", "INIT_SCALES", "rescale_init"]


@torch.no_grad()
def rescale_init(model: nn.Module, init_scale: str) -> dict[str, float]:
    """Rescale the weights of a freshly initialized sparse ``model`` in place to one rule.

    Args:
        model: a model whose sparse layers still hold their initialization: ``SSConv2d``
            layers (by their own ``init_scale``) and masked layers (``ssconv.pruning``) as
            pruned from a dense initialization (the ``"dense"`` rule). Dense layers are left
            alone.
        init_scale: ``"effective"``, ``"dense"`` or ``"balanced"`` (see the module docstring).

    Returns:
        layer name -> the factor its weights were multiplied by (1.0 entries omitted).

    Masked layers are rescaled per filter (output channel), by that filter's nonzero count;
    ``SSConv2d`` layers by their average nonzero fan-in (their dense fan-in is that of the
    layer they stand for, see ``dense_groups``), and their ``init_scale`` is updated. Do not
    call it on trained or pretrained weights: it assumes the initialization's scale.
    """
    if init_scale not in INIT_SCALES:
        raise ValueError(f"init_scale must be one of {INIT_SCALES}, got {init_scale!r}")
    factors: dict[str, float] = {}
    for name, module in model.named_modules():
        if isinstance(module, SSConv2d):
            nonzero, dense = module.effective_fan_in, module.dense_fan_in
            factor = math.sqrt(
                init_variance(nonzero, dense, init_scale)
                / init_variance(nonzero, dense, module.init_scale)
            )
            module.init_scale = init_scale
            if factor != 1.0:
                for w in (module.weight_spatial, module.weight_point):
                    if w is not None:
                        w.mul_(factor)
                factors[name] = factor
            continue
        wm = mask_parametrization(module)
        if wm is None or init_scale == "dense":
            continue
        mask = wm.mask
        original = module.parametrizations["weight"].original
        dense = math.prod(original.shape[1:])
        kept = mask.flatten(1).sum(1).tolist()  # nonzeros per output filter
        scale = [
            math.sqrt(init_variance(k, dense, init_scale) / init_variance(k, dense, "dense"))
            if k
            else 1.0
            for k in kept
        ]
        shape = (-1, *([1] * (original.dim() - 1)))
        original.mul_(torch.tensor(scale, dtype=original.dtype, device=original.device).view(shape))
        total = float(mask.sum())
        if total:
            mean = total / mask.shape[0]
            factors[name] = math.sqrt(
                init_variance(mean, dense, init_scale) / init_variance(mean, dense, "dense")
            )
    return factors
