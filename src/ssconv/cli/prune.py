"""``ssconv prune MODEL --method M --density D``: a pruning baseline at a budget, and its table."""

from __future__ import annotations

import argparse
import sys
import warnings

import torch

from ssconv import profile
from ssconv.cli.common import (
    CLIError,
    add_model_args,
    check_model,
    create_dense,
    density_arg,
    emit_json,
    positive_int,
)
from ssconv.conversion import build_rival, ssc_weight_budget
from ssconv.errors import SyntheticScoringWarning
from ssconv.models import model_info
from ssconv.pruning import DISTRIBUTIONS, PRUNING_METHODS, SCOPES
from ssconv.sparsity.budget import resolve_distribution
from ssconv.utils.text import format_count

_DENSE_NOTE = (
    "a masked model executes dense MACs: its pruned weights are multiplied as zeros, so "
    "unstructured pruning saves no compute here (SSC layers execute close to their effective MACs)"
)


def register(sub) -> None:
    p = sub.add_parser(
        "prune",
        help="prune a model at initialization (random, erk, magnitude, snip, grasp, synflow) "
        "to a budget and print its per-layer table",
        description="Prune a freshly initialized model with a pruning-at-initialization method "
        "to a model density (or an exact number of nonzero weights), counted like `ssconv "
        "summary`: nonzero over dense weights of all conv and linear layers, the layers kept "
        "dense included. Prints the per-layer table with effective and executed MACs.",
    )
    add_model_args(p)
    p.add_argument("--method", required=True, choices=PRUNING_METHODS, help="pruning method")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--density", type=density_arg, help="target model density (required: this or --num-params)"
    )
    target.add_argument(
        "--num-params",
        type=positive_int,
        default=None,
        help="target number of nonzero conv+linear weights, kept layers included (required: "
        "this or --density)",
    )
    p.add_argument(
        "--match-ssc",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="prune to exactly the nonzero count of the SSC conversion at --density",
    )
    p.add_argument(
        "--scope",
        choices=SCOPES,
        default="global",
        help="rank scores over all layers (global) or per layer (random, erk: always per layer)",
    )
    p.add_argument(
        "--distribution",
        choices=DISTRIBUTIONS,
        default=None,
        help="per-layer densities for --scope layer and random, and of SSC with --match-ssc "
        "(default: uniform masks, matched to SSC's own default, auto)",
    )
    p.add_argument(
        "--skip",
        action="append",
        default=[],
        metavar="PATTERN",
        help="keep layers whose name matches PATTERN dense (repeatable)",
    )
    p.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="PATTERN",
        help="prune layers matching PATTERN even if a default rule keeps them",
    )
    p.add_argument(
        "--prune-classifier",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="prune the classifier too (dense by default)",
    )
    p.add_argument(
        "--dataset",
        default=None,
        help="dataset whose training batches snip / grasp score (names as in `ssconv train`) "
        "(default: none: they score a synthetic random batch)",
    )
    p.add_argument(
        "--data-root",
        default=None,
        help="where the dataset lives (default: $SSCONV_DATA, else ./data)",
    )
    p.add_argument("--batches", type=positive_int, default=1, help="batches scored")
    p.add_argument("--batch-size", type=positive_int, default=64, help="size of each batch")
    p.add_argument("--iterations", type=positive_int, default=100, help="synflow rounds")
    p.add_argument("--seed", type=int, default=0, help="seed of the model init and scores")
    p.add_argument("--device", default="cpu", help="where to score: cpu, cuda, cuda:N")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar while synflow / grasp / snip score (default: only when stderr is a "
        "terminal)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=run)


def _dataset(args: argparse.Namespace):
    """``(batches, DatasetInfo)`` of ``--dataset``, or a :class:`CLIError`."""
    try:
        from ssconv.data import build_dataset
    except ImportError as exc:
        raise CLIError(
            f"--dataset {args.dataset!r}: datasets are not available in this installation "
            f"(ssconv.data: {exc}); omit --dataset to score a synthetic batch"
        ) from None
    try:
        dataset, info = build_dataset(args.dataset, root=args.data_root, train=True, augment=False)
    except ValueError as exc:  # ssconv.data.DatasetError is a ValueError
        raise CLIError(f"--dataset: {exc}") from None
    g = torch.Generator().manual_seed(args.seed)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, shuffle=True, generator=g, num_workers=0
    )
    batches = []
    for i, batch in enumerate(loader):
        if i >= args.batches:
            break
        batches.append(batch)
    return batches, info


def run(args: argparse.Namespace) -> int:
    check_model(args.model)
    info = model_info(args.model)
    if args.match_ssc and args.density is None:
        raise CLIError("--match-ssc needs --density (the SSC budget to match)")
    try:
        device = torch.device(args.device)
    except RuntimeError as exc:
        raise CLIError(f"--device {args.device!r}: {exc}") from None
    data = None
    num_classes, in_channels = args.num_classes, args.in_channels
    hw = tuple(args.input_size) if args.input_size else info.input_size[1:]
    if args.dataset is not None:
        data, dinfo = _dataset(args)
        num_classes = num_classes or dinfo.num_classes
        in_channels = dinfo.in_channels
        if not args.input_size:
            hw = dinfo.input_size[1:]
    input_size = (in_channels, *hw)

    torch.manual_seed(args.seed)
    # With --pretrained / --init-checkpoint the scores rank (and the masks keep) those weights.
    model = create_dense(args, args.model, num_classes=num_classes, in_channels=in_channels)
    model.to(device)
    rules = {"skip": args.skip, "include": args.include}
    num_params = args.num_params
    density = args.density
    if args.match_ssc:
        try:
            num_params = ssc_weight_budget(
                model, args.density, distribution=args.distribution or "auto", **rules
            )
        except ValueError as exc:
            raise CLIError(str(exc)) from None
        density = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            report = build_rival(
                model,
                args.method,
                density=density,
                num_params=num_params,
                data=data,
                input_size=input_size,
                scope=args.scope,
                # ("auto" resolved at --density, not at the matched count's density)
                distribution=resolve_distribution(args.distribution or "uniform", args.density),
                prune_classifier=args.prune_classifier,
                seed=args.seed,
                iterations=args.iterations,
                batches=args.batches,
                batch_size=args.batch_size,
                progress=args.progress,
                **rules,
            )
        except ValueError as exc:
            raise CLIError(str(exc)) from None
    for w in caught:
        message = str(w.message)
        if isinstance(w.message, SyntheticScoringWarning):
            message = f"{w.message.problem}; pass --dataset NAME"
        print(f"ssconv prune: warning: {message}", file=sys.stderr)

    result = profile(model, (1, *input_size))
    if args.json:
        out = {"model": args.model, **result.to_dict()}
        out["target_density"] = (
            args.density if args.density is not None else num_params / result.dense_weight_params
        )
        out["achieved_density"] = result.density
        out["pruning"] = report.to_dict()
        emit_json(out)
        return 0
    print(report.table())
    print()
    print(result.table())
    print(
        f"\neffective MACs {format_count(result.effective_macs)} (nonzero weights) vs executed "
        f"MACs {format_count(result.executed_macs)} (dense {format_count(result.dense_macs)}): "
        f"{_DENSE_NOTE}"
    )
    return 0
