"""``ssconv export``: a trained run (or a registry model) to ONNX or TorchScript."""

from __future__ import annotations

import argparse
from pathlib import Path

from ssconv.cli.common import (
    CLIError,
    add_weights_args,
    check_model,
    check_output_file,
    create_dense,
    density_arg,
    from_weights,
    positive_int,
)

SUFFIXES = {"onnx": (".onnx",), "torchscript": (".pt", ".pth")}


def register(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export a trained run / checkpoint (or an untrained registry model) to ONNX or "
        "TorchScript, frozen for inference",
        description="Freeze the model (pruning masks baked, BatchNorm folded, SSC kernels "
        "precomputed) and export it. ONNX graphs use only standard operators (Conv, Add, "
        "Reshape/Transpose, ...) and are checked against onnxruntime.",
    )
    p.add_argument(
        "source",
        help="run folder, checkpoint file, or model name (untrained, or with --pretrained / "
        "--init-checkpoint), also timm:NAME / tv:NAME",
    )
    p.add_argument(
        "-o", "--output", required=True, help="output file: .onnx, or .pt / .pth (required)"
    )
    p.add_argument(
        "--format",
        choices=["onnx", "torchscript"],
        default=None,
        help="(default: from the output suffix: .onnx -> onnx, .pt / .pth -> torchscript)",
    )
    p.add_argument(
        "--density",
        type=density_arg,
        default=None,
        help="with a model name: convert to SSC at this density first (default: none: "
        "export the dense model)",
    )
    p.add_argument(
        "--in-channels",
        type=int,
        default=3,
        help="with a model name: image channels (1 = grey); a run keeps its own",
    )
    p.add_argument(
        "--input-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        default=None,
        help="example input size traced (default: the run's or the model's, e.g. 32 32)",
    )
    add_weights_args(p)
    p.add_argument("--opset", type=int, default=18, help="ONNX opset version")
    p.add_argument(
        "--batch",
        type=positive_int,
        default=1,
        help="ONNX: batch size of the example input (the graph's batch axis stays dynamic; "
        "onnxruntime is checked at this batch and at batch + 2)",
    )
    p.add_argument(
        "--static-batch",
        action="store_true",
        help="ONNX: fix the batch axis at --batch instead of a dynamic one",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ssconv.conversion import convert
    from ssconv.deploy import export_onnx, export_torchscript
    from ssconv.models import model_info
    from ssconv.pruning import remove_masks
    from ssconv.train.checkpoint import CheckpointError
    from ssconv.train.trainer import load_trained_model

    out = Path(args.output)
    fmt = args.format
    if fmt is None:
        fmt = next((f for f, sfx in SUFFIXES.items() if out.suffix.lower() in sfx), None)
        if fmt is None:
            check_output_file(
                args.output, "-o/--output", SUFFIXES["onnx"] + SUFFIXES["torchscript"]
            )
    check_output_file(args.output, "-o/--output", SUFFIXES[fmt])
    source = Path(args.source)
    if source.exists():
        if from_weights(args):
            raise CLIError(
                "--pretrained / --init-checkpoint: only with a model name; a run or checkpoint "
                "has its own weights"
            )
        try:
            model, cfg, state = load_trained_model(source)
        except CheckpointError as exc:
            raise CLIError(str(exc)) from None
        size = tuple(state["data_info"]["input_size"])
    else:
        check_model(args.source, "SOURCE (neither a run / checkpoint path nor a model)")
        info = model_info(args.source)
        model = create_dense(
            args, args.source, num_classes=None, in_channels=args.in_channels, flag="SOURCE"
        )
        if args.density is not None:
            model = convert(
                model, density=args.density, warn_coverage=False, copy_weights=from_weights(args)
            ).model
        size = (args.in_channels, *info.input_size[1:])
    if args.input_size:
        size = (size[0], *args.input_size)
    remove_masks(model)
    model.eval()
    if fmt == "onnx":
        try:
            import onnx  # noqa: F401
        except ImportError:
            raise CLIError(
                "ONNX export needs onnx and onnxruntime: pip install 'ssconv[export]'"
            ) from None
        report = export_onnx(
            model,
            args.output,
            size,
            opset=args.opset,
            batch=args.batch,
            dynamic_batch=not args.static_batch,
        )
    else:
        report = export_torchscript(model, args.output, size)
    print(report)
    return 0
