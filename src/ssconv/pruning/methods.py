"""The pruning-at-initialization methods: each one only scores the prunable weights.

Every pruner returns, per prunable layer, a score tensor of the weight's shape where **higher
means keep**; :func:`ssconv.pruning.masks.scores_to_masks` turns scores into masks. The methods
and the papers they follow:

* ``random``: uniform random scores, kept at the same density in every layer (or at ERK
  densities with ``distribution="erk"``), the baseline of all papers below.
* ``erk``: random scores inside the Erdos-Renyi-Kernel layer densities of "Rigging the Lottery:
  Making All Tickets Winners" (Evci, Gale, Menick, Castro, Elsen, ICML 2020, arXiv:1911.11134).
* ``magnitude``: ``|w|`` at initialization (magnitude pruning at init, a baseline in
  Frankle et al., "Pruning Neural Networks at Initialization: Why are We Missing the Mark?",
  ICLR 2021, arXiv:2009.08576).
* ``snip``: "SNIP: Single-shot Network Pruning based on Connection Sensitivity" (Lee, Ajanthan,
  Torr, ICLR 2019, arXiv:1810.02340): ``|g * w|``.
* ``grasp``: "Picking Winning Tickets Before Training by Preserving Gradient Flow" (Wang, Zhang,
  Grosse, ICLR 2020, arXiv:2002.07376): ``-w * (H g)``, the highest removed.
* ``synflow``: "Pruning neural networks without any data by iteratively conserving synaptic
  flow" (Tanaka, Kunin, Yamins, Ganguli, NeurIPS 2020, arXiv:2006.05467): data-free, iterative.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "Pruner",
    "ScoreInputs",
    "RandomPruner",
    "ERKPruner",
    "MagnitudePruner",
    "SNIPPruner",
    "GraSPPruner",
    "SynFlowPruner",
    "PRUNING_METHODS",
    "get_pruner",
]

LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class ScoreInputs:
    """What a pruner may use besides the model.

    Attributes:
        batches: ``(inputs, targets)`` batches on the model's device (empty for data-free
            methods).
        input_size: ``(C, H, W)`` of one input, or ``None`` when unknown.
        loss_fn: ``loss_fn(outputs, targets)``, a mean over the batch (cross-entropy).
        generator: CPU random generator for random scores.
        step: called after each of the :meth:`Pruner.passes` passes of one ``scores`` call
            (progress reporting; a no-op by default).
    """

    batches: Sequence[tuple[Tensor, Tensor]] = ()
    input_size: tuple[int, ...] | None = None
    loss_fn: LossFn = F.cross_entropy
    generator: torch.Generator = field(default_factory=torch.Generator)
    step: Callable[[], None] = field(default=lambda: None)


class Pruner:
    """Scores prunable weights; subclasses set the class attributes and :meth:`scores`.

    Attributes:
        name: the method's name in :data:`PRUNING_METHODS`.
        data_driven: needs ``(inputs, targets)`` batches (a synthetic batch stands in without).
        iterative: scored again after each of several pruning rounds (``iterations``).
        layerwise: ``None`` when the user's ``scope`` applies; otherwise the method itself fixes
            per-layer densities (``"uniform"`` follows the user's ``distribution``, ``"erk"``
            always uses ERK).
        uses_random: draws from ``ScoreInputs.generator``.
    """

    name: ClassVar[str] = ""
    data_driven: ClassVar[bool] = False
    iterative: ClassVar[bool] = False
    layerwise: ClassVar[str | None] = None
    uses_random: ClassVar[bool] = False

    def scoring_model(self, model: nn.Module) -> nn.Module:
        """The model to score: ``model`` itself (read only) or a prepared copy."""
        return model

    def passes(self, inputs: ScoreInputs) -> int:
        """How many times one :meth:`scores` call calls ``inputs.step()`` (progress; a pruner
        that never calls it counts as one pass, completed when ``scores`` returns)."""
        return 1

    def scores(
        self, model: nn.Module, layers: Mapping[str, nn.Module], inputs: ScoreInputs
    ) -> dict[str, Tensor]:
        """Layer name -> scores of ``layers[name].weight`` (higher = keep)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _train_copy(model: nn.Module) -> nn.Module:
    work = copy.deepcopy(model)
    work.train()
    return work


def _weights(layers: Mapping[str, nn.Module]) -> list[Tensor]:
    weights = []
    for layer in layers.values():
        layer.weight.requires_grad_(True)
        weights.append(layer.weight)
    return weights


def _grad(output: Tensor, weights: list[Tensor], **kwargs) -> list[Tensor]:
    grads = torch.autograd.grad(output, weights, allow_unused=True, **kwargs)
    return [torch.zeros_like(w) if g is None else g for g, w in zip(grads, weights)]


def _need_batches(pruner: Pruner, inputs: ScoreInputs) -> None:
    if not inputs.batches:
        raise ValueError(f"{pruner.name} needs at least one (inputs, targets) batch")


