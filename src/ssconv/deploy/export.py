"""Export: ONNX (checked against onnxruntime) or TorchScript of the frozen model
(:func:`ssconv.deploy.freeze`), standard operators only."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from ssconv.deploy._freeze import freeze
from ssconv.kernels import fused

__all__ = ["ExportReport", "export_onnx", "export_torchscript"]

log = logging.getLogger(__name__)


@dataclass
class ExportReport:
    path: Path
    format: str
    op_types: list[str] = field(default_factory=list)
    max_abs_diff: float | None = None
    #: Batch sizes onnxruntime was checked at (two for a dynamic batch axis).
    checked_batches: list[int] = field(default_factory=list)

    def __str__(self) -> str:
        diff = "" if self.max_abs_diff is None else f", max |diff| {self.max_abs_diff:.2e}"
        if self.checked_batches:
            diff += " at batch " + " and ".join(map(str, self.checked_batches))
        ops = f", ops: {', '.join(self.op_types)}" if self.op_types else ""
        return f"wrote {self.path} ({self.format}{diff}{ops})"


def _example(model: nn.Module, input_size, batch: int = 1) -> Tensor:
    size = tuple(input_size)
    if len(size) == 3:
        size = (batch, *size)
    p = next(iter(model.parameters()), None)
    if p is None:
        p = next(iter(model.buffers()), None)
    return torch.randn(size, device=p.device if p is not None else "cpu")


def export_onnx(
    model: nn.Module,
    path: str | Path,
    input_size,
    *,
    opset: int = 18,
    check: bool = True,
    dynamo: bool | None = None,
    atol: float = 1e-4,
    batch: int = 1,
    dynamic_batch: bool = True,
) -> ExportReport:
    """Freeze ``model`` and export it to ONNX; with ``check``, compare onnxruntime's output.

    ``input_size`` is ``(C, H, W)`` (or a full ``(N, C, H, W)``); the example input holds
    ``batch`` images. With ``dynamic_batch`` (default) the graph's batch axis is symbolic
    (``"batch"``), and ``check`` runs onnxruntime at two batch sizes (``batch`` and
    ``batch + 2``). ``dynamo=None`` uses the dynamo exporter when ``onnxscript`` is installed,
    else the TorchScript-based one. Raises ``RuntimeError`` when onnxruntime disagrees beyond
    ``atol`` (relative to the output's scale when that exceeds 1: float32 sums over thousands
    of terms differ by more than 1e-4 in absolute terms between two correct runtimes).
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frozen = freeze(model, target="onnxruntime")
    x = _example(frozen, input_size, batch)
    # torch.export specializes a dimension of size 1: trace the dynamic graph at batch 2.
    x_trace = x if not dynamic_batch or x.shape[0] > 1 else x.repeat(2, 1, 1, 1)
    if dynamo is None:
        try:
            import onnxscript  # noqa: F401

            dynamo = True
        except ImportError:
            dynamo = False
    with torch.no_grad():
        kwargs = {
            "dynamo": dynamo,
            "opset_version": opset,
            "input_names": ["input"],
            "output_names": ["output"],
        }
        if dynamo:
            kwargs["external_data"] = False
            if dynamic_batch:
                kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch")},)
        elif dynamic_batch:
            kwargs["dynamic_axes"] = {"input": {0: "batch"}, "output": {0: "batch"}}
        # Stock operators only in the graph: the fused kernel is not an ONNX operator.
        with warnings.catch_warnings(), fused.disabled():
            warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter's notice
            # The TorchScript-based exporter warns (three times per model) that it cannot fold a
            # Slice whose step is not 1: the Slice just stays in the graph, checked below.
            warnings.filterwarnings(
                "ignore", message="Constant folding - Only steps=1", category=UserWarning
            )
            torch.onnx.export(frozen, (x_trace,), str(path), verbose=False, **kwargs)
    report = ExportReport(path, f"onnx opset {opset}")
    try:
        import onnx

        graph = onnx.load(str(path)).graph
        report.op_types = sorted({n.op_type for n in graph.node})
    except ImportError:
        pass
    if check:
        try:
            import onnxruntime as ort
        except ImportError:
            log.warning("onnxruntime is not installed: exported graph not checked")
            return report
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        inputs = [x]
        if dynamic_batch:
            inputs.append(_example(frozen, input_size, x.shape[0] + 2))
        report.max_abs_diff = 0.0
        for xi in inputs:
            with torch.no_grad(), fused.disabled():
                reference = frozen(xi)
            out = session.run(None, {session.get_inputs()[0].name: xi.cpu().numpy()})[0]
            diff = (torch.from_numpy(out) - reference.cpu()).abs().max().item()
            report.max_abs_diff = max(report.max_abs_diff, diff)
            report.checked_batches.append(int(xi.shape[0]))
            scale = max(1.0, reference.abs().max().item())
            if diff > atol * scale:
                raise RuntimeError(
                    f"ONNX export of {path} disagrees with PyTorch at batch {xi.shape[0]}: "
                    f"max |diff| {diff:.3g} > {atol} x output scale {scale:.3g}"
                )
    return report


def export_torchscript(model: nn.Module, path: str | Path, input_size) -> ExportReport:
    """Freeze ``model``, trace it with TorchScript and save it (``torch.jit.load`` reads it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frozen = freeze(model)
    x = _example(frozen, input_size)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        with fused.disabled():  # the graph and its reference: stock operators
            traced = torch.jit.trace(frozen, (x,))
            torch.jit.save(traced, str(path))
            loaded = torch.jit.load(str(path))
            diff = (loaded(x) - frozen(x)).abs().max().item()
    return ExportReport(path, "torchscript", max_abs_diff=diff)
