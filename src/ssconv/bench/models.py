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
from torch import Tensor, nn

from ssconv import profile
from ssconv.conversion import build_rival, convert
from ssconv.errors import BudgetInfeasibleError, NoConvertibleLayerError
from ssconv.models import create_model, model_info
from ssconv.sparsity.selection import KEEP_RULES
from ssconv.utils.timing import Stats, machine_info, measure

__all__ = ["Variant", "build_variants", "bench_variants", "format_bench", "train_step"]

log = logging.getLogger(__name__)

VARIANTS = ("dense", "ssc", "pruned", "dw_separable")


def variant_names() -> tuple[str, ...]:
    """Every name :func:`build_variants` takes: :data:`VARIANTS`, then the SSC presets of
    training (``ssc_thin_point``, ``ssc_depthwise``, ...), each converted at the same density."""
    from ssconv.train.config import SSC_PRESETS

    return VARIANTS + tuple(n for n in SSC_PRESETS if n not in VARIANTS)


def parse_variant(name: str) -> tuple[str, str | None]:
    """``NAME`` or ``NAME:DISTRIBUTION``: a name of :func:`variant_names`, and for SSC variants
    (``ssc`` and the presets) optionally the layer densities (``ssc_thin_point:erk``)."""
    from ssconv.sparsity.budget import DISTRIBUTIONS

    base, sep, distribution = name.partition(":")
    if base not in variant_names():
        raise ValueError(f"unknown variant {base!r}; choose from {' '.join(variant_names())}")
    if not sep:
        return base, None
    if base in ("dense", "pruned", "dw_separable"):
        raise ValueError(
            f"variant {name!r}: a distribution applies to SSC variants only (ssc and its presets)"
        )
    if distribution not in DISTRIBUTIONS:
        raise ValueError(
            f"variant {name!r}: unknown distribution {distribution!r}; choose from "
            f"{' '.join(DISTRIBUTIONS)}"
        )
    return base, distribution


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
    and depthwise-separable at ``density`` (skipped where the budget cannot be met); SSC
    presets of training (``ssc_thin_point``, ...: :func:`variant_names`) are converted at
    ``density`` with the preset's settings, exactly as ``ssconv train --method NAME`` builds
    them; ``NAME:erk`` (:func:`parse_variant`) converts an SSC variant with ERK layer
    densities.

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
    from_weights = bool(pretrained or init_checkpoint)
    ssc = convert(
        dense,
        density=density,
        warn_coverage=False,
        copy_weights=from_weights,
        **rules,
    )
    for name in variants:
        base, distribution = parse_variant(name)
        if distribution is not None:
            out.append(
                _ssc_preset(dense, base, density, rules, from_weights, distribution, label=name)
            )
        elif name == "dense":
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
            out.append(_ssc_preset(dense, name, density, rules, from_weights))
    return out


def _ssc_preset(
    dense: nn.Module,
    name: str,
    density: float,
    rules: dict,
    from_weights: bool,
    distribution: str | None = None,
    label: str | None = None,
):
    from ssconv.train.config import TrainConfig
    from ssconv.train.methods import ssc_settings, ssc_shuffle

    cfg = TrainConfig.from_dict({"method": name, "density": density, "distribution": distribution})
    result = convert(
        copy.deepcopy(dense),
        density=density,
        distribution=cfg.ssc_distribution(),
        shuffle=ssc_shuffle(cfg),
        warn_coverage=False,
        copy_weights=from_weights,
        **ssc_settings(cfg),
        **rules,
    )
    return Variant(label or name, result.model, f"density {result.density:.4f}")


