"""Entry point of the ``ssconv`` command (also ``python -m ssconv``)."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback

from ssconv import __version__
from ssconv.cli.common import CLIError
from ssconv.utils.malloc import tune_malloc

# One module per subcommand, each with ``register(subparsers)``.
SUBCOMMANDS = [
    "demo",
    "models",
    "datasets",
    "summary",
    "pattern",
    "prune",
    "train",
    "eval",
    "sweep",
    "report",
    "bench",
    "export",
    "kernels",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` to an option's help unless the help already states its default;
    flags that are off by default and options whose default is "not given" (None) say in their
    own words what happens without them."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text.lower()
            or not action.option_strings
            or any(default is v for v in (None, False, argparse.SUPPRESS))
        ):
            return text
        if default == []:  # a repeatable option given no times
            return text + " (default: none)"
        return text + " (default: %(default)s)"


class _VersionAction(argparse.Action):
    """``--version``: the version and the fused kernel's one-line status (never builds it)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, **kwargs) -> None:
        kwargs.setdefault("help", "show the version and the fused kernel's status, and exit")
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        from ssconv.kernels import fused

        print(f"ssconv {__version__}\n{fused.status().line()}")
        parser.exit()


class _SubcommandParser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ssconv",
        description="Structured Sparse Convolution: build, convert, count, train and compare "
        "efficient CNNs.",
    )
    parser.add_argument("--version", action=_VersionAction)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_SubcommandParser)
    sub.required = True
    for name in SUBCOMMANDS:
        importlib.import_module(f"ssconv.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG
        if args.verbose > 1
        else logging.INFO
        if args.verbose
        else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    tune_malloc()  # freed tensor memory stays in the heap (ssconv/utils/malloc.py)
    try:
        return int(args.func(args) or 0)
    except CLIError as exc:
        print(f"ssconv {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`ssconv sweep --list | head`): not an error of ours. Point
        # stdout at devnull so that the interpreter's final flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as exc:  # a bug, not a user error: say so, keep the traceback
        traceback.print_exc()
        print(
            f"ssconv {args.command}: unexpected error: {type(exc).__name__}: {exc}\n"
            "This is a bug in ssconv (or its environment); please report it with the "
            "traceback above.",
            file=sys.stderr,
        )
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
