"""Layer selection: which convolutions a structure (SSC, a structured baseline, a pruning mask)
may touch, and the keep rules that leave a layer dense.

One place for the rules, shared by :func:`ssconv.convert`, the structured baselines and
:func:`ssconv.pruning.prune`, so that every method touches the same layers at the same budget.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from torch import nn

__all__ = ["DEFAULT_CLASSIFIER_PATTERNS", "KEEP_RULES", "select_layers"]


DEFAULT_CLASSIFIER_PATTERNS = (
    "classifier",
    "classifier.*",
    "*.classifier*",
    "fc",
    "head",
    "head.*",
)


#: Default rules that keep a conv dense (see :func:`ssconv.convert`).
KEEP_RULES = ("stem", "pointwise", "depthwise", "classifier")


def _is_same_pad_conv(conv: nn.Module) -> bool:
    # timm.layers.Conv2dSame: an nn.Conv2d built with padding 0 whose forward pads the input
    # dynamically (pad_same) before F.conv2d.
    return type(conv).__name__ == "Conv2dSame" and tuple(conv.padding) == (0, 0)


def _custom_forward(conv: nn.Conv2d) -> bool:
    cls = type(conv)
    return cls.forward is not nn.Conv2d.forward or cls._conv_forward is not nn.Conv2d._conv_forward


def _matches(name: str, patterns: Sequence[str]) -> str | None:
    return next((p for p in patterns if fnmatch.fnmatchcase(name, p)), None)


def select_layers(
    model: nn.Module,
    *,
    skip: Sequence[str] = (),
    include: Sequence[str] = (),
    keep: Sequence[str] = KEEP_RULES,
    same_padding: bool = False,
) -> list[tuple[str, nn.Conv2d, str | None]]:
    """Every ``nn.Conv2d`` of ``model`` with the reason it is kept dense (``None``: convert it).

    The one place that applies the skip rules, shared by :func:`ssconv.convert` and the pruning
    baselines so that both touch the same layers at the same budget. See :func:`ssconv.convert`
    for ``skip``, ``include`` and ``keep``. Subclasses of ``nn.Conv2d`` are listed too; those
    with their own ``forward`` are kept (reason ``"custom forward"``), except timm's
    ``Conv2dSame`` when ``same_padding`` is set (the caller can keep its dynamic padding, as
    :func:`ssconv.convert` does with :class:`ssconv.conversion.SamePadSSConv2d`).
    """
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    stem = convs[0][0] if convs else None
    out = []
    for n, m in convs:
        reason = _skip_reason(n, m, stem, skip, include, keep)
        if reason is None and _custom_forward(m) and not (same_padding and _is_same_pad_conv(m)):
            reason = (
                f"custom forward ({type(m).__name__} overrides nn.Conv2d.forward"
                + ("; its padding is computed from the input size" if _is_same_pad_conv(m) else "")
                + ")"
            )
        out.append((n, m, reason))
    return out


def _skip_reason(
    name: str,
    conv: nn.Conv2d,
    stem: str | None,
    skip: Sequence[str],
    include: Sequence[str],
    keep: Sequence[str],
) -> str | None:
    unknown = set(keep) - set(KEEP_RULES)
    if unknown:
        raise ValueError(f"keep: unknown rule(s) {sorted(unknown)}; allowed: {KEEP_RULES}")
    pattern = _matches(name, skip)
    if pattern is not None:
        return f"skip pattern {pattern!r}"
    if any(k % 2 == 0 for k in conv.kernel_size):
        # SSC needs a centre tap (e.g. ConvNeXt's 2x2 stride-2 downsampling convs).
        return f"even kernel {tuple(conv.kernel_size)}"
    if _matches(name, include) is not None:
        return None
    if "stem" in keep and name == stem:
        return "stem"
    if "depthwise" in keep and conv.groups > 1 and conv.in_channels // conv.groups == 1:
        # One input channel per group: already as sparse as a channel pattern can make it.
        return "depthwise"
    if "pointwise" in keep and tuple(conv.kernel_size) == (1, 1):
        return "1x1 pointwise"
    if "classifier" in keep and _matches(name, DEFAULT_CLASSIFIER_PATTERNS) is not None:
        return "classifier"
    return None