class RandomPruner(Pruner):
    """Random pruning: i.i.d. uniform scores, the same density in every prunable layer.

    The common baseline of SNIP (arXiv:1810.02340), GraSP (arXiv:2002.07376) and SynFlow
    (arXiv:2006.05467). Per-layer keep counts come from the ``distribution`` argument of
    :func:`ssconv.pruning.prune` (``"uniform"`` by default); the ``scope`` argument does not
    apply.
    """

    name = "random"
    layerwise = "uniform"
    uses_random = True

    def scores(
        self, model: nn.Module, layers: Mapping[str, nn.Module], inputs: ScoreInputs
    ) -> dict[str, Tensor]:
        return {
            n: torch.rand(m.weight.shape, generator=inputs.generator).to(m.weight.device)
            for n, m in layers.items()
        }


class ERKPruner(RandomPruner):
    """Random pruning inside Erdos-Renyi-Kernel (ERK) layer densities.

    "Rigging the Lottery: Making All Tickets Winners", U. Evci, T. Gale, J. Menick, P. S. Castro,
    E. Elsen, ICML 2020, arXiv:1911.11134: a conv layer's density is proportional to
    ``(C_in + C_out + kh + kw) / (C_in * C_out * kh * kw)`` (a linear layer's to
    ``(in + out) / (in * out)``), scaled to meet the budget, capped at 1 (layers over 1 are made
    dense and the scale solved again: :func:`ssconv.sparsity.erk_densities`). Inside each
    layer the kept weights are drawn uniformly at random. ``scope`` and ``distribution`` do not
    apply.
    """

    name = "erk"
    layerwise = "erk"


class MagnitudePruner(Pruner):
    """Magnitude pruning at initialization: score ``|w|``.

    The baseline "magnitude at initialization" of J. Frankle, G. K. Dziugaite, D. M. Roy,
    M. Carbin, "Pruning Neural Networks at Initialization: Why are We Missing the Mark?",
    ICLR 2021, arXiv:2009.08576 (also in SynFlow, arXiv:2006.05467).
    """

    name = "magnitude"

    def scores(
        self, model: nn.Module, layers: Mapping[str, nn.Module], inputs: ScoreInputs
    ) -> dict[str, Tensor]:
        return {n: m.weight.detach().abs() for n, m in layers.items()}


class SNIPPruner(Pruner):
    """SNIP connection sensitivity: score ``|dL/dw * w|``.

    "SNIP: Single-shot Network Pruning based on Connection Sensitivity", N. Lee, T. Ajanthan,
    P. H. S. Torr, ICLR 2019, arXiv:1810.02340. The sensitivity of connection ``j`` is
    ``|dL/dc_j|`` at ``c = 1`` for the mask ``c``, i.e. ``|g_j * w_j|``; the paper's
    normalization by the sum of all sensitivities does not change the ranking and is left out.
    With several batches the gradients are summed before taking the absolute value
    (``L = sum_b L_b``, each ``L_b`` the batch mean). Scored on a copy of the model in train
    mode (batch statistics, as in training).
    """

    name = "snip"
    data_driven = True

    def scoring_model(self, model: nn.Module) -> nn.Module:
        return _train_copy(model)

    def scores(
        self, model: nn.Module, layers: Mapping[str, nn.Module], inputs: ScoreInputs
    ) -> dict[str, Tensor]:
        _need_batches(self, inputs)
        weights = _weights(layers)
        total = [torch.zeros_like(w) for w in weights]
        for x, y in inputs.batches:
            loss = inputs.loss_fn(model(x), y)
            for t, g in zip(total, _grad(loss, weights)):
                t.add_(g)
        return {n: (g * w).detach().abs() for n, g, w in zip(layers, total, weights)}


class GraSPPruner(Pruner):
    """GraSP (gradient signal preservation): the paper's score ``S(-w) = -w * (H g)``.

    "Picking Winning Tickets Before Training by Preserving Gradient Flow", C. Wang, G. Zhang,
    R. Grosse, ICLR 2020, arXiv:2002.07376: ``S(-theta) = -theta * H g``, with
    ``g`` the loss gradient and ``H`` the loss Hessian over the prunable weights; the weights
    with the **highest** ``S`` are removed (removing them reduces the gradient norm least, or
    raises it).

    Sign convention: like every pruner here, :meth:`scores` returns keep-scores (higher = keep),
    so it returns ``w * (H g) = -S``; keeping the largest ``w * (H g)`` is removing the largest
    ``S``. ``H g`` is computed as the gradient of ``g_stop . g`` (``g_stop`` detached), summed
    over the batches, with ``g_stop`` the gradient summed over the same batches, as in the
    authors' code. The logits are divided by ``temperature`` (200 in the authors' code and in the
    SynFlow authors' reimplementation) before the cross-entropy. The normalization by ``|sum S|``
    of the authors' code does not change the ranking and is left out. Scored on a copy of the
    model in train mode.
    """

    name = "grasp"
    data_driven = True

    def __init__(self, temperature: float = 200.0) -> None:
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature!r}")
        self.temperature = float(temperature)

    def __repr__(self) -> str:
        return f"GraSPPruner(temperature={self.temperature})"

    def scoring_model(self, model: nn.Module) -> nn.Module:
        return _train_copy(model)

    def passes(self, inputs: ScoreInputs) -> int:
        return 2 * max(1, len(inputs.batches))

    def scores(
        self, model: nn.Module, layers: Mapping[str, nn.Module], inputs: ScoreInputs
    ) -> dict[str, Tensor]:
        _need_batches(self, inputs)
        weights = _weights(layers)
        t = self.temperature
        g_stop = [torch.zeros_like(w) for w in weights]
        for x, y in inputs.batches:
            loss = inputs.loss_fn(model(x) / t, y)
            for acc, g in zip(g_stop, _grad(loss, weights)):
                acc.add_(g)
            inputs.step()
        hg = [torch.zeros_like(w) for w in weights]
        for x, y in inputs.batches:
            loss = inputs.loss_fn(model(x) / t, y)
            grads = _grad(loss, weights, create_graph=True)
            z = sum((gs * g).sum() for gs, g in zip(g_stop, grads))
            if z.requires_grad:  # else: the loss does not depend on the weights at second order
                for acc, h in zip(hg, _grad(z, weights)):
                    acc.add_(h)
            inputs.step()
        return {n: (w * h).detach() for n, w, h in zip(layers, weights, hg)}


