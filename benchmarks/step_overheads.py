"""SSC training steps with and without the per-step weight plumbing, in one process.

    python benchmarks/step_overheads.py [--model cifar_resnet32] [--density 0.1] [--threads 2]
                                        [--batch 64] [--repeats 15] [--fast-batchnorm]

Times one SGD step (NCHW, the trainer's layout) of dense and of SSC twice: SSC packing its
kernels' weights straight from the parameters through index maps (``SSConv2d._param_maps``,
the default since 2026-12-07), and SSC packing them through ``to_dense()`` and its autograd
graph of indexing ops (what every step did before; the layer still falls back to it where a
dense weight is not a placement of its parameters). All candidates interleaved, so that the
machine's drift cancels out of the ratios. Run it once more with ``SSCONV_NO_MALLOC_TUNING=1``
to see what glibc's default malloc costs (``ssconv.utils.malloc``: separate processes, since a
process's allocator settings cannot be undone). Speed is never asserted in tests.
"""

from __future__ import annotations

import argparse
import copy
import json

import torch

from ssconv import SSConv2d
from ssconv.bench.models import build_variants, train_step
from ssconv.layers.batchnorm import fast_batchnorm
from ssconv.utils.malloc import tune_malloc
from ssconv.utils.timing import machine_info, measure


def _step(model, x, y):
    model.train()
    return train_step(model, x, y)


def main(argv=None) -> int:
    tune_malloc()  # as the ssconv command does (ssconv.utils.malloc)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="cifar_resnet32")
    p.add_argument("--density", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=32, help="input height = width")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--fast-batchnorm", action="store_true", help="ssconv's BatchNorm for all")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dense, ssc = build_variants(args.model, args.density, variants=("dense", "ssc"))
    models = {
        "dense": copy.deepcopy(dense.model),
        "ssc": copy.deepcopy(ssc.model),
        "ssc, through to_dense": copy.deepcopy(ssc.model),
    }
    for m in models["ssc, through to_dense"].modules():
        if isinstance(m, SSConv2d):
            m.__dict__["_fused_param_maps"] = None  # as for a weight that is not a placement
    if args.fast_batchnorm:
        for m in models.values():
            fast_batchnorm(m)
    x = torch.randn(args.batch, 3, args.size, args.size)
    y = torch.randint(0, dense.model(x[:1]).shape[1], (args.batch,))
    stats = measure({k: _step(m, x, y) for k, m in models.items()}, repeats=args.repeats)
    t = {k: s.median * 1e3 for k, s in stats.items()}
    info = machine_info()
    print(
        f"{args.model} at {args.density}, batch {args.batch}, {args.threads} threads, NCHW, "
        f"{'ssconv' if args.fast_batchnorm else 'PyTorch'} BatchNorm, malloc tuned: "
        f"{info['malloc_tuned']}, {info['processor']}, {info['date']}\n"
    )
    print("| model | ms / step | spread | vs dense |\n|---|---|---|---|")
    for k, s in stats.items():
        print(f"| {k} | {t[k]:.1f} | ±{s.spread * 50:.0f} % | {t['dense'] / t[k]:.2f}x |")
    gain = t["ssc, through to_dense"] / t["ssc"]
    print(f"\nparameter maps: SSC step {gain:.3f}x as fast as through to_dense")
    if args.json:
        with open(args.json, "w") as fh:
            record = {"machine": info, "args": vars(args), "ms": t, "maps_gain": gain}
            json.dump(record, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
