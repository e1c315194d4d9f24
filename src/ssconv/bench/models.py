"""End-to-end model speed: dense vs SSC vs pruned-mask vs depthwise-separable, side by side.

All variants of one model are built at the same parameter budget and measured interleaved in
one process: inference latency of their deployable form (:func:`ssconv.deploy.freeze`: masks
baked, BatchNorm folded, SSC kernels precomputed), optionally one training step (forward,
backward, SGD update) of the trainable form, and optionally onnxruntime.
"""

from __future__ import annotations

import copy
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ssconv import profile
from ssconv.conversion import build_rival, convert
from ssconv.errors import BudgetInfeasibleError, NoConvertibleLayerError
from ssconv.models import create_model, model_info
from ssconv.sparsity.selection import KEEP_RULES
from ssconv.utils.timing import Stats, machine_info, measure

__all__ = ["Variant", "build_variants", "bench_variants", "format_bench"]

log = logging.getLogger(__name__)

VARIANTS = ("dense", "ssc", "pruned", "dw_separable")


@dataclass
class Variant:
    name: str
    model: nn.Module  # trainable form
    note: str = ""
    results: dict = field(default_factory=dict)


def build_variants(
    model_name: str,
    density: float,
    *,
    in_channels: int = 3,
    num_classes: int | None = None,
    variants=VARIANTS,
    seed: int = 0,
    keep=None,
    pretrained: bool = False,
    init_checkpoint: str | Path | None = None,
) -> list[Variant]:
    """The model dense, as SSC at ``density``, pruned (magnitude) to SSC's exact nonzero count,
    and depthwise-separable at ``density`` (skipped where the budget cannot be met).

    ``keep``: the default rules keeping layers dense (see :func:`ssconv.convert`), the same for
    every variant. ``pretrained`` / ``init_checkpoint``: start the dense model from those
    weights (see :func:`ssconv.models.create_model`, :func:`ssconv.models.load_init_checkpoint`);
    SSC keeps them on its pattern, the pruned variant ranks and masks them.
    """
    rules = {"keep": tuple(KEEP_RULES if keep is None else keep)}

    torch.manual_seed(seed)
    dense = create_model(
        model_name, num_classes=num_classes, in_channels=in_channels, pretrained=pretrained
    )
    if init_checkpoint:
        from ssconv.models.weights import load_init_checkpoint

        load_init_checkpoint(dense, init_checkpoint, what=f"model {model_name!r}")
    out: list[Variant] = []
    ssc = convert(
        dense,
        density=density,
        warn_coverage=False,
        copy_weights=bool(pretrained or init_checkpoint),
        **rules,
    )
    for name in variants:
        if name == "dense":
            out.append(Variant("dense", copy.deepcopy(dense)))
        elif name == "ssc":
            out.append(Variant("ssc", ssc.model, f"density {ssc.density:.4f}"))
        elif name == "pruned":
            pruned = copy.deepcopy(dense)
            build_rival(
                pruned,
                "magnitude",
                density=density,
                num_params=ssc.weight_params,
                seed=seed,
                **rules,
            )
            out.append(Variant("pruned", pruned, "magnitude masks, same nonzero count as SSC"))
        elif name == "dw_separable":
            try:
                dw = build_rival(copy.deepcopy(dense), "dw_separable", density=density, **rules)
            except (BudgetInfeasibleError, NoConvertibleLayerError) as exc:
                log.warning("dw_separable skipped: %s", exc)
                continue
            out.append(Variant("dw_separable", dw.model, f"density {dw.density:.4f}"))
        else:
            raise ValueError(f"unknown variant {name!r}; choose from {VARIANTS}")
    return out


def _deployable(model: nn.Module) -> nn.Module:
    from ssconv.deploy import freeze
    from ssconv.pruning import remove_masks

    return freeze(remove_masks(copy.deepcopy(model)))