def _deployable(
    model: nn.Module, target: str = "torch", fast_pooling: bool | None = None
) -> nn.Module:
    from ssconv.deploy import freeze

    # a copy, pruning masks baked in
    return freeze(model, target=target, fast_pooling=fast_pooling)


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
    compile: bool | str = False,
    cuda_graphs: bool = False,
    fast_pooling: bool | None = None,
    channels_last_chains: bool = False,
) -> dict:
    """Measure every variant; returns a JSON-ready dict (rows + machine).

    ``channels_last_chains``: the training steps with
    :func:`ssconv.deploy.chain_channels_last` applied to every variant (the training option
    ``channels_last_chains: true``; only SSC layers on the channel-lane kernels chain).

    ``fast_pooling``: every variant's 2 x 2 max pools on ssconv's NCHW kernel
    (:func:`ssconv.layers.pooling.fast_pooling`), in the frozen models and, with ``True``, in
    training too; ``None``: :func:`ssconv.deploy.freeze`'s default (on) in the frozen models,
    PyTorch's pools in training.

    ``compile``: also time each frozen model (and, with ``train``, each training step) under
    ``torch.compile`` (inductor; a mode name such as ``"reduce-overhead"``, or True for the
    default mode), compilation excluded from the timings. ``cuda_graphs`` (CUDA only): also
    time each frozen model, and with ``train`` each whole training step (forward, backward,
    SGD update), captured once in a CUDA graph and replayed, so that kernel launches are not
    what is measured. A variant that cannot be compiled or captured is reported with the
    reason (``compiled_error`` / ``graphed_error``), the others are still timed.
    """
    dev = torch.device(device)
    if cuda_graphs and dev.type != "cuda":
        raise ValueError(f"cuda_graphs needs a CUDA device, got device {device!r}")
    mode = None if compile in (True, "default") else (compile or None)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(batch, *input_size, device=dev).contiguous(memory_format=fmt)
    for v in variants:
        v.model.to(dev).to(memory_format=fmt)
        if fast_pooling:
            from ssconv.layers.pooling import fast_pooling as use_fast_pooling

            use_fast_pooling(v.model)
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
    frozen = {
        v.name: _deployable(v.model, fast_pooling=fast_pooling).to(dev).to(memory_format=fmt)
        for v in variants
    }
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
        with torch.inference_mode():
            calls = {
                # the first call compiles, outside the timings
                v.name: _prepared(
                    v, "compiled", lambda m=frozen[v.name]: _call(torch.compile(m, mode=mode), x)
                )
                for v in variants
            }
            _measure_into(variants, "compiled", calls, repeats=repeats, device=dev)
    if cuda_graphs:
        with torch.inference_mode():
            calls = {
                v.name: _graphed(v, "graphed", lambda m=frozen[v.name]: m(x)) for v in variants
            }
        _measure_into(variants, "graphed", calls, repeats=repeats, device=dev)
    if train:
        steps, compiled_steps, graphed_steps = {}, {}, {}
        y = torch.randint(0, 10, (batch,), device=dev)
        for v in variants:
            model = v.model.train()
            if channels_last_chains:
                from ssconv.deploy import chain_channels_last

                chain_channels_last(model)
            if tune:
                from ssconv.layers.tuning import autotune

                autotune(model, x, training=True)
            steps[v.name] = train_step(model, x, y)
            if compile:
                compiled_steps[v.name] = _prepared(
                    v,
                    "compiled_train_step",
                    lambda model=model: train_step(
                        torch.compile(model, mode=mode), x, y, probe=model
                    ),
                )
            if cuda_graphs:
                step = train_step(model, x, y, graphed=True)
                graphed_steps[v.name] = _graphed(v, "graphed_train_step", step)
        train_repeats = max(3, repeats // 2)
        _measure_into(variants, "train_step", steps, repeats=train_repeats, device=dev)
        for key, calls in (
            ("compiled_train_step", compiled_steps),
            ("graphed_train_step", graphed_steps),
        ):
            _measure_into(variants, key, calls, repeats=train_repeats, device=dev)
    if onnx:
        # Exported as `ssconv export` does: frozen for onnxruntime (freeze's target).
        _bench_onnx(variants, x, repeats)
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
        for key in TIMED:
            if f"{key}_error" in r:
                row[f"{key}_error"] = r[f"{key}_error"]
        for key in TIMED:
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
        "compile_mode": (mode or "default") if compile else None,
        "cuda_graphs": cuda_graphs,
        "fast_pooling": fast_pooling,
        "channels_last_chains": channels_last_chains,
    }


#: What :func:`bench_variants` times (each a ``<key>_ms`` column of a row).
TIMED = (
    "latency",
    "compiled",
    "graphed",
    "train_step",
    "compiled_train_step",
    "graphed_train_step",
    "onnx",
)


