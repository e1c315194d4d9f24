"""``prune``: one call from a dense model to a masked one at exactly a parameter budget.

The budget is counted as :func:`ssconv.profile` and :func:`ssconv.convert` count it (the
project's specification, section 5): nonzero weights of all convolution and linear layers over
their dense count, the layers kept dense (stem, classifier, 1 x 1 and depthwise convs by
default, skipped layers) included. The prunable convolutions are chosen by
:func:`ssconv.sparsity.select_layers`, the same rules that decide which convolutions
:func:`ssconv.convert` turns into SSC layers, so an SSC model and a pruned model at "density
0.10" differ only inside the same layers; with ``num_params`` a model is pruned to exactly the
nonzero count of an SSC model. The methods are in :mod:`ssconv.pruning.methods` (random, ERK,
magnitude, SNIP, GraSP, SynFlow, with their papers).
"""

from __future__ import annotations

import fnmatch
import itertools
import logging
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ssconv.errors import BudgetInfeasibleError, SyntheticScoringWarning
from ssconv.pruning.masks import apply_masks, get_masks, layer_budgets, scores_to_masks
from ssconv.pruning.methods import Pruner, ScoreInputs, get_pruner
from ssconv.pruning.report import LayerPruning, PruneReport
from ssconv.sparsity.budget import DISTRIBUTIONS, LayerSpec, resolve_distribution
from ssconv.sparsity.counting import counted_layers, weight_counts
from ssconv.sparsity.selection import KEEP_RULES, select_layers

__all__ = ["prune", "prunable_layers", "PruneReport", "LayerPruning", "SCOPES"]

log = logging.getLogger(__name__)

#: How keep counts are spread over the prunable layers.
SCOPES = ("global", "layer")


def prunable_layers(
    model: nn.Module,
    *,
    skip: Sequence[str] = (),
    include: Sequence[str] = (),
    keep: Sequence[str] = KEEP_RULES,
    prune_classifier: bool = False,
) -> list[tuple[str, nn.Module, str | None]]:
    """Every conv / linear layer of ``model`` with the reason it stays dense (``None``: prune).

    Convolutions (``nn.Conv2d``) follow :func:`ssconv.sparsity.select_layers` with the
    same ``skip``, ``include`` and ``keep`` as :func:`ssconv.convert`. ``nn.Linear`` layers (the
    classifier) stay dense unless ``prune_classifier`` is true or a pattern of ``include``
    matches them; ``prune_classifier`` also drops the ``"classifier"`` rule for conv heads. Any
    other layer that ``ssconv.profile`` counts (an ``SSConv2d``, a conv that already carries a
    mask) stays as it is.
    """
    if prune_classifier:
        keep = tuple(k for k in keep if k != "classifier")
    convs = {
        id(m): reason
        for _, m, reason in select_layers(model, skip=skip, include=include, keep=keep)
    }
    out: list[tuple[str, nn.Module, str | None]] = []
    for name, module, _ in counted_layers(model):
        reason: str | None
        if id(module) in convs:
            reason = convs[id(module)]
        elif type(module) is nn.Linear:
            skipped = next((p for p in skip if fnmatch.fnmatchcase(name, p)), None)
            if skipped is not None:
                reason = f"skip pattern {skipped!r}"
            elif prune_classifier or any(fnmatch.fnmatchcase(name, p) for p in include):
                reason = None
            else:
                reason = "classifier"
        else:
            reason = f"{type(module).__name__} is not prunable"
        out.append((name, module, reason))
    return out


def _counts(module: nn.Module) -> tuple[int, int]:
    counts = weight_counts(module)
    assert counts is not None
    return counts


def _spec(name: str, module: nn.Module) -> LayerSpec:
    if isinstance(module, nn.Linear):
        # A linear layer is a conv without spatial extent: kernel_size=() gives the ERK score
        # (in + out) / (in * out) of RigL's code and dense_params = in * out.
        return LayerSpec(name, module.in_features, module.out_features, (), 1)  # type: ignore[arg-type]
    return LayerSpec(
        name, module.in_channels, module.out_channels, tuple(module.kernel_size), module.groups
    )


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next((p for p in model.parameters() if p.is_floating_point()), None)
    if p is None:
        return torch.device("cpu"), torch.get_default_dtype()
    return p.device, p.dtype


def _generator(seed: int | None) -> torch.Generator:
    if seed is None:
        # Drawn from torch's global RNG, so torch.manual_seed makes the run reproducible.
        seed = int(torch.randint(0, 2**62, ()).item())
    return torch.Generator().manual_seed(int(seed))


