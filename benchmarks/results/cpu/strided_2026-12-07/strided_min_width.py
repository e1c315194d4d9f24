"""Strided SSC layers on the pixel kernels against the stock choice, training and inference.

    python strided_min_width.py OUT.json    (2 threads; the table goes to stdout)

Each layer is timed with AUTO_FUSED_STRIDED_MIN_WIDTH lowered to 1 (pixel kernels) and raised
to 99 (the stock choice), interleaved (docs/benchmarks.md, "The strided-layer rule,
re-measured").
"""

import json
import sys

import torch

from ssconv import SSConv2d
from ssconv.bench.layers import DEFAULT_SETTINGS
from ssconv.layers import dispatch
from ssconv.utils.timing import measure

torch.set_num_threads(2)
CASES = [(32, 64, 16, p, g, pw, sp) for (g, p, pw, sp) in DEFAULT_SETTINGS] + [
    (32, 64, 14, 4, 1, True, "full"),
    (32, 64, 14, 8, 1, True, "full"),
    (32, 64, 14, 16, 1, True, "full"),
    (64, 128, 16, 8, 1, True, "full"),
    (128, 256, 16, 8, 1, True, "full"),
]


def with_min(width, fn):
    old = dispatch.AUTO_FUSED_STRIDED_MIN_WIDTH
    dispatch.AUTO_FUSED_STRIDED_MIN_WIDTH = width
    try:
        return fn()
    finally:
        dispatch.AUTO_FUSED_STRIDED_MIN_WIDTH = old


def main(out):
    rows = []
    for ci, co, s, per, g, pw, sp in CASES:
        layer = SSConv2d(
            ci, co, 3, 2, 1, period=per, groups=g, pointwise=pw, spatial=sp, bias=False
        )
        x = torch.randn(64, ci, s, s)
        xg = x.clone().requires_grad_(True)

        def train(layer=layer, xg=xg):
            layer(xg).sum().backward()

        def infer(layer=layer, x=x):
            with torch.no_grad():
                return layer(x)

        paths = tuple(
            with_min(w, lambda layer=layer, t=t: layer.call_path(t))
            for t in (xg, x)
            for w in (1, 99)
        )
        st = measure(
            {
                "tr_f": lambda f=train: with_min(1, f),
                "tr_s": lambda f=train: with_min(99, f),
                "in_f": lambda f=infer: with_min(1, f),
                "in_s": lambda f=infer: with_min(99, f),
            },
            repeats=9,
        )
        t = {k: v.median * 1e3 for k, v in st.items()}
        name = f"{ci}->{co}@{s}/s2 G{g} P{per} pw{int(pw)} {sp}"
        r = dict(layer=name, paths=paths, **t)
        r["train_gain"], r["infer_gain"] = t["tr_s"] / t["tr_f"], t["in_s"] / t["in_f"]
        rows.append(r)
        print(
            f"{name}: train pixels {t['tr_f']:.2f} vs stock {t['tr_s']:.2f} "
            f"({r['train_gain']:.2f}x)  infer pixels {t['in_f']:.2f} vs stock {t['in_s']:.2f} "
            f"({r['infer_gain']:.2f}x)  {paths}",
            flush=True,
        )
    with open(out, "w") as fh:
        json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
