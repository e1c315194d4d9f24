"""Options shared by several subcommands, and the error type they report."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import torch

from ssconv.conversion import convert
from ssconv.layers.pattern import DEPTHWISE_PERIOD
from ssconv.models import create_model, model_info
from ssconv.sparsity.budget import AUTO, DISTRIBUTIONS, PREFERENCES

log = logging.getLogger(__name__)

__all__ = [
    "CLIError",
    "add_model_args",
    "add_ssc_args",
    "add_threads_arg",
    "apply_threads",
    "model_from_args",
    "check_model",
    "check_output_dir",
    "check_output_file",
    "check_weights_args",
    "create_dense",
    "emit_json",
    "period_arg",
]


class CLIError(Exception):
    """A user error: printed as ``ssconv: error: ...`` with exit code 2."""


#: The flags that stand for the library arguments a message names (ssconv.errors.Remedy).
CLI_NAMES = {
    "out": "--out",
    "resume": "--resume",
    "overwrite": "--overwrite",
    "allow_schedule_change": "--allow-schedule-change",
    "epochs": "--epochs",
    "pretrained": "--pretrained",
    "init_checkpoint": "--init-checkpoint PATH",
}


def user_message(exc: BaseException) -> str:
    """An error's message for the command line: the arguments that fix it named as flags
    (errors with a ``render(names)`` method, :class:`ssconv.errors.Remedy`), else ``str``."""
    render = getattr(exc, "render", None)
    return render(CLI_NAMES) if callable(render) else str(exc)


def period_arg(value: str):
    v = value.strip().lower()
    if v == "auto":
        return AUTO
    if v == "none":
        return None
    if v == DEPTHWISE_PERIOD:
        return v
    try:
        p = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--period must be a positive int, 'none', 'depthwise' or 'auto', got {value!r}"
        ) from None
    if p < 1:
        raise argparse.ArgumentTypeError(f"--period must be positive, got {p}")
    return p


def density_arg(value: str) -> float:
    try:
        d = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--density must be a number, got {value!r}") from None
    if not 0 < d <= 1:
        raise argparse.ArgumentTypeError(f"--density must be in (0, 1], got {d}")
    return d


def positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {n}")
    return n


def check_model(name: str, flag: str = "MODEL") -> None:
    """A :class:`CLIError` naming ``flag`` and close names unless ``name`` is registered."""
    try:
        model_info(name)
    except ValueError as exc:
        raise CLIError(f"{flag} {name!r}: {exc}") from None


def check_weights_args(model: str, pretrained: bool, init_checkpoint: str | None) -> None:
    """A :class:`CLIError` for ``--pretrained`` / ``--init-checkpoint`` that cannot work, before
    anything is built: pretrained weights of a registry model, both at once, a missing file."""
    from ssconv.models.registry import _split

    if pretrained and init_checkpoint:
        raise CLIError("--pretrained and --init-checkpoint: pass one of them (both give weights)")
    if pretrained and _split(model)[0] is None:
        try:
            create_model(model, pretrained=True)
        except ValueError as exc:
            raise CLIError(f"--pretrained: {exc}") from None
    if init_checkpoint:
        from ssconv.models.weights import SUFFIXES

        path = Path(init_checkpoint)
        if not path.is_file():
            what = "is a folder" if path.is_dir() else "does not exist"
            raise CLIError(f"--init-checkpoint {init_checkpoint!r} {what}")
        if path.suffix.lower() not in SUFFIXES:
            raise CLIError(
                f"--init-checkpoint {init_checkpoint!r}: use a file ending in {', '.join(SUFFIXES)}"
            )


def create_dense(
    args: argparse.Namespace,
    name: str,
    *,
    num_classes: int | None,
    in_channels: int,
    flag: str = "MODEL",
):
    """The dense model ``name`` with the weights of ``args.pretrained`` /
    ``args.init_checkpoint`` (when the command has them), or a :class:`CLIError`."""
    from ssconv.models.registry import PretrainedWeightsError
    from ssconv.models.weights import WeightsError, load_init_checkpoint

    pretrained = bool(getattr(args, "pretrained", False))
    path = getattr(args, "init_checkpoint", None)
    check_weights_args(name, pretrained, path)
    try:
        model = create_model(
            name, num_classes=num_classes, in_channels=in_channels, pretrained=pretrained
        )
    except PretrainedWeightsError as exc:
        raise CLIError(f"--pretrained: {user_message(exc)}") from None
    except ValueError as exc:
        raise CLIError(f"{flag} {name!r}: {exc}") from None
    if path:
        try:
            load_init_checkpoint(model, path, what=f"model {name!r}")
        except WeightsError as exc:
            raise CLIError(f"--init-checkpoint: {exc}") from None
    return model


def from_weights(args: argparse.Namespace) -> bool:
    """Whether the command starts from given dense weights (converted with copy_weights)."""
    return bool(getattr(args, "pretrained", False) or getattr(args, "init_checkpoint", None))


def add_weights_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pretrained",
        action="store_true",
        help="start from the pretrained weights of a timm:NAME / tv:NAME model (downloaded by "
        "timm / torchvision on first use, then cached); SSC layers keep them on their pattern",
    )
    parser.add_argument(
        "--init-checkpoint",
        default=None,
        metavar="PATH",
        help="dense weights to start from: a state_dict file (.pt / .pth, also under "
        "'state_dict' or 'model') or .safetensors, loaded before conversion (default: none)",
    )


def _first_file_above(path: Path) -> Path | None:
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def check_output_dir(path: str | Path, flag: str) -> Path:
    """``path`` as a folder to write into, or a :class:`CLIError` naming ``flag``: it must be
    a folder or not exist yet, with no plain file in its way."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise CLIError(
            f"{flag} {str(path)!r} is a file, not a folder; pass the path of a folder (it is "
            f"created if missing)"
        )
    blocker = _first_file_above(out)
    if blocker is not None:
        raise CLIError(f"{flag} {str(path)!r}: {str(blocker)!r} is a file, not a folder")
    return out


