"""Two builds of the fused CPU kernels against each other, in one process, interleaved.

    python benchmarks/kernel_ab.py --isa [--threads 2] [--repeats 9] [--json out.json]
    python benchmarks/kernel_ab.py --baseline OLD.cpp [...]
                                   [--shapes all|resnet32|vgg19] [--max-density 0.35]
                                   [--max-width N]

``--isa``: the 8-lane (``SSCONV_NO_AVX512=1``) against the 16-lane build of this source (needs
a CPU whose ATen capability is AVX512). ``--baseline OLD.cpp``: another version of
``ssc_fused.cpp`` (e.g. ``git show HEAD~1:src/ssconv/kernels/ssc_fused.cpp > /tmp/old.cpp``)
against this one, same flags. Both builds are compiled once (cached like the kernel) and loaded
side by side; every layer of ``benchmarks/layer_speed.py``'s grid then runs as ``auto`` runs it
(NCHW inference, and forward + backward) on each, interleaved with dense by
:func:`ssconv.utils.timing.measure`, so that the machine's drift between runs (10-30 % on a
shared VM) cancels out of the ratio. Prints a Markdown table and the median ratios (time of A
over time of B: above 1 means B, the new or 16-lane build, is faster); speed is never asserted
in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import torch
from torch import nn

from ssconv.bench.layers import RESNET32_SHAPES, VGG19_SHAPES, grid_layers
from ssconv.kernels import fused
from ssconv.utils.malloc import tune_malloc
from ssconv.utils.timing import machine_info, measure


def _builds(baseline: str | None) -> dict:
    """{"A": old or 8-lane module, "B": this or 16-lane module}; B is left loaded."""
    if baseline is not None:
        mods = {"A": fused._build(False, source=baseline), "B": fused._build(False)}
    else:
        mods = {}
        for key, name, off in (("A", "avx2", "1"), ("B", "avx512", None)):
            if off:
                os.environ["SSCONV_NO_AVX512"] = off
            else:
                os.environ.pop("SSCONV_NO_AVX512", None)
            mods[key] = fused._build(False)
            if mods[key].isa() != name:
                sys.exit(f"kernel_ab: the {name} build reports {mods[key].isa()!r}")
        os.environ.pop("SSCONV_NO_AVX512", None)
    fused._tried, fused._module, fused._error = True, mods["B"], None
    return mods


def main(argv=None) -> int:
    tune_malloc()  # as the ssconv command does (ssconv.utils.malloc)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--isa", action="store_true", help="8-lane (A) vs 16-lane (B) build")
    what.add_argument("--baseline", metavar="OLD.cpp", help="that source (A) vs this one (B)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--shapes", choices=("all", "resnet32", "vgg19"), default="all")
    p.add_argument("--max-density", type=float, default=0.35)
    p.add_argument(
        "--max-width", type=int, default=None, help="only shapes of at most this many pixels a row"
    )
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.isa and torch.backends.cpu.get_cpu_capability() != "AVX512":
        sys.exit("kernel_ab: this CPU has no AVX512 capability in ATen; nothing to compare")
    if args.baseline and not os.path.isfile(args.baseline):
        sys.exit(f"kernel_ab: --baseline {args.baseline}: no such file")
    torch.set_num_threads(args.threads)
    mods = _builds(args.baseline)
    label = {"A": "8-lane", "B": "16-lane"} if args.isa else {"A": "baseline", "B": "this"}
    shapes = {"resnet32": RESNET32_SHAPES, "vgg19": VGG19_SHAPES}.get(
        args.shapes, RESNET32_SHAPES + VGG19_SHAPES
    )
    if args.max_width is not None:
        shapes = [s for s in shapes if s.size <= args.max_width]
    rows = []
    print(
        f"| layer | G | P | pw | spatial | density | dense ms | infer {label['A']} ms "
        f"| infer {label['B']} ms | {label['B']} speed-up | train {label['A']} ms "
        f"| train {label['B']} ms | {label['B']} speed-up |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        flush=True,
    )
    for shape in shapes:
        x = torch.randn(args.batch, shape.in_channels, shape.size, shape.size)
        xg = x.clone().requires_grad_(True)
        dense = nn.Conv2d(shape.in_channels, shape.out_channels, 3, shape.stride, 1, bias=False)
        for (g, per, pw, sp), layer in grid_layers(shape).items():
            if layer.density > args.max_density:
                continue

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
                    "infer_ratio": t["infer_A"] / t["infer_B"],
                    "train_ratio": t["train_A"] / t["train_B"],
                }
            )
            r = rows[-1]
            print(
                f"| {r['shape']} | {g} | {per} | {'y' if pw else 'n'} | {sp} | {r['density']:.3f} "
                f"| {t['dense']:.2f} | {t['infer_A']:.2f} | {t['infer_B']:.2f} "
                f"| **{r['infer_ratio']:.2f}x** | {t['train_A']:.2f} | {t['train_B']:.2f} "
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
