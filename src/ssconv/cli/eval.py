"""``ssconv eval RUN_OR_CHECKPOINT``: accuracy and the profile table of a trained model."""

from __future__ import annotations

import argparse

import torch

from ssconv.cli.common import CLIError, add_threads_arg, apply_threads, emit_json, positive_int


def register(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a trained run or checkpoint: accuracy and per-layer profile",
        description="Load a run folder (its newest valid checkpoint) or a checkpoint file, "
        "evaluate it on its dataset's test split (or --dataset), print accuracy and the "
        "per-layer params / MACs table.",
    )
    p.add_argument(
        "path",
        metavar="RUN_OR_CHECKPOINT",
        help="a run folder (its newest valid checkpoint is used) or a checkpoint file",
    )
    p.add_argument("--dataset", default=None, help="dataset name (default: the run's)")
    p.add_argument("--data-root", default=None, help="dataset folder (default: the run's)")
    p.add_argument("--split", choices=["test", "train"], default="test", help="split evaluated")
    p.add_argument("--batch-size", type=positive_int, default=256, help="evaluation batch size")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--workers", type=int, default=0, help="data loader worker processes")
    add_threads_arg(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ssconv import profile
    from ssconv.data import DatasetError, build_dataset
    from ssconv.train.checkpoint import CheckpointError
    from ssconv.train.config import ConfigError
    from ssconv.train.trainer import evaluate_model, load_trained_model

    try:
        model, cfg, state = load_trained_model(args.path)
        dataset_name = args.dataset or cfg.dataset
        # The images as the model was trained on them: its size and channels.
        dataset, info = build_dataset(
            dataset_name,
            root=args.data_root or cfg.data_root,
            train=args.split == "train",
            augment=False,
            size=cfg.image_size,
            in_channels=state["data_info"]["input_size"][0],
            skip_bad_images=cfg.skip_bad_images,
        )
    except (CheckpointError, ConfigError, DatasetError) as exc:
        raise CLIError(str(exc)) from None
    try:
        device = torch.device(args.device)
    except RuntimeError as exc:
        raise CLIError(f"--device {args.device!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"--device {args.device}: CUDA is not available on this machine")
    apply_threads(args)
    model.to(device)
    metrics = evaluate_model(
        model,
        dataset,
        batch_size=args.batch_size,
        device=device,
        workers=args.workers,
        channels_last=cfg.channels_last,
    )
    prof = profile(model, (1, *info.input_size), device=device)
    if args.json:
        emit_json(
            {
                "path": str(args.path),
                "dataset": dataset_name,
                "split": args.split,
                "epoch": state["epoch"],
                **metrics,
                "profile": prof.to_dict(),
            }
        )
        return 0
    print(f"{args.path}: {cfg.method} {cfg.model} after {state['epoch']} epoch(s)")
    print(
        f"{dataset_name} {args.split}: top-1 {metrics['acc1']:.4f}, top-5 {metrics['acc5']:.4f}"
        f", loss {metrics['loss']:.4f} on {metrics['images']} images"
    )
    print()
    print(prof.table())
    return 0