def check_output_file(path: str | Path, flag: str, suffixes: tuple[str, ...]) -> Path:
    """``path`` as a file to write, or a :class:`CLIError` naming ``flag``: not a folder, no
    plain file among its parents, and one of ``suffixes`` (lower case, with the dot)."""
    out = Path(path)
    if out.is_dir():
        raise CLIError(f"{flag} {str(path)!r} is a folder; pass a file name, e.g. {out / 'x'}")
    blocker = _first_file_above(out)
    if blocker is not None:
        raise CLIError(f"{flag} {str(path)!r}: {str(blocker)!r} is a file, not a folder")
    if out.suffix.lower() not in suffixes:
        got = f"suffix {out.suffix!r}" if out.suffix else "no suffix"
        raise CLIError(f"{flag} {str(path)!r} has {got}; use one of {', '.join(suffixes)}")
    return out


def add_threads_arg(parser: argparse.ArgumentParser) -> None:
    n, why = default_threads()
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="CPU threads of PyTorch (torch.set_num_threads) (default: $OMP_NUM_THREADS if "
        "set, else the CPU cores other processes leave free: cores minus the 1-minute load "
        f"average, at least 1; {n} now: {why})",
    )


def default_threads() -> tuple[int, str]:
    """Threads for a command that names none, and why.

    ``$OMP_NUM_THREADS`` when set (PyTorch reads it; ``torchrun`` and sweeps set it). Else the
    cores this process may use minus those other processes keep busy (the 1-minute load
    average, rounded), at least 1: on this project's 2-core machine, with a test suite
    running, a training step took 1.45-1.5x longer on 2 threads than on 1 (oversubscribed
    cores), while on the quiet machine 2 threads are the faster choice.
    """
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads(), "$OMP_NUM_THREADS"
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows
        return cores, f"{cores} cores"
    return max(1, min(cores, cores - int(load + 0.5))), f"{cores} cores, load {load:.1f}"


def apply_threads(args: argparse.Namespace) -> None:
    n = getattr(args, "threads", None)
    if not n:
        n, why = default_threads()
        log.info("using %d CPU thread(s) (%s; --threads N sets it)", n, why)
    if n != torch.get_num_threads():
        torch.set_num_threads(n)


