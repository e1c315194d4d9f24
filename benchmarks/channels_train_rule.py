"""Training on the channel-lane kernels for short rows: the AUTO_CHANNELS_TRAIN_* rule against
the stock choice, inside whole models, in one process.

    python benchmarks/channels_train_rule.py --model vgg19_bn --density 0.1
        [--threads 2] [--repeats 9] [--max-width 8] [--layers-only | --models-only]
        [--json out.json]

Builds the model dense, as SSC at the density and depthwise-separable (as ``ssconv bench``
does; ResNet-50 at 224 x 224 with batch 8, the CIFAR models at 32 x 32 with batch 64), with
ssconv's BatchNorm and max pooling for all, NCHW. Then, interleaved by
:func:`ssconv.utils.timing.measure` so that the machine's drift cancels out of the ratios:

- per layer: every SSC layer the rule moves to the channel-lane kernels (at the input size it
  gets inside the model, one row per distinct layer), forward + backward with the rule as it
  is and with it switched off (``AUTO_CHANNELS_TRAIN_MIN_CHANNELS`` raised past every layer:
  the stock choice);
- whole models: one SGD step of dense, SSC with the rule, SSC without it, and
  depthwise-separable.

``--max-width`` sets ``AUTO_CHANNELS_TRAIN_MAX_WIDTH`` for the rule's arm (e.g. 14 to see the
ResNet-50 layers it leaves out). Speed is never asserted in tests; record the output in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json

import torch

from ssconv import SSConv2d
from ssconv.bench.models import build_variants, train_step
from ssconv.layers import dispatch
from ssconv.layers.batchnorm import fast_batchnorm
from ssconv.layers.pooling import fast_pooling
from ssconv.utils.malloc import tune_malloc
from ssconv.utils.timing import machine_info, measure

OFF = 1 << 30  # AUTO_CHANNELS_TRAIN_MIN_CHANNELS past every layer: the stock choice


def _switched(fn, min_channels: int, max_width: int):
    """``fn`` run under the rule's settings, restored afterwards."""

    def run():
        saved = dispatch.AUTO_CHANNELS_TRAIN_MIN_CHANNELS, dispatch.AUTO_CHANNELS_TRAIN_MAX_WIDTH
        dispatch.AUTO_CHANNELS_TRAIN_MIN_CHANNELS = min_channels
        dispatch.AUTO_CHANNELS_TRAIN_MAX_WIDTH = max_width
        try:
            return fn()
        finally:
            dispatch.AUTO_CHANNELS_TRAIN_MIN_CHANNELS = saved[0]
            dispatch.AUTO_CHANNELS_TRAIN_MAX_WIDTH = saved[1]

    return run


def _input_shapes(model, x) -> dict:
    """The input shape of every SSC layer of ``model`` on ``x``."""
    shapes = {}
    hooks = [
        m.register_forward_hook(lambda mod, inp, out: shapes.__setitem__(mod, inp[0].shape))
        for m in model.modules()
        if isinstance(m, SSConv2d)
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return shapes


def _layer_rows(model, x, args, on) -> list[dict]:
    rows, seen = [], set()
    for layer, shape in _input_shapes(model, x).items():
        kernel = _switched(lambda lay=layer, w=shape[-1]: dispatch.train_kernel(lay, w), *on)
        if kernel() != "channels":
            continue
        key = (layer.extra_repr(), tuple(shape))
        if key in seen:
            continue
        seen.add(key)
        xin = torch.randn(shape).requires_grad_(True)

        def step(layer=layer, xin=xin):
            y = layer(xin)
            y.backward(torch.ones_like(y))
            xin.grad = None
            layer.zero_grad(set_to_none=True)

        stats = measure(
            {"rule": _switched(step, *on), "stock": _switched(step, OFF, on[1])},
            repeats=args.repeats,
            warmup=2,
        )
        row = {
            "layer": f"{layer.in_channels} -> {layer.out_channels} @{shape[-1]}",
            "groups": layer.groups,
            "period": layer.period,
            "spatial": layer.spatial,
            "density": round(layer.density, 4),
            "stock_backend": layer._stock_backend(),
            "rule_ms": stats["rule"].median * 1e3,
            "stock_ms": stats["stock"].median * 1e3,
        }
        row["speedup"] = row["stock_ms"] / row["rule_ms"]
        rows.append(row)
        print(
            f"| {row['layer']} | {row['groups']} | {row['period']} | {row['spatial']} | "
            f"{row['density']:.3f} | {row['stock_ms']:.2f} ({row['stock_backend']}) | "
            f"{row['rule_ms']:.2f} | **{row['speedup']:.2f}x** |",
            flush=True,
        )
    return rows


def main(argv=None) -> int:
    tune_malloc()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="vgg19_bn")
    p.add_argument("--density", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--max-width", type=int, default=dispatch.AUTO_CHANNELS_TRAIN_MAX_WIDTH)
    only = p.add_mutually_exclusive_group()
    only.add_argument("--layers-only", action="store_true")
    only.add_argument("--models-only", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    batch, size = (8, 224) if args.model == "resnet50" else (64, 32)
    variants = {
        v.name: v.model
        for v in build_variants(args.model, args.density, variants=("dense", "ssc", "dw_separable"))
    }
    for m in variants.values():
        fast_batchnorm(m)
        fast_pooling(m)
        m.train()
    x = torch.randn(batch, 3, size, size)
    target = torch.randint(0, 10, (batch,))
    on = (dispatch.AUTO_CHANNELS_TRAIN_MIN_CHANNELS, args.max_width)
    out = {"machine": machine_info(), "args": vars(args), "layers": [], "models": {}}
    if not args.models_only:
        print(f"{args.model} at {args.density}, forward + backward per SSC layer, batch {batch}")
        print("| layer | G | P | spatial | density | stock ms | channel-lane ms | speed-up |")
        print("|---|---|---|---|---|---|---|---|")
        out["layers"] = _layer_rows(variants["ssc"], x, args, on)
    if not args.layers_only:
        cands = {}
        for name, m in variants.items():
            step = train_step(m, x, target)
            if name == "ssc":
                cands["ssc (rule)"] = _switched(step, *on)
                cands["ssc (stock)"] = _switched(step, OFF, on[1])
            else:
                cands[name] = step
        stats = measure(cands, repeats=args.repeats, warmup=2)
        dense = stats["dense"].median
        print(f"\n{args.model} at {args.density}, one SGD step, batch {batch}, NCHW")
        print("| model | ms | p25-p75 | vs dense |")
        print("|---|---|---|---|")
        for name, s in stats.items():
            out["models"][name] = {
                "ms": s.median * 1e3,
                "p25": s.p25 * 1e3,
                "p75": s.p75 * 1e3,
                "vs_dense": dense / s.median,
            }
            print(
                f"| {name} | {s.median * 1e3:.1f} | {s.p25 * 1e3:.1f}-{s.p75 * 1e3:.1f} | "
                f"{dense / s.median:.2f}x |"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
