"""``ssconv demo``: the README's main job on the embedded default.

Trains a CIFAR-style ResNet on the Fashion-MNIST subset shipped with the package four ways at
the same parameter budget (dense reference, SSC, its structured rival the depthwise-separable
convolution, and a pruning-at-initialization baseline), and prints one comparison table.
Finished runs in ``--out`` are reused, so running it again prints
the table at once (``--fresh`` retrains).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time

from ssconv.cli.common import CLIError, check_model, check_output_dir, density_arg, positive_int
from ssconv.data import dataset_info
from ssconv.utils.text import format_count, text_table

#: ERK is the strongest pruning baseline of the credible regime (docs/results/
#: fashion_mnist_regime.md): the demo shows SSC against it.
METHODS = ("dense", "ssc", "dw_separable", "erk")


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="train dense, SSC, depthwise-separable and ERK at one budget on the embedded "
        "data; compare",
        description="Train a CIFAR ResNet-20 on the embedded Fashion-MNIST subset (5000 "
        "training and 1000 test images, shipped with ssconv) as a dense model, as SSC, as a "
        "depthwise-separable model and as an ERK-pruned model at the same density, then print "
        "accuracy, parameters, MACs and time per epoch side by side. Takes a few minutes on a "
        "laptop CPU.",
    )
    p.add_argument("--out", default="runs/demo", help="folder for the runs, one per method")
    p.add_argument("--model", default="cifar_resnet20", help="model (see `ssconv models`)")
    p.add_argument(
        "--density", type=density_arg, default=0.1, help="model density of every sparse method"
    )
    p.add_argument("--epochs", type=positive_int, default=4, help="training epochs")
    p.add_argument("--batch-size", type=positive_int, default=64, help="training batch size")
    p.add_argument(
        "--methods",
        nargs="+",
        default=list(METHODS),
        help="methods to compare (any training method: dense, ssc, dw_separable, erk, snip, ...)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed of every run")
    p.add_argument(
        "--max-steps",
        type=positive_int,
        default=None,
        help="cap optimizer steps per epoch, for a quick look (default: no cap: full epochs)",
    )
    p.add_argument("--workers", type=int, default=0, help="data loader worker processes")
    p.add_argument("--fresh", action="store_true", help="retrain even if results exist")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars (default: only on a terminal)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ssconv.cli.train import console_logging
    from ssconv.train.config import ConfigError, TrainConfig
    from ssconv.train.trainer import Trainer

    out = check_output_dir(args.out, "--out")
    check_model(args.model, "--model")
    results = {}
    for method in args.methods:
        try:
            cfg = TrainConfig.from_dict(
                {
                    "model": args.model,
                    "dataset": "embedded",
                    "method": method,
                    "density": args.density,
                    "epochs": args.epochs,
                    "batch_size": args.batch_size,
                    "lr": 0.05,
                    "weight_decay": 5e-4,
                    "schedule": "cosine",
                    "warmup_epochs": 0.5,
                    "seed": args.seed,
                    "workers": args.workers,
                    "eval_batch_size": 500,
                    "max_steps": args.max_steps,
                }
            )
        except ConfigError as exc:
            raise CLIError(str(exc)) from None
        folder = out / method
        final_path = folder / "final.json"
        if args.fresh and folder.exists():
            shutil.rmtree(folder)
        if final_path.is_file():
            final = json.loads(final_path.read_text())
            if final.get("complete") and final.get("config_digest") == cfg.digest():
                print(f"{method}: reusing the finished run in {folder} (--fresh retrains)")
                results[method] = final
                continue
        print(
            f"{method}: training {args.model} on the embedded Fashion-MNIST subset "
            f"({args.epochs} epochs) -> {folder}",
            flush=True,
        )
        start = time.time()
        with console_logging():
            result = Trainer(cfg, folder, resume=folder.exists(), progress=args.progress).run()
        results[method] = result.final
        print(f"{method}: done in {time.time() - start:.0f} s", flush=True)
    print()
    print(comparison_table(results, args.density))
    return 0


def comparison_table(results: dict[str, dict], density: float) -> str:
    header = [
        "method",
        "val acc",
        "best acc",
        "density",
        "weights",
        "eff. MACs",
        "exec. MACs",
        "s / epoch",
    ]
    rows = []
    for method, f in results.items():
        rows.append(
            [
                method,
                f"{f['final_acc1']:.4f}",
                f"{f['best_acc1']:.4f}",
                f"{f['density']:.4f}",
                format_count(f["weight_params"]),
                format_count(f["effective_macs"]),
                format_count(f["executed_macs"]),
                f"{f.get('steady_epoch_time_s') or f['mean_epoch_time_s']:.1f}",
            ]
        )
    lines = text_table(header, rows, right=range(1, len(header)))
    test_size = dataset_info("embedded").test_size
    accs = [f["final_acc1"] for f in results.values()]
    p = sum(accs) / len(accs) if accs else 0.5
    se = 100 * math.sqrt(max(p * (1 - p), 1e-6) / test_size)
    lines.append(
        f"\nTarget density {density}: SSC and the pruned model hold the same number of nonzero "
        f"weights (the depthwise-separable model as close below it as its discrete sizes "
        f"allow: see weights), all initialized by one rule (init_scale, docs/ssc.md). MACs "
        f"are per image; a masked (pruned) model executes the dense MACs; SSC "
        f"executes fewer, though more than its effective MACs where a layer runs faster "
        f"on stock kernels (see docs/benchmarks.md). Accuracy on the "
        f"{test_size} embedded test images: one binomial standard error is about "
        f"{se:.1f} points, so differences of less than about {2 * se:.0f} points between "
        f"these rows are noise. s / epoch leaves out the first epoch (kernel builds and "
        f"warm-up) where there are more.\n"
        f"The full result (docs/results/fashion_mnist_regime.md: all 60,000 images, 3 seeds, "
        f"dense at 91.5 %): SSC is third at densities 0.10 and 0.05, 0.3-0.6 point below "
        f"ERK masks, above depthwise-separable, and executes 8-15x fewer MACs than "
        f"the masks."
    )
    return "\n".join(lines)
