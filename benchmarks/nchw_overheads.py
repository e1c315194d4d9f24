"""What NCHW costs frozen models and training steps beside the convolutions, in one process.

    python benchmarks/nchw_overheads.py [--model vgg19_bn] [--density 0.1] [--threads 2]
                                        [--batch 64] [--size 32] [--repeats 15] [--train]
                                        [--keep RULE ...] [--json F]

Inference (NCHW, the pixel kernels' layout): dense, SSC and depthwise-separable models frozen
four ways, all timed interleaved so that the machine's drift cancels out of the ratios:
``plain`` (PyTorch's max pools, every fused-kernel layer copying its input to channels_last and
its output back), ``pools`` (2 x 2 max pools on ssconv's NCHW kernel,
:func:`ssconv.layers.pooling.fast_pooling`), ``pools + chains`` (also
:func:`ssconv.deploy.chain_channels_last`: fused-kernel layers hand channels_last outputs to
the next) and ``+ ReLU fused`` (also :func:`ssconv.deploy.fuse_relu`: a ReLU that alone reads
a frozen SSC layer's output applied in the kernel's store; what :func:`ssconv.deploy.freeze`
does by default). ``--train`` also times one SGD step (NCHW, ssconv's BatchNorm for every
model) three ways: PyTorch's max pools,
ssconv's, and ssconv's with :func:`ssconv.deploy.chain_channels_last` applied to the trainable
model (the training option ``channels_last_chains: true``: SSC layers that train on the
channel-lane kernels hand their outputs on in channels_last; dense and depthwise-separable
models have none). Speed is never asserted in tests.
"""

from __future__ import annotations

import argparse
import copy
import json

import torch

from ssconv.bench.models import build_variants, train_step
from ssconv.deploy import chain_channels_last, freeze
from ssconv.layers.batchnorm import fast_batchnorm
from ssconv.layers.inference import SSConv2dInference
from ssconv.layers.pooling import fast_pooling
from ssconv.utils.malloc import tune_malloc
from ssconv.utils.timing import machine_info, measure

VARIANTS = ("dense", "ssc", "dw_separable")
FORMS = ("plain", "pools", "pools + chains")
FROZEN_FORMS = (*FORMS, "+ ReLU fused")


def _frozen(model, form: str):
    frozen = freeze(model, fast_pooling=form != "plain", relu_fusion=form == "+ ReLU fused")
    if form not in ("pools + chains", "+ ReLU fused"):
        for m in frozen.modules():
            if isinstance(m, SSConv2dInference):
                m.output_layout = None
    return frozen


def _table(stats, forms, title: str) -> str:
    t = {k: s.median * 1e3 for k, s in stats.items()}
    lines = [f"\n{title}\n", "| model | " + " | ".join(f"{f} ms" for f in forms) + " | "]
    lines[-1] += " | ".join(f"{f} vs dense" for f in forms) + " |"
    lines.append("|---" * (1 + 2 * len(forms)) + "|")
    for v in VARIANTS:
        cells = [f"{t[(v, f)]:.1f} ±{stats[(v, f)].spread * 50:.0f} %" for f in forms]
        cells += [f"{t[('dense', f)] / t[(v, f)]:.2f}x" for f in forms]
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    tune_malloc()  # as the ssconv command does (ssconv.utils.malloc)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="vgg19_bn")
    p.add_argument("--density", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=32, help="input height = width")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--train", action="store_true", help="also time training steps")
    p.add_argument(
        "--keep",
        nargs="*",
        default=None,
        help="layers kept dense (ssconv.convert's keep rules; end_to_end.py times ResNet-50 "
        "with: stem depthwise classifier)",
    )
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    built = {
        v.name: v.model
        for v in build_variants(args.model, args.density, variants=VARIANTS, keep=args.keep)
    }
    x = torch.randn(args.batch, 3, args.size, args.size)
    frozen = {(v, f): _frozen(m, f) for v, m in built.items() for f in FROZEN_FORMS}
    with torch.inference_mode():
        stats = measure({k: (lambda m=m: m(x)) for k, m in frozen.items()}, repeats=args.repeats)
    info = machine_info()
    print(
        f"{args.model} at {args.density}, batch {args.batch}, {args.threads} threads, NCHW, "
        f"{info['processor']}, {info['date']}"
    )
    print(_table(stats, FROZEN_FORMS, "Inference (frozen models)"))
    record = {"machine": info, "args": vars(args)}
    record["inference_ms"] = {f"{v} / {f}": s.median * 1e3 for (v, f), s in stats.items()}
    if args.train:
        y = torch.randint(0, built["dense"](x[:1]).shape[1], (args.batch,))
        steps = {}
        for v, m in built.items():
            for form in FORMS:
                model = copy.deepcopy(m).train()
                fast_batchnorm(model)
                if form != "plain":
                    fast_pooling(model)
                if form == "pools + chains":
                    chain_channels_last(model)
                steps[(v, form)] = train_step(model, x, y)
        tstats = measure(steps, repeats=max(3, args.repeats // 2))
        print(_table(tstats, FORMS, "Training step (ssconv's BatchNorm for all)"))
        record["train_ms"] = {f"{v} / {f}": s.median * 1e3 for (v, f), s in tstats.items()}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(record, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
