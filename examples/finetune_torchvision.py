"""Fine-tune a pretrained torchvision ResNet-18 into Structured Sparse Convolution (SSC).

SSC follows "Pushing the Efficiency Limit Using Structured Sparse Convolutions" (Verma et al.,
WACV 2023, arXiv:2210.12818). The dense model is built and given its pretrained weights first;
``ssconv.convert(..., copy_weights=True)`` then replaces its 3 x 3 convolutions by SSC layers
that keep the pretrained weights on their pattern (the rest of each filter is zero), and the
converted model is fine-tuned with a plain PyTorch loop. The heart of it is four lines::

    dense = ssconv.create_model("tv:resnet18", num_classes=10, pretrained=True)
    report = ssconv.convert(dense, density=0.3, copy_weights=True)
    model = report.model  # train as usual
    print(report)  # the table of layers: converted or kept, and the achieved density

Runs::

    # offline: a local dense ResNet-18 state_dict (.pth / .pt / .safetensors)
    python examples/finetune_torchvision.py --weights resnet18.pth
    # torchvision's ImageNet weights (downloaded once, then cached by torchvision)
    python examples/finetune_torchvision.py --pretrained --dataset cifar10 --download

With neither option the network starts from random weights and nothing is downloaded. The
default dataset is a small synthetic one, so that the example runs anywhere in seconds.
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import ssconv
from ssconv.data import build_dataset
from ssconv.models.weights import load_init_checkpoint


def build(num_classes: int, *, pretrained: bool, weights: str | None, density: float):
    """The dense ResNet-18 with its starting weights, converted to SSC at ``density``."""
    dense = ssconv.create_model("tv:resnet18", num_classes=num_classes, pretrained=pretrained)
    if weights:  # a local dense state_dict; a classifier of another size stays fresh
        load_init_checkpoint(dense, weights, what="tv:resnet18")
    return ssconv.convert(dense, density=density, copy_weights=True)


@torch.no_grad()
def evaluate(model, loader, device) -> float:
    model.eval()
    correct = total = 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        correct += (model(x).argmax(1) == y).sum().item()
        total += y.numel()
    return correct / max(total, 1)


def main(argv: list[str] | None = None) -> float:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    start = p.add_mutually_exclusive_group()
    start.add_argument("--weights", metavar="PATH", help="local dense ResNet-18 state_dict")
    start.add_argument(
        "--pretrained",
        action="store_true",
        help="torchvision's ImageNet weights (downloads them unless cached)",
    )
    p.add_argument("--density", type=float, default=0.3, help="SSC weight density")
    p.add_argument(
        "--dataset",
        default="synthetic:3:32:32:10:256:64",
        help="an ssconv dataset: cifar10, fashion_mnist, folder:PATH, "
        "synthetic:C:H:W:CLASSES:TRAIN:TEST (default: a small synthetic one)",
    )
    p.add_argument("--data-root", default="data", help="folder of the datasets")
    p.add_argument("--download", action="store_true", help="download CIFAR / Fashion-MNIST")
    p.add_argument("--image-size", type=int, default=None, help="resize the images to this")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.01, help="SGD learning rate (cosine decay)")
    p.add_argument("--max-steps", type=int, default=None, help="batches per epoch at most")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", metavar="PATH", help="save the fine-tuned weights (.safetensors)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    data = dict(root=args.data_root, download=args.download, size=args.image_size)
    train_set, info = build_dataset(args.dataset, train=True, **data)
    test_set, _ = build_dataset(args.dataset, train=False, **data)
    report = build(
        info.num_classes, pretrained=args.pretrained, weights=args.weights, density=args.density
    )
    print(report)  # the table of layers: converted or kept, and the achieved density
    model = report.model.to(args.device)

    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True)
    test_loader = DataLoader(test_set, batch_size=2 * args.batch_size)
    steps = len(train_loader) if args.max_steps is None else min(args.max_steps, len(train_loader))
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / (args.epochs * steps)))
    )
    print(f"before fine-tuning: test accuracy {evaluate(model, test_loader, args.device):.4f}")
    acc = 0.0
    for epoch in range(1, args.epochs + 1):
        model.train()
        for i, (x, y) in enumerate(train_loader):
            if i == steps:
                break
            x, y = x.to(args.device), y.to(args.device)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        acc = evaluate(model, test_loader, args.device)
        print(f"epoch {epoch}: loss {loss.item():.4f}, test accuracy {acc:.4f}")
    if args.out:
        from safetensors.torch import save_file

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, args.out)
        print(f"weights written to {args.out}")
    return acc


if __name__ == "__main__":
    main()