def train_step(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    graphed: bool = False,
    probe: nn.Module | None = None,
):
    """One SGD step (forward, cross-entropy, backward, update) of ``model`` on ``(x, y)``;
    ``graphed``: the gradients are zeroed in place instead of freed, so that a CUDA graph's
    replays accumulate into the tensors it captured. ``probe``: the eager model that tells
    the number of outputs (a compiled model's first call on a one-image batch would make
    its later graphs dynamic in the batch size, slower than the static ones timed here)."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    n_out = (model if probe is None else probe)(x[:1]).shape[1]
    target = y % n_out

    def step():
        loss = F.cross_entropy(model(x), target)
        opt.zero_grad(set_to_none=not graphed)
        loss.backward()
        opt.step()

    return step


def _call(model: nn.Module, x: Tensor):
    """``model(x)`` as a callable without arguments."""
    return lambda: model(x)


def _prepared(v: Variant, key: str, make):
    """The callable ``make()`` returns, after a first call (compilation), or None with the
    error stored in the variant (``<key>_error``)."""
    try:
        fn = make()
        fn()
    except Exception as exc:  # one variant's failure must not lose the others' figures
        log.warning("%s: %s not timed: %s", key, v.name, exc)
        v.results[f"{key}_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
        return None
    return fn


def _graphed(v: Variant, key: str, fn):
    """``fn`` captured in a CUDA graph (after warm-up calls on a side stream, as PyTorch's
    CUDA-graph recipe does); returns the graph's replay, or None with the error stored."""
    try:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
    except Exception as exc:
        log.warning("%s: %s not timed: %s", key, v.name, exc)
        v.results[f"{key}_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
        return None
    return graph.replay


def _measure_into(variants, key: str, calls: dict, **kwargs) -> None:
    calls = {n: c for n, c in calls.items() if c is not None}
    stats = measure(calls, **kwargs) if calls else {}
    for v in variants:
        if v.name in stats:
            v.results[key] = stats[v.name]


def _bench_onnx(variants, x, repeats) -> None:
    import onnxruntime as ort

    from ssconv.deploy import export_onnx

    sessions = {}
    with tempfile.TemporaryDirectory() as tmp:
        for v in variants:
            path = Path(tmp) / f"{v.name}.onnx"
            try:
                model = copy.deepcopy(v.model).cpu()  # export_onnx bakes pruning masks in
                export_onnx(model, path, tuple(x.shape), check=True)
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


#: Column titles of the timed figures in :func:`format_bench`: (time, speed-up).
_TITLES = {
    "latency": ("latency ms", "speed-up"),
    "compiled": ("compiled ms", "compiled speed-up"),
    "graphed": ("CUDA graph ms", "graph speed-up"),
    "train_step": ("train step ms", "train speed-up"),
    "compiled_train_step": ("compiled train ms", "compiled train speed-up"),
    "graphed_train_step": ("graphed train ms", "graphed train speed-up"),
    "onnx": ("onnxruntime ms", "ort speed-up"),
}


def format_bench(result: dict) -> str:
    from ssconv.utils.text import format_count

    rows = result["rows"]
    keys = [
        k for k in TIMED if k == "latency" or any(f"{k}_ms" in r or f"{k}_error" in r for r in rows)
    ]
    cols = ["variant", "params", "density", "eff. MACs", "exec. MACs"]
    for k in keys:
        cols += list(_TITLES[k])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [
            r["variant"],
            format_count(r["params"]),
            f"{r['density']:.4f}",
            format_count(r["effective_macs"]),
            format_count(r["executed_macs"]),
        ]
        for k in keys:
            if f"{k}_ms" in r:
                digits = 1 if "train" in k else 2
                spread = (
                    f" ± {r[f'{k}_spread'] * 100:.0f}%" if k in ("latency", "train_step") else ""
                )
                cells += [
                    f"{r[f'{k}_ms']:.{digits}f}{spread}",
                    f"{r.get(f'{k}_speedup', 1.0):.2f}x",
                ]
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
        + (f"; torch.compile mode {result['compile_mode']}" if result.get("compile_mode") else "")
    )
    return "\n".join(lines)


def default_input_size(model_name: str, in_channels: int) -> tuple[int, int, int]:
    size = model_info(model_name).input_size
    return (in_channels, size[1], size[2])
