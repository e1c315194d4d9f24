"""``ssconv bench MODEL``: dense vs SSC vs pruned-mask vs depthwise-separable, side by side."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ssconv.cli.common import (
    MODEL_HELP,
    CLIError,
    add_threads_arg,
    add_weights_args,
    apply_threads,
    check_model,
    check_output_file,
    check_weights_args,
    density_arg,
    emit_json,
    positive_int,
    user_message,
)
from ssconv.train.config import COMPILE_MODES


def register(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="measure inference (and training) speed of dense, SSC, pruned and dw-separable "
        "variants of a model at one budget",
        description="Build MODEL dense, as SSC at --density, pruned (magnitude masks) to the "
        "same nonzero count and depthwise-separable at --density, then time them side by side "
        "in this process (interleaved repeats, median and spread). Inference uses the "
        "deployable form (masks baked, BatchNorm folded, SSC kernels precomputed).",
    )
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument(
        "--density",
        type=density_arg,
        default=0.1,
        help="model density of the SSC, pruned and depthwise-separable variants",
    )
    p.add_argument("--batch", type=positive_int, default=64, help="images per timed batch")
    p.add_argument(
        "--input-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        default=None,
        help="image size (default: the model's own, e.g. 32 32)",
    )
    p.add_argument("--in-channels", type=int, default=3, help="image channels (1 = grey)")
    p.add_argument(
        "--num-classes", type=int, default=None, help="classifier outputs (default: the model's)"
    )
    add_weights_args(p)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    add_threads_arg(p)
    p.add_argument("--train", action="store_true", help="also time one training step")
    p.add_argument(
        "--fast-batchnorm",
        action="store_true",
        help="every variant's BatchNorm2d layers on ssconv's NCHW kernels in training "
        "(as the training option fast_batchnorm: true does)",
    )
    p.add_argument(
        "--fast-pooling",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="every variant's 2 x 2 max pools on ssconv's NCHW kernel, in the frozen models and "
        "in training (--no-fast-pooling: PyTorch's in both; default: ssconv's in the frozen "
        "models, as ssconv.deploy.freeze does, PyTorch's in training)",
    )
    p.add_argument(
        "--channels-last-chains",
        action="store_true",
        help="training steps with SSC layers on the channel-lane kernels handing their outputs "
        "on in channels_last (as the training option channels_last_chains: true does)",
    )
    p.add_argument(
        "--onnx", action="store_true", help="also time the ONNX export with onnxruntime (CPU)"
    )
    p.add_argument(
        "--compile",
        nargs="?",
        const="default",
        default=None,
        choices=COMPILE_MODES,
        metavar="MODE",
        help="also time the frozen models (and with --train the training step) under "
        "torch.compile, in MODE: default, reduce-overhead (CUDA graphs on a GPU), max-autotune, "
        "max-autotune-no-cudagraphs (default MODE: default)",
    )
    p.add_argument(
        "--cuda-graphs",
        action="store_true",
        help="also time each frozen model (and with --train the whole training step) captured "
        "once in a CUDA graph and replayed, so kernels and not launches are measured (CUDA)",
    )
    p.add_argument(
        "--tune",
        action="store_true",
        help="autotune each SSC layer's backend on this machine first",
    )
    p.add_argument("--nchw", action="store_true", help="NCHW instead of channels_last")
    p.add_argument(
        "--repeats",
        type=positive_int,
        default=11,
        help="timed repeats per variant, interleaved; the median is reported",
    )
    p.add_argument(
        "--variants",
        nargs="+",
        default=None,
        help="subset of: dense ssc pruned dw_separable (default: all four), and SSC presets "
        "of training at the same density (e.g. ssc_thin_point ssc_depthwise); an SSC variant "
        "may name its layer densities after a colon (ssc:erk, ssc_thin_point:erk)",
    )
    p.add_argument(
        "--keep",
        nargs="*",
        default=None,
        metavar="RULE",
        help="default rules keeping layers dense, for every variant (stem pointwise "
        "depthwise classifier; e.g. --keep stem depthwise classifier converts 1x1 "
        "convs, needed for ResNet-50) (default: ssconv.convert's rules)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "-o", "--output", default=None, help="also write the JSON to this .json file (default: no)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ssconv.bench.models import (
        VARIANTS,
        bench_variants,
        build_variants,
        default_input_size,
        format_bench,
        parse_variant,
    )
    from ssconv.models import PretrainedWeightsError, WeightsError

    check_model(args.model)
    check_weights_args(args.model, args.pretrained, args.init_checkpoint)
    if args.output:
        check_output_file(args.output, "-o/--output", (".json",))
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise CLIError(f"--device {args.device}: CUDA is not available on this machine")
    if args.cuda_graphs and not args.device.startswith("cuda"):
        raise CLIError(f"--cuda-graphs needs a GPU: add --device cuda (got --device {args.device})")
    apply_threads(args)
    size = default_input_size(args.model, args.in_channels)
    if args.input_size:
        size = (args.in_channels, *args.input_size)
    variants = tuple(args.variants or VARIANTS)
    for name in variants:
        try:
            parse_variant(name)
        except ValueError as exc:
            raise CLIError(f"--variants: {exc}") from None
    if args.onnx:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise CLIError("--onnx needs onnxruntime: pip install 'ssconv[export]'") from None
    try:
        built = build_variants(
            args.model,
            args.density,
            in_channels=args.in_channels,
            num_classes=args.num_classes,
            variants=variants,
            keep=args.keep,
            pretrained=args.pretrained,
            init_checkpoint=args.init_checkpoint,
        )
    except PretrainedWeightsError as exc:
        raise CLIError(f"--pretrained: {user_message(exc)}") from None
    except WeightsError as exc:
        raise CLIError(f"--init-checkpoint: {exc}") from None
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    if args.fast_batchnorm:
        from ssconv.layers.batchnorm import fast_batchnorm

        for v in built:
            fast_batchnorm(v.model)
    result = bench_variants(
        built,
        size,
        batch=args.batch,
        device=args.device,
        train=args.train,
        onnx=args.onnx,
        channels_last=not args.nchw,
        repeats=args.repeats,
        tune=args.tune,
        compile=args.compile or False,
        cuda_graphs=args.cuda_graphs,
        fast_pooling=args.fast_pooling,
        channels_last_chains=args.channels_last_chains,
    )
    result.update(model=args.model, target_density=args.density)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        with open(args.output, "w") as fh:
            json.dump(result, fh, indent=2)
    if args.json:
        emit_json(result)
    else:
        print(f"{args.model} at density {args.density}")
        print(format_bench(result))
    return 0