_ACTIVATIONS = (
    nn.ReLU,
    nn.ReLU6,
    nn.Hardtanh,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Softplus,
)


class SynFlowPruner(Pruner):
    """Iterative Synaptic Flow Pruning (SynFlow): score ``|dR/dw * w|``, no data.

    "Pruning neural networks without any data by iteratively conserving synaptic flow",
    H. Tanaka, D. Kunin, D. L. K. Yamins, S. Ganguli, NeurIPS 2020, arXiv:2006.05467,
    algorithm 1: the network is linearized (every parameter and floating buffer replaced by its
    absolute value, as the authors' code does; batch norm in eval mode), ``R`` is the sum of the
    outputs on an all-ones input, and the score of a weight is ``dR/dw * w``. Pruning runs in
    ``iterations`` rounds (100 by default) on an exponential schedule: after round ``k`` of
    ``n`` the prunable weights keep density ``d ** (k / n)``, pruned weights staying pruned.
    The copy runs in ``dtype`` (float64 by default), since ``R`` is a product over all layers
    and overflows float32 in deep networks.

    Activation modules (``nn.ReLU``, ``nn.ReLU6``, ``nn.Hardswish``, ``nn.SiLU``, ...) are
    replaced by the identity in the copy, so that ``R`` is the paper's ``1^T (prod_l |W_l|) 1``
    whatever the activation: on the all-positive linearized network ReLU already is the
    identity, but a saturating one (MobileNetV2's ReLU6) would cut the gradient and leave whole
    stages with zero scores. Activations called as functions inside ``forward`` stay as they
    are.
    """

    name = "synflow"
    iterative = True

    def __init__(self, dtype: torch.dtype = torch.float64) -> None:
        self.dtype = dtype

    def __repr__(self) -> str:
        return f"SynFlowPruner(dtype={self.dtype})"

    @torch.no_grad()
    def scoring_model(self, model: nn.Module) -> nn.Module:
        work = copy.deepcopy(model).to(self.dtype)
        work.eval()
        for tensor in [*work.parameters(), *work.buffers()]:
            if tensor.is_floating_point():
                tensor.abs_()
        for module in list(work.modules()):
            for name, child in module.named_children():
                if isinstance(child, _ACTIVATIONS):
                    setattr(module, name, nn.Identity())
        return work

    def scores(
        self, model: nn.Module, layers: Mapping[str, nn.Module], inputs: ScoreInputs
    ) -> dict[str, Tensor]:
        if inputs.input_size is None:
            raise ValueError("synflow needs input_size, e.g. (3, 32, 32)")
        weights = _weights(layers)
        ones = torch.ones((1, *inputs.input_size), dtype=self.dtype, device=weights[0].device)
        r = model(ones).sum()
        if not torch.isfinite(r):
            raise ValueError(f"synflow: R overflowed in {self.dtype}; use dtype=torch.float64")
        grads = _grad(r, weights)
        return {n: (g * w).detach().abs() for n, g, w in zip(layers, grads, weights)}


_PRUNERS: dict[str, type[Pruner]] = {
    p.name: p
    for p in (RandomPruner, ERKPruner, MagnitudePruner, SNIPPruner, GraSPPruner, SynFlowPruner)
}
#: The method names accepted by :func:`ssconv.pruning.prune`.
PRUNING_METHODS: tuple[str, ...] = tuple(_PRUNERS)


def get_pruner(method: str | Pruner) -> Pruner:
    """The pruner called ``method`` (a :class:`Pruner` instance is returned as is)."""
    if isinstance(method, Pruner):
        return method
    if method not in _PRUNERS:
        raise ValueError(
            f"method must be one of {', '.join(repr(m) for m in PRUNING_METHODS)}, got {method!r}"
        )
    return _PRUNERS[method]()
