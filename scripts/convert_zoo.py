"""What ``ssconv.convert(model, density=D)`` does, by default, to torchvision and timm models.

Random weights (nothing is downloaded). For each model and density: converted convs, the 1 x 1
and linear fallbacks, the achieved model density, a forward pass, and the BatchNorm layers
``freeze`` folds. Prints a Markdown table (the one in issue 17's closing note)::

    OMP_NUM_THREADS=1 python scripts/convert_zoo.py [--density 0.1 0.3]
"""

from __future__ import annotations

import argparse
import logging
import time

import torch

import ssconv

TORCHVISION = [
    "resnet18",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "regnet_y_400mf",
    "shufflenet_v2_x1_0",
    "convnext_tiny",
]
TIMM = [
    "resnet18",
    "efficientnet_b0",
    "tf_efficientnet_b0",
    "mobilenetv3_small_100",
    "convnext_tiny",
]


def _norms(model: torch.nn.Module) -> int:
    return sum(1 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def row(source: str, name: str, model: torch.nn.Module, density: float) -> list[str]:
    start = time.perf_counter()
    try:
        report = ssconv.convert(model, density=density, warn_coverage=False)
    except ValueError as exc:
        return [f"{source}:{name}", str(density), "error: " + str(exc).split(". ")[0]] + [""] * 4
    converted = report.converted
    with torch.no_grad():
        report.model.eval()
        out = report.model(torch.randn(1, 3, 64, 64))
    frozen = ssconv.freeze(report.model)
    folded = f"{_norms(report.model) - _norms(frozen)} / {_norms(report.model)}"
    convs = len([d for d in converted if d.name not in report.linear_fallback])
    return [
        f"{source}:{name}",
        str(density),
        f"{convs} convs ({len(report.pointwise_fallback)} by the 1x1 fallback)",
        str(len(report.linear_fallback)),
        f"{report.density:.4f}",
        f"{tuple(out.shape)}, BN folded {folded}",
        f"{time.perf_counter() - start:.1f}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--density", type=float, nargs="+", default=[0.1, 0.3])
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    import torchvision

    models = [
        ("tv", n, lambda n=n: getattr(torchvision.models, n)(weights=None)) for n in TORCHVISION
    ]
    try:
        import timm

        models += [("timm", n, lambda n=n: timm.create_model(n, pretrained=False)) for n in TIMM]
    except ImportError:
        print("(timm not installed: its rows are left out)")
    header = ["model", "density", "converted", "nn.Linear converted", "achieved", "forward", "s"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for source, name, build in models:
        model = build().eval()
        for density in args.density:
            print("| " + " | ".join(row(source, name, model, density)) + " |", flush=True)


if __name__ == "__main__":
    main()