MODEL_HELP = "model name (see `ssconv models`), or timm:NAME / tv:NAME (a timm / torchvision model)"


def add_model_args(parser: argparse.ArgumentParser, *, weights: bool = True) -> None:
    parser.add_argument("model", help=MODEL_HELP)
    parser.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="classifier outputs (default: the model's, e.g. 10)",
    )
    parser.add_argument("--in-channels", type=int, default=3, help="image channels (1 = grey)")
    parser.add_argument(
        "--input-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        default=None,
        help="image size for counting MACs (default: the model's own, e.g. 32 32)",
    )
    if weights:
        add_weights_args(parser)


def point_groups_arg(text: str):
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive int or 'auto', got {text!r}")
    return value


def add_ssc_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("SSC conversion (omit all to keep the model dense)")
    g.add_argument(
        "--density",
        type=density_arg,
        default=None,
        help="target model density; the solver picks per-layer settings (default: none: "
        "the model stays dense unless another SSC option is given)",
    )
    g.add_argument(
        "--groups", type=int, default=None, help="SSC groups, fixed (default: the solver's choice)"
    )
    g.add_argument(
        "--period",
        type=period_arg,
        default=None,
        help="SSC period P (int, 'none' = no spatial kernel, 'auto') (default: the solver's "
        "choice)",
    )
    g.add_argument(
        "--pointwise",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="1x1 weights on the non-spatial pairs (default: the solver's choice)",
    )
    g.add_argument(
        "--spatial",
        choices=["full", "checkerboard"],
        default=None,
        help="taps of the spatial kernels (default: the solver's choice)",
    )
    g.add_argument(
        "--point-groups",
        type=point_groups_arg,
        default=None,
        metavar="N|auto",
        help="groups of each layer's 1x1 part per SSC group: an int, or 'auto' (with "
        "--density: the solver may thin the 1x1 part for more spatial kernels) (default: 1, "
        "the 1x1 weights span the group)",
    )
    g.add_argument(
        "--distribution",
        choices=DISTRIBUTIONS,
        default="auto",
        help="layer-wise densities for --density (default: auto, ERK's below density 0.1, "
        "uniform from 0.1 up; docs/ssc.md)",
    )
    g.add_argument(
        "--prefer",
        choices=PREFERENCES,
        default="weights",
        help="what the solver keeps within a layer's share of --density: the densest pattern "
        "(weights) or the patterns that read the most input channels per filter for their "
        "weights (mixing)",
    )
    g.add_argument(
        "--skip",
        action="append",
        default=[],
        metavar="PATTERN",
        help="keep convs whose name matches PATTERN dense (repeatable) (default: only the "
        "default rules: stem and classifier stay dense)",
    )
    g.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="PATTERN",
        help="convert convs matching PATTERN even if a default rule keeps them (default: none)",
    )


def ssc_requested(args: argparse.Namespace) -> bool:
    return any(
        getattr(args, k, None) is not None
        for k in ("density", "groups", "period", "pointwise", "spatial", "point_groups")
    )


def model_from_args(args: argparse.Namespace):
    """(model, input_size (C, H, W), conversion report or None) from the parsed options."""
    check_model(args.model)
    info = model_info(args.model)
    model = create_dense(
        args, args.model, num_classes=args.num_classes, in_channels=args.in_channels
    )
    hw = tuple(args.input_size) if args.input_size else info.input_size[1:]
    input_size = (args.in_channels, *hw)
    report = None
    if ssc_requested(args):
        settings = {
            k: getattr(args, k)
            for k in ("groups", "period", "pointwise", "spatial", "point_groups")
            if getattr(args, k) is not None
        }
        try:
            report = convert(
                model,
                density=args.density,
                distribution=args.distribution,
                prefer=args.prefer,
                skip=args.skip,
                include=args.include,
                inplace=True,
                warn_coverage=False,
                copy_weights=from_weights(args),
                **settings,
            )
        except ValueError as exc:
            raise CLIError(str(exc)) from None
        model = report.model
    return model, input_size, report


def emit_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")
