"""Inference of a frozen SSC model in channels_last at several PIXELS_CHANNELS_LAST_MAX caps
(layers of at most that many channels go through an NCHW copy to the pixel kernel).

    python benchmarks/channels_last_cap.py MODEL [--density 0.1] [--caps 32 64 128]

Dense and SSC at each cap, one process, 2 threads, batch 64, 9 interleaved repeats.
"""

from __future__ import annotations

import argparse
import sys

import torch

import ssconv.layers.dispatch as dispatch
from ssconv.bench.models import bench_variants, build_variants
from ssconv.utils.malloc import tune_malloc


def main(argv=None) -> int:
    tune_malloc()  # as the ssconv command does (ssconv.utils.malloc)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("model")
    p.add_argument("--density", type=float, default=0.1)
    p.add_argument("--caps", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    for cap in args.caps:
        dispatch.PIXELS_CHANNELS_LAST_MAX = cap
        torch.manual_seed(0)
        variants = build_variants(args.model, args.density, variants=("dense", "ssc"))
        result = bench_variants(variants, (3, 32, 32), batch=64, repeats=9, channels_last=True)
        rows = {r["variant"]: r for r in result["rows"]}
        print(
            f"{args.model} cap {cap}: dense {rows['dense']['latency_ms']:.1f} ms, "
            f"SSC {rows['ssc']['latency_ms']:.1f} ms ({rows['ssc']['latency_speedup']:.2f}x)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