def _to_device(x: Any, device: torch.device, dtype: torch.dtype) -> Any:
    if isinstance(x, Tensor):
        return x.to(device=device, dtype=dtype if x.is_floating_point() else None)
    return x


def _batches_from(
    data: Iterable, count: int, device: torch.device, dtype: torch.dtype
) -> list[tuple[Tensor, Tensor]]:
    out = []
    for batch in itertools.islice(iter(data), count):
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError(
                f"data must yield (inputs, targets) batches, got {type(batch).__name__}"
            )
        out.append((_to_device(batch[0], device, dtype), _to_device(batch[1], device, dtype)))
    if not out:
        raise ValueError("data yielded no batch")
    if len(out) < count:
        log.warning("data yielded %d batches, fewer than batches=%d", len(out), count)
    return out


@torch.no_grad()
def _synthetic_batches(
    model: nn.Module,
    input_size: tuple[int, ...],
    count: int,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device,
    dtype: torch.dtype,
) -> list[tuple[Tensor, Tensor]]:
    was_training = model.training
    model.eval()
    try:
        out = model(torch.zeros((1, *input_size), device=device, dtype=dtype))
    finally:
        model.train(was_training)
    if out.dim() != 2:
        raise ValueError(
            f"a synthetic batch needs a classifier output (N, classes), got {tuple(out.shape)}; "
            f"pass data=..."
        )
    classes = out.shape[1]
    batches = []
    for _ in range(count):
        x = torch.randn((batch_size, *input_size), generator=generator)
        y = torch.randint(0, classes, (batch_size,), generator=generator)
        batches.append((x.to(device=device, dtype=dtype), y.to(device)))
    return batches


def _check_input_size(input_size: Sequence[int] | None) -> tuple[int, ...] | None:
    if input_size is None:
        return None
    size = tuple(int(s) for s in input_size)
    if len(size) == 4:
        size = size[1:]
    if not size or any(s < 1 for s in size):
        raise ValueError(f"input_size must be (C, H, W) of positive sizes, got {input_size!r}")
    return size


def _bar_disabled(progress: bool | None, slow: bool) -> bool | None:
    """tqdm's ``disable``: a bar only for methods that take a while (iterative or data-driven;
    the others finish at once), and by default only on a terminal (tqdm's ``None``)."""
    if progress is False or not slow:
        return True
    return None if progress is None else False