def bench_variants(
    variants: list[Variant],
    input_size: tuple[int, int, int],
    *,
    batch: int = 64,
    device: str = "cpu",
    train: bool = False,
    onnx: bool = False,
    channels_last: bool = True,
    repeats: int = 11,
    tune: bool = False,
    compile: bool = False,
) -> dict:
    """Measure every variant; returns a JSON-ready dict (rows + machine).

    ``compile``: also time each frozen model under ``torch.compile`` (inductor), whose
    compilation is excluded from the timings.
    """
    dev = torch.device(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(batch, *input_size, device=dev).contiguous(memory_format=fmt)
    for v in variants:
        v.model.to(dev).to(memory_format=fmt)
        if tune:
            from ssconv.layers.tuning import autotune

            autotune(v.model, x, training=False)
        prof = profile(v.model, (1, *input_size), device=dev)
        v.results.update(
            params=prof.weight_params,
            density=prof.density,
            effective_macs=prof.effective_macs,
            executed_macs=prof.executed_macs,
        )
    frozen = {v.name: _deployable(v.model).to(dev).to(memory_format=fmt) for v in variants}
    for v in variants:
        v.results["executed_macs_frozen"] = profile(
            frozen[v.name], (1, *input_size), device=dev
        ).executed_macs
    with torch.inference_mode():
        stats = measure(
            {n: (lambda m=m: m(x)) for n, m in frozen.items()}, repeats=repeats, device=dev
        )
    for v in variants:
        v.results["latency"] = stats[v.name]
    if compile:
        compiled = {n: torch.compile(m) for n, m in frozen.items()}
        with torch.inference_mode():
            for m in compiled.values():
                m(x)  # compile outside the timed region
            cstats = measure(
                {n: (lambda m=m: m(x)) for n, m in compiled.items()}, repeats=repeats, device=dev
            )
        for v in variants:
            v.results["compiled"] = cstats[v.name]
    if train:
        steps = {}
        y = torch.randint(0, 10, (batch,), device=dev)
        for v in variants:
            model = v.model.train()
            if tune:
                from ssconv.layers.tuning import autotune

                autotune(model, x, training=True)
            opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
            n_out = model(x[:1]).shape[1]

            def step(model=model, opt=opt, n_out=n_out):
                loss = F.cross_entropy(model(x), y % n_out)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            steps[v.name] = step
        train_stats = measure(steps, repeats=max(3, repeats // 2), warmup=2, device=dev)
        for v in variants:
            v.results["train_step"] = train_stats[v.name]
    if onnx:
        _bench_onnx(variants, frozen, x, repeats)
    dense = next((v for v in variants if v.name == "dense"), None)
    rows = []
    for v in variants:
        r = dict(v.results)
        row = {
            "variant": v.name,
            "note": v.note,
            "params": r["params"],
            "density": r["density"],
            "effective_macs": r["effective_macs"],
            "executed_macs": r["executed_macs_frozen"],
        }
        if "onnx_error" in r:
            row["onnx_error"] = r["onnx_error"]
        for key in ("latency", "compiled", "train_step", "onnx"):
            if key in r:
                s: Stats = r[key]
                row[f"{key}_ms"] = s.median * 1e3
                row[f"{key}_spread"] = s.spread
                if dense is not None and key in dense.results:
                    row[f"{key}_speedup"] = dense.results[key].median / s.median
        rows.append(row)
    return {
        "machine": machine_info(dev),
        "batch": batch,
        "input_size": list(input_size),
        "memory_format": "channels_last" if channels_last else "NCHW",
        "rows": rows,
        "tuned": tune,
    }


def _bench_onnx(variants, frozen, x, repeats) -> None:
    import onnxruntime as ort

    from ssconv.deploy import export_onnx

    sessions = {}
    with tempfile.TemporaryDirectory() as tmp:
        for v in variants:
            path = Path(tmp) / f"{v.name}.onnx"
            try:
                export_onnx(frozen[v.name], path, tuple(x.shape), check=True)
            except Exception as exc:  # one variant's failure must not lose the others' figures
                log.warning("onnx: %s not timed: %s", v.name, exc)
                v.results["onnx_error"] = str(exc).splitlines()[0]
                continue
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = torch.get_num_threads()
            sessions[v.name] = ort.InferenceSession(
                str(path), opts, providers=["CPUExecutionProvider"]
            )
        feed = x.contiguous().cpu().numpy()
        calls = {
            n: (lambda s=s: s.run(None, {s.get_inputs()[0].name: feed}))
            for n, s in sessions.items()
        }
        stats = measure(calls, repeats=repeats) if calls else {}
    for v in variants:
        if v.name in stats:
            v.results["onnx"] = stats[v.name]


def format_bench(result: dict) -> str:
    from ssconv.utils.text import format_count

    cols = ["variant", "params", "density", "eff. MACs", "exec. MACs", "latency ms", "speed-up"]
    has_train = any("train_step_ms" in r for r in result["rows"])
    has_onnx = any("onnx_ms" in r for r in result["rows"])
    has_compiled = any("compiled_ms" in r for r in result["rows"])
    if has_compiled:
        cols += ["compiled ms", "compiled speed-up"]
    if has_train:
        cols += ["train step ms", "train speed-up"]
    if has_onnx:
        cols += ["onnxruntime ms", "ort speed-up"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in result["rows"]:
        cells = [
            r["variant"],
            format_count(r["params"]),
            f"{r['density']:.4f}",
            format_count(r["effective_macs"]),
            format_count(r["executed_macs"]),
            f"{r['latency_ms']:.2f} ± {r['latency_spread'] * 100:.0f}%",
            f"{r.get('latency_speedup', 1.0):.2f}x",
        ]
        if has_compiled:
            cells += [f"{r['compiled_ms']:.2f}", f"{r.get('compiled_speedup', 1.0):.2f}x"]
        if has_train:
            cells += [
                f"{r['train_step_ms']:.1f} ± {r['train_step_spread'] * 100:.0f}%",
                f"{r.get('train_step_speedup', 1.0):.2f}x",
            ]
        if has_onnx:
            if "onnx_ms" in r:
                cells += [f"{r['onnx_ms']:.2f}", f"{r.get('onnx_speedup', 1.0):.2f}x"]
            else:
                cells += ["failed (see log)", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    m = result["machine"]
    lines.append(
        f"\nbatch {result['batch']}, input {tuple(result['input_size'])}, "
        f"{result['memory_format']}, {m['device']}, {m['threads']} threads, {m['processor']}, "
        f"torch {m['torch']}, {m['date']}; median of interleaved repeats ± interquartile range "
        f"(relative); inference on the frozen (deployable) models"
        + (", backends autotuned" if result.get("tuned") else "")
    )
    return "\n".join(lines)


def default_input_size(model_name: str, in_channels: int) -> tuple[int, int, int]:
    size = model_info(model_name).input_size
    return (in_channels, size[1], size[2])
