"""The fused kernels' 16-lane (AVX-512) build against their 8-lane (AVX2) build, in one process.

    python benchmarks/isa_ab.py [--threads 2] [--repeats 9] [--batch 64] [--json out.json]
                                [--shapes all|resnet32|vgg19] [--max-density 0.35]

Both builds are compiled (``SSCONV_NO_AVX512=1`` selects the 8-lane one) and loaded side by
side; every layer of ``benchmarks/layer_speed.py``'s grid then runs as ``auto`` runs it (NCHW
inference, and forward + backward), once on each build, the two interleaved with dense by
:func:`ssconv.utils.timing.measure`, so that the machine's drift between runs (10-30 % on a
shared VM) cancels out of the ratio. Needs a CPU whose ATen capability is AVX512. Prints a
Markdown table and the median time ratios; speed is never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import torch
from torch import nn

from ssconv import SSConv2d
from ssconv.bench.layers import DEFAULT_SETTINGS, RESNET32_SHAPES, VGG19_SHAPES
from ssconv.kernels import fused
from ssconv.layers.pattern import SSCPattern
from ssconv.utils.timing import machine_info, measure


def _builds():
    """(8-lane module, 16-lane module), each compiled once per machine and kernel version."""
    mods = {}
    for name, off in (("avx2", "1"), ("avx512", None)):
        if off:
            os.environ["SSCONV_NO_AVX512"] = off
        else:
            os.environ.pop("SSCONV_NO_AVX512", None)
        mods[name] = fused._build(False)
        if mods[name].isa() != name:
            sys.exit(f"isa_ab: the {name} build reports {mods[name].isa()!r}")
    os.environ.pop("SSCONV_NO_AVX512", None)
    fused._tried, fused._module, fused._error = True, mods["avx512"], None
    return mods


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--shapes", choices=("all", "resnet32", "vgg19"), default="all")
    p.add_argument("--max-density", type=float, default=0.35)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if torch.backends.cpu.get_cpu_capability() != "AVX512":
        sys.exit("isa_ab: this CPU has no AVX512 capability in ATen; nothing to compare")
    torch.set_num_threads(args.threads)
    mods = _builds()
    shapes = {"resnet32": RESNET32_SHAPES, "vgg19": VGG19_SHAPES}.get(
        args.shapes, RESNET32_SHAPES + VGG19_SHAPES
    )
    rows = []
    print(
        "| layer | G | P | pw | spatial | density | dense ms | infer 8-lane ms | infer 16-lane ms "
        "| 16-lane speed-up | train 8-lane ms | train 16-lane ms | 16-lane speed-up |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        flush=True,
    )
    for shape in shapes:
        x = torch.randn(args.batch, shape.in_channels, shape.size, shape.size)
        xg = x.clone().requires_grad_(True)
        dense = nn.Conv2d(shape.in_channels, shape.out_channels, 3, shape.stride, 1, bias=False)
        for g, per, pw, sp in DEFAULT_SETTINGS:
            try:
                pattern = SSCPattern(shape.in_channels, shape.out_channels, 3, g, per, pw, sp)
            except ValueError:
                continue
            layer = SSConv2d(
                shape.in_channels,
                shape.out_channels,
                3,
                shape.stride,
                1,
                groups=g,
                bias=False,
                period=per,
                pointwise=pw,
                spatial=sp,
            )
            if layer.density > args.max_density:
                continue
            del pattern

            def infer(mod, layer=layer, x=x):
                fused._module = mod
                with torch.no_grad():
                    return layer(x)

            def train(mod, layer=layer, xg=xg):
                fused._module = mod
                layer(xg).sum().backward()

            cands = {"dense": lambda dense=dense, x=x: dense(x)}
            for name, mod in mods.items():
                cands[f"infer_{name}"] = lambda mod=mod, f=infer: f(mod)
                cands[f"train_{name}"] = lambda mod=mod, f=train: f(mod)
            stats = measure(cands, repeats=args.repeats)
            t = {k: s.median * 1e3 for k, s in stats.items()}
            rows.append(
                {
                    "shape": f"{shape.net} {shape.in_channels}->{shape.out_channels} "
                    f"@{shape.size}" + (f"/s{shape.stride}" if shape.stride > 1 else ""),
                    "groups": g,
                    "period": per,
                    "pointwise": pw,
                    "spatial": sp,
                    "density": layer.density,
                    **{f"{k}_ms": v for k, v in t.items()},
                    "infer_ratio": t["infer_avx2"] / t["infer_avx512"],
                    "train_ratio": t["train_avx2"] / t["train_avx512"],
                }
            )
            r = rows[-1]
            print(
                f"| {r['shape']} | {g} | {per} | {'y' if pw else 'n'} | {sp} | {r['density']:.3f} "
                f"| {t['dense']:.2f} | {t['infer_avx2']:.2f} | {t['infer_avx512']:.2f} "
                f"| **{r['infer_ratio']:.2f}x** | {t['train_avx2']:.2f} | {t['train_avx512']:.2f} "
                f"| **{r['train_ratio']:.2f}x** |",
                flush=True,
            )
    summary = {
        "rows": len(rows),
        "median_infer_speedup": statistics.median(r["infer_ratio"] for r in rows),
        "median_train_speedup": statistics.median(r["train_ratio"] for r in rows),
        "min_infer_speedup": min(r["infer_ratio"] for r in rows),
        "min_train_speedup": min(r["train_ratio"] for r in rows),
    }
    print(json.dumps({"machine": machine_info(), **summary}, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {"machine": machine_info(), "batch": args.batch, "rows": rows, "summary": summary},
                fh,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