def prune(
    model: nn.Module,
    method: str | Pruner,
    *,
    density: float | None = None,
    num_params: int | None = None,
    data: Iterable | None = None,
    input_size: Sequence[int] | None = None,
    scope: str = "global",
    distribution: str = "uniform",
    skip: Sequence[str] = (),
    include: Sequence[str] = (),
    keep: Sequence[str] = KEEP_RULES,
    prune_classifier: bool = False,
    seed: int | None = None,
    iterations: int = 100,
    batches: int = 1,
    batch_size: int = 64,
    loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
    progress: bool | None = None,
) -> PruneReport:
    """Prune ``model`` **in place** at initialization to exactly a parameter budget.

    Masks are attached to the prunable layers (see :mod:`ssconv.pruning.masks`); deep-copy the
    model first to keep a dense one. A masked model executes dense MACs.

    Args:
        model: a dense model (no masks yet).
        method: a name from :data:`~ssconv.pruning.PRUNING_METHODS` (``random``, ``erk``,
            ``magnitude``, ``snip``, ``grasp``, ``synflow``) or a :class:`Pruner` instance (e.g.
            ``GraSPPruner(temperature=1)``).
        density: target model density: nonzero over dense weights of all conv and linear
            layers, dense kept layers included (the count of ``ssconv.profile``). The number of
            weights kept is ``floor(density * dense weights)``, never more.
        num_params: target number of nonzero conv + linear weights, kept layers included,
            e.g. ``ssconv.convert(...).weight_params`` to match an SSC model exactly. Give
            exactly one of ``density`` and ``num_params``.
        data: an iterable of ``(inputs, targets)`` batches for ``snip`` and ``grasp`` (the first
            ``batches`` are used). Without it they score a synthetic batch of random inputs of
            ``input_size`` (with a warning). Data-free methods ignore it.
        input_size: ``(C, H, W)`` of one input; needed by ``synflow`` and by synthetic batches
            (default: the shape of the first batch of ``data``).
        scope: ``"global"`` ranks the scores of all prunable layers together; ``"layer"`` keeps
            the same number of weights per layer as ``distribution`` says. ``random`` and
            ``erk`` always prune per layer.
        distribution: per-layer densities for ``scope="layer"`` and ``random``: ``"uniform"``,
            ``"erk"``, ``"equal"`` or ``"auto"`` (SSC's rule: ERK's below model density 0.1)
            (``erk`` always uses ERK).
        skip, include, keep: which convs stay dense, exactly as in :func:`ssconv.convert`.
        prune_classifier: prune the linear layers (and conv classifier heads) too.
        seed: seed of random scores and synthetic batches (default: drawn from torch's RNG).
        iterations: rounds of iterative methods (``synflow``), exponential schedule; one-shot
            methods ignore it.
        batches: batches scored by data-driven methods.
        batch_size: size of each synthetic batch.
        loss_fn: ``loss_fn(outputs, targets)`` of data-driven methods (cross-entropy).
        progress: a progress bar on stderr while ``synflow`` (every round) or a data-driven
            method (every pass over a batch) scores; ``None`` (default): only when stderr is
            a terminal.

    Returns:
        A :class:`PruneReport`; ``report.model`` is ``model``.

    Raises:
        ValueError: a bad argument (the message names it and the allowed values), a model that
            already carries masks, no prunable layer, or a budget below the kept layers.
    """
    pruner = get_pruner(method)
    if (density is None) == (num_params is None):
        raise ValueError("give exactly one of density=... and num_params=...")
    if density is not None and (
        isinstance(density, bool) or not isinstance(density, (int, float)) or not 0 < density <= 1
    ):
        raise ValueError(f"density must be a number in (0, 1], got {density!r}")
    if num_params is not None and (isinstance(num_params, bool) or not isinstance(num_params, int)):
        raise ValueError(f"num_params must be an int, got {num_params!r}")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    for arg, value in (
        ("iterations", iterations),
        ("batches", batches),
        ("batch_size", batch_size),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{arg} must be a positive int, got {value!r}")
    if get_masks(model):
        raise ValueError(
            "model already carries pruning masks; prune a dense model "
            "(ssconv.pruning.remove_masks bakes masks into plain weights)"
        )
    size = _check_input_size(input_size)

    layers = prunable_layers(
        model, skip=skip, include=include, keep=keep, prune_classifier=prune_classifier
    )
    targets = [(n, m) for n, m, reason in layers if reason is None]
    if not targets:
        kept = sorted({reason for _, _, reason in layers if reason})
        raise ValueError(
            f"no layer to prune (kept: {', '.join(kept) or 'none'}); pass include=[...] name "
            f"patterns, keep=(...) or prune_classifier=True to prune layers the default rules keep"
        )
    dense_total = sum(_counts(m)[1] for _, m, _ in layers)
    fixed = sum(_counts(m)[0] for _, m, reason in layers if reason is not None)
    prunable_total = sum(_counts(m)[1] for _, m in targets)
    if density is not None:
        target_params = math.floor(density * dense_total + 1e-9)
    else:
        target_params = int(num_params)
        if not 0 < target_params <= dense_total:
            raise ValueError(
                f"num_params must be in (0, {dense_total}] (the dense conv+linear weights), "
                f"got {num_params}"
            )
    num_keep = target_params - fixed
    if num_keep <= 0:
        what = f"density={density}" if density is not None else f"num_params={num_params}"
        raise BudgetInfeasibleError(
            f"{what} cannot be met: the layers kept dense (stem, classifier, skipped) alone hold "
            f"{fixed} of {dense_total} weights ({fixed / dense_total:.4f})",
            "raise the target or prune those layers too (include=..., prune_classifier=True)",
        )

    # How keep counts are spread over the layers ("auto" resolved at the model density).
    distribution = resolve_distribution(distribution, target_params / dense_total)
    if pruner.layerwise is not None:
        eff_scope = "layer"
        eff_distribution: str | None = "erk" if pruner.layerwise == "erk" else distribution
    else:
        eff_scope = scope
        eff_distribution = distribution if scope == "layer" else None
    specs = [_spec(n, m) for n, m in targets]

    def budget(count: int) -> int | dict[str, int]:
        if eff_scope == "global":
            return count
        counts, _ = layer_budgets(specs, count, eff_distribution or "uniform")
        return {spec.name: c for spec, c in zip(specs, counts)}

    device, dtype = _model_device_dtype(model)
    needs_rng = pruner.uses_random or (pruner.data_driven and data is None)
    # Without a seed, draw one from torch's RNG only where randomness is used.
    generator = _generator(seed) if needs_rng or seed is not None else torch.Generator()
    data_kind = "none"
    score_batches: list[tuple[Tensor, Tensor]] = []
    if data is not None and pruner.data_driven:
        score_batches = _batches_from(data, batches, device, dtype)
        data_kind = "given"
        if size is None:
            size = tuple(score_batches[0][0].shape[1:])
    elif pruner.data_driven:
        if size is None:
            raise ValueError(
                f"{pruner.name} without data needs input_size=(C, H, W) for a synthetic batch"
            )
        warnings.warn(
            SyntheticScoringWarning(
                f"{pruner.name}: no data given, scoring on {batches} synthetic batch(es) of "
                f"{batch_size} random {size} inputs with random labels (the method is meant to "
                f"score real training batches)"
            ),
            stacklevel=2,
        )
        score_batches = _synthetic_batches(
            model, size, batches, batch_size, generator, device, dtype
        )
        data_kind = "synthetic"
    elif size is None and data is not None:
        first = next(iter(data), None)
        if isinstance(first, (tuple, list)) and first and isinstance(first[0], Tensor):
            size = tuple(first[0].shape[1:])
    inputs = ScoreInputs(
        batches=score_batches, input_size=size, loss_fn=loss_fn, generator=generator
    )

    rounds = iterations if pruner.iterative else 1
    work = pruner.scoring_model(model)
    if rounds > 1 and work is model:
        raise ValueError(f"{pruner.name}: an iterative pruner must score a copy of the model")
    names = [n for n, _ in targets]
    work_layers = {n: work.get_submodule(n) for n in names}
    masks: dict[str, Tensor] = {}
    density_prunable = num_keep / prunable_total
    passes = max(1, int(pruner.passes(inputs)))
    bar = tqdm(
        total=rounds * passes,
        desc=f"{pruner.name} scoring",
        unit="pass",
        leave=False,
        disable=_bar_disabled(progress, slow=pruner.iterative or pruner.data_driven),
    )
    inputs.step = lambda: bar.update(1)
    try:
        for r in range(1, rounds + 1):
            count = (
                num_keep
                if r == rounds
                else max(num_keep, math.floor(prunable_total * density_prunable ** (r / rounds)))
            )
            scores = pruner.scores(work, work_layers, inputs)
            bar.update(r * passes - bar.n)  # a pruner that does not call inputs.step()
            if masks:
                # Pruned weights stay pruned: they rank below every weight still in the network.
                scores = {n: scores[n].masked_fill(~masks[n], float("-inf")) for n in names}
            masks = scores_to_masks({n: scores[n] for n in names}, budget(count))
            if r < rounds:
                with torch.no_grad():
                    for n in names:
                        work_layers[n].weight.mul_(masks[n].to(work_layers[n].weight.dtype))
            log.debug("%s round %d/%d: kept %d weights", pruner.name, r, rounds, count)
    finally:
        bar.close()
    del work, work_layers

    apply_masks(model, masks)

    layer_targets: dict[str, float] = {}
    if eff_scope == "layer":
        _, densities = layer_budgets(specs, num_keep, eff_distribution or "uniform")
        layer_targets = {spec.name: d for spec, d in zip(specs, densities)}
    entries = []
    weight_total = 0
    for name, module, reason in layers:
        nonzero, dense = _counts(module)
        weight_total += nonzero
        entries.append(
            LayerPruning(
                name=name,
                kind=type(module).__name__.removeprefix("Parametrized"),
                weight_shape=tuple(module.weight.shape),
                pruned=reason is None,
                reason="pruned" if reason is None else reason,
                params=nonzero,
                dense_params=dense,
                target_density=layer_targets.get(name),
            )
        )
    options = {k: v for k, v in vars(pruner).items() if isinstance(v, (int, float, str, bool))}
    if hasattr(pruner, "dtype"):
        options["dtype"] = str(pruner.dtype).removeprefix("torch.")
    report = PruneReport(
        model=model,
        method=pruner.name,
        scope=eff_scope,
        distribution=eff_distribution,
        layers=entries,
        target_density=None if density is None else float(density),
        target_params=target_params,
        weight_params=weight_total,
        dense_weight_params=dense_total,
        iterations=rounds,
        data=data_kind,
        batches=len(score_batches),
        seed=seed,
        options=options,
    )
    if report.collapsed:
        warnings.warn(
            f"{pruner.name}: layer collapse: {', '.join(report.collapsed)} keep no weight "
            f"(the network is cut there unless a shortcut bypasses them)",
            UserWarning,
            stacklevel=2,
        )
    log.info(
        "%s: pruned %d layers, density %.4f (%d / %d weights)",
        pruner.name,
        len(targets),
        report.density,
        report.weight_params,
        report.dense_weight_params,
    )
    return report
