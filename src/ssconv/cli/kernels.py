"""``ssconv kernels [build]``: whether the fused CPU kernel is built; build it ahead of time."""

from __future__ import annotations

import argparse

from ssconv.cli.common import CLIError, emit_json


def register(sub) -> None:
    p = sub.add_parser(
        "kernels",
        help="status of the fused CPU kernel (never builds it); `ssconv kernels build` builds it",
        description="Print whether the optional fused CPU kernel is built, its build folder "
        "and the CPU capability, without building it. `ssconv kernels build` compiles it now "
        "(about a minute, once per machine, torch and kernel version; needs a C++ compiler and "
        "ninja) instead of during the first float32 CPU forward, and exits 2 saying why where "
        "it cannot be built. SSCONV_NO_FUSED=1 disables the kernel.",
    )
    p.add_argument(
        "action",
        nargs="?",
        choices=("status", "build"),
        default="status",
        help="status: report only (default); build: compile the kernel now",
    )
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ssconv.kernels import fused

    if args.action == "build":
        fused.available()  # builds (or loads) it, logging the build notice when it compiles
    st = fused.status()
    failed = args.action == "build" and not st.built
    if args.json:
        emit_json(st.to_dict())
        return 2 if failed else 0
    if failed:
        raise CLIError(f"the fused CPU kernel could not be built: {st.reason}")
    print(st.line())
    print(f"  build folder: {st.build_dir}")
    print(f"  CPU capability: {st.cpu_capability}; vectors: {st.vectors}")
    return 0
