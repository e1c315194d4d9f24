"""``ssconv train``: train dense, SSC or pruned models; configs, checkpoints, exact resume.

Multi-GPU / multi-process: ``torchrun --nproc_per_node N -m ssconv train ...`` (DDP; gloo on
CPU, NCCL on GPU).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging

import yaml

from ssconv.cli.common import (
    CLIError,
    add_threads_arg,
    apply_threads,
    check_model,
    check_output_dir,
    check_weights_args,
    density_arg,
    period_arg,
    user_message,
)
from ssconv.train.config import (
    COMPILE_MODES,
    METHODS,
    ConfigError,
    TrainConfig,
    field_help,
    load_config,
    with_neutral_defaults,
)

EXIT_NONFINITE = 3

# Command-line flags that map one-to-one onto config keys (flag name -> key).
_FLAGS = {
    "model": str,
    "init_checkpoint": str,
    "dataset": str,
    "data_root": str,
    "image_size": int,
    "in_channels": int,
    "crop_padding": int,
    "method": str,
    "density": density_arg,
    "distribution": str,
    "epochs": int,
    "batch_size": int,
    "max_steps": int,
    "train_subset": int,
    "optimizer": str,
    "lr": float,
    "weight_decay": float,
    "schedule": str,
    "warmup_epochs": float,
    "label_smoothing": float,
    "seed": int,
    "workers": int,
    "compile_mode": str,
    "device": str,
    "log_every": int,
    "checkpoint_steps": int,
}
_BOOL_FLAGS = (
    "pretrained",
    "download",
    "skip_bad_images",
    "hflip",
    "amp",
    "channels_last",
    "fast_batchnorm",
    "fast_pooling",
    "channels_last_chains",
    "compile",
    "nesterov",
    "match_budget",
)


def _config_help() -> dict[str, str]:
    """Each config key's help with its default (the flags themselves default to "not given",
    so that --config and the saved config of --resume apply)."""
    helps = field_help()
    for f in dataclasses.fields(TrainConfig):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            continue
        if "default" in helps[f.name].lower():
            continue
        shown = "none" if default is None else ("on" if default is True else "off")
        if not isinstance(default, bool) and default is not None:
            shown = str(default)
        helps[f.name] = f"{helps[f.name]} (default: {shown}, or the --config file's value)"
    return helps


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a model (dense, SSC, or a pruning baseline) with checkpoints and resume",
        description="Train a model. Settings come from the defaults, then --config FILE "
        "(YAML or TOML), then the flags below and --set KEY=VALUE. Every run writes OUT/ with "
        "config.yaml, metrics.jsonl, profile.txt, final.json and checkpoints/.",
        epilog="Exit codes: 0 done; 2 bad configuration, data or run folder (also: a full disk, "
        "permission denied, read-only file system; the checkpoints saved are intact); 3 the "
        "loss or gradients became NaN/inf (no checkpoint after that is written: the newest is "
        "a good one); 130 / 143 stopped by SIGINT / SIGTERM after saving a checkpoint "
        "(continue with --resume); 1 unexpected error.",
    )
    helps = _config_help()
    p.add_argument(
        "--config",
        help="YAML (.yaml/.yml) or TOML (.toml) file of config keys (default: none: the "
        "defaults below, then the flags)",
    )
    p.add_argument("--out", required=True, help="run folder (required)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its newest valid checkpoint",
    )
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.add_argument(
        "--allow-schedule-change",
        action="store_true",
        help="with --resume: continue even though a changed --epochs changes the cosine "
        "learning-rate schedule of the steps already trained (the run then follows neither "
        "schedule; refused without this flag)",
    )
    for key, conv in _FLAGS.items():
        kwargs = {"type": conv, "default": None, "help": helps[key]}
        if key == "method":
            kwargs["choices"] = METHODS
        if key == "in_channels":
            kwargs["choices"] = (1, 3)
        if key == "compile_mode":
            kwargs["choices"] = COMPILE_MODES
        p.add_argument("--" + key.replace("_", "-"), dest=key, **kwargs)
    p.add_argument(
        "--period", dest="ssc_period", type=period_arg, default=None, help=helps["ssc_period"]
    )
    p.add_argument("--groups", dest="ssc_groups", type=int, default=None, help=helps["ssc_groups"])
    for key in _BOOL_FLAGS:
        p.add_argument(
            "--" + key.replace("_", "-"),
            dest=key,
            action=argparse.BooleanOptionalAction,
            default=None,
            help=helps[key],
        )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any config key (value parsed as YAML), repeatable",
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: only when stderr is a terminal)",
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    add_threads_arg(p)
    p.set_defaults(func=run)


def overrides_from_args(args: argparse.Namespace) -> dict:
    overrides = {}
    for key in (*_FLAGS, *_BOOL_FLAGS, "ssc_period", "ssc_groups"):
        value = getattr(args, key, None)
        if value is not None:
            overrides[key] = value
    overrides.update(parse_set(args.set))
    return overrides


def parse_set(items: list[str]) -> dict:
    """``--set KEY=VALUE`` items as a dict (values parsed as YAML)."""
    overrides = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise CLIError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise CLIError(f"--set {key}: cannot parse {text!r}: {exc}") from None
        glued = _glued_keys(value)
        if glued:
            k, _, v = glued[0].partition(":")
            raise CLIError(
                f"--set {key}: {glued[0]!r} reads as one key without a value (YAML needs a "
                f"space after the colon): write {key}={{{k}: {v}}}"
            )
        overrides[key.strip()] = value
    return overrides


def _glued_keys(value) -> list[str]:
    """Mapping keys like ``width:4`` with no value: ``{width:4}`` without the space."""
    if not isinstance(value, dict):
        return []
    return [k for k, v in value.items() if v is None and isinstance(k, str) and ":" in k]


def _resolve(args: argparse.Namespace):
    """The config: saved one when resuming (then file and flags), else defaults, file, flags."""
    from pathlib import Path

    overrides = overrides_from_args(args)
    saved = Path(args.out) / "config.yaml"
    if args.resume and saved.is_file() and args.config is None:
        base = with_neutral_defaults(yaml.safe_load(saved.read_text()) or {})
        return load_config(None, {**base, **overrides}, overrides_source="command line")
    return load_config(
        args.config, overrides, what="--config: file", overrides_source="command line"
    )


@contextlib.contextmanager
def console_logging():
    """INFO for the ssconv loggers (so OUT/train.log gets it all); on the console the epoch
    lines of the trainer and every warning. Restores the logging setup afterwards."""
    pkg = logging.getLogger("ssconv")
    saved = (pkg.level, pkg.propagate)
    console = logging.StreamHandler()
    console.setFormatter(logging.Formatter("%(message)s"))
    console.addFilter(lambda r: r.name.startswith("ssconv.train") or r.levelno >= logging.WARNING)
    pkg.setLevel(logging.INFO)
    pkg.addHandler(console)
    pkg.propagate = False
    try:
        yield
    finally:
        pkg.removeHandler(console)
        pkg.setLevel(saved[0])
        pkg.propagate = saved[1]


def run(args: argparse.Namespace) -> int:
    from ssconv.data import DatasetError
    from ssconv.train.checkpoint import CheckpointError
    from ssconv.train.trainer import (
        NonFiniteLossError,
        ResumeMismatchError,
        RunFolderError,
        Trainer,
        TrainingInterrupted,
    )

    check_output_dir(args.out, "--out")
    try:
        cfg = _resolve(args)
    except ConfigError as exc:
        raise CLIError(str(exc)) from None
    check_model(cfg.model, "--model" if args.model is not None else "model (from the config)")
    if not args.resume:  # a resumed run takes its weights from its checkpoint
        check_weights_args(cfg.model, cfg.pretrained, cfg.init_checkpoint)
    if args.print_config:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    apply_threads(args)
    try:
        with console_logging():
            result = Trainer(
                cfg,
                args.out,
                resume=args.resume,
                overwrite=args.overwrite,
                progress=args.progress,
                allow_schedule_change=args.allow_schedule_change,
            ).run()
    except (ConfigError, DatasetError, RunFolderError, ResumeMismatchError, CheckpointError) as exc:
        raise CLIError(user_message(exc)) from None
    except NonFiniteLossError as exc:
        print(f"ssconv train: stopped: {exc}", flush=True)
        return EXIT_NONFINITE
    except TrainingInterrupted as exc:
        print(f"ssconv train: {user_message(exc)}", flush=True)
        return 128 + int(exc.signum)
    final = result.final
    if final:
        print(
            f"done: {final['method']} {final['model']} on {final['dataset']}: "
            f"val acc {final['final_acc1']:.4f} (best {final['best_acc1']:.4f}), density "
            f"{final['density']:.4f}, {final['weight_params']:,} weights, "
            f"{final['effective_macs']:,} effective MACs per image; run folder {args.out}"
        )
    return 0
