"""``SSConv2d`` in a PyTorch Lightning module: a small CNN whose 3 x 3 convolutions are
Structured Sparse Convolutions, trained with ``lightning.Trainer``.

SSC follows "Pushing the Efficiency Limit Using Structured Sparse Convolutions" (Verma et al.,
WACV 2023, arXiv:2210.12818). ``SSConv2d`` takes ``nn.Conv2d``'s arguments plus the pattern's
(``period``: one filter in ``period`` of each input channel's kernels is spatial, the others
are 1 x 1 points); it is an ``nn.Module`` like any other, so Lightning needs nothing special:
no custom hooks, the optimizer sees its parameters, checkpoints hold its weights.

Runs::

    python examples/lightning_ssconv.py          # a small synthetic dataset, CPU, seconds
    python examples/lightning_ssconv.py --dataset cifar10 --download --epochs 30 \\
        --accelerator gpu

Needs ``pip install lightning`` (in ssconv's ``dev`` extra).
"""

from __future__ import annotations

import argparse

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

import ssconv
from ssconv import SSConv2d
from ssconv.data import build_dataset


def ssc_block(c_in: int, c_out: int, *, stride: int, period: int) -> nn.Sequential:
    """SSC 3 x 3 -> BatchNorm -> ReLU: a drop-in for the dense ``Conv2d`` block."""
    conv = SSConv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False, period=period)
    return nn.Sequential(conv, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class SSCNet(nn.Module):
    """A dense stem, SSC blocks (the width doubles as the resolution halves), a classifier."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 32, period: int = 4):
        super().__init__()
        w = width
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(inplace=True),
        )
        self.features = nn.Sequential(
            ssc_block(w, w, stride=1, period=period),
            ssc_block(w, 2 * w, stride=2, period=period),
            ssc_block(2 * w, 2 * w, stride=1, period=period),
            ssc_block(2 * w, 4 * w, stride=2, period=period),
        )
        self.head = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, classes)
        x = self.features(self.stem(x))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class LitSSC(L.LightningModule):
    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        *,
        width: int = 32,
        period: int = 4,
        lr: float = 0.05,
        weight_decay: float = 5e-4,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = SSCNet(num_classes, in_channels, width=width, period=period)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y), prog_bar=True)
        self.log("val_acc", (logits.argmax(1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(
            self.parameters(),
            lr=self.hparams.lr,
            momentum=0.9,
            nesterov=True,
            weight_decay=self.hparams.weight_decay,
        )
        epochs = max(self.trainer.max_epochs or 1, 1)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
        return {"optimizer": optimizer, "lr_scheduler": schedule}


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--dataset",
        default="synthetic:3:32:32:10:256:64",
        help="an ssconv dataset: cifar10, fashion_mnist, folder:PATH, "
        "synthetic:C:H:W:CLASSES:TRAIN:TEST (default: a small synthetic one)",
    )
    p.add_argument("--data-root", default="data", help="folder of the datasets")
    p.add_argument("--download", action="store_true", help="download CIFAR / Fashion-MNIST")
    p.add_argument("--width", type=int, default=32, help="channels of the first block")
    p.add_argument("--period", type=int, default=4, help="SSC period (density about 1/period)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--max-steps", type=int, default=None, help="batches per epoch at most")
    p.add_argument("--accelerator", default="auto", help="lightning's: cpu, gpu, auto")
    p.add_argument("--out", default="runs/lightning_ssconv", help="lightning's log folder")
    args = p.parse_args(argv)

    train_set, info = build_dataset(
        args.dataset, root=args.data_root, train=True, download=args.download
    )
    test_set, _ = build_dataset(
        args.dataset, root=args.data_root, train=False, download=args.download
    )
    lit = LitSSC(
        info.num_classes, info.in_channels, width=args.width, period=args.period, lr=args.lr
    )
    density = ssconv.profile(lit.model, (1, *info.input_size)).density
    print(f"SSCNet: {density:.3f} of a dense network's conv+linear weights")

    trainer = L.Trainer(
        max_epochs=args.epochs,
        accelerator=args.accelerator,
        devices=1,
        default_root_dir=args.out,
        limit_train_batches=args.max_steps or 1.0,
        enable_model_summary=False,
    )
    trainer.fit(
        lit,
        DataLoader(train_set, batch_size=args.batch_size, shuffle=True),
        DataLoader(test_set, batch_size=2 * args.batch_size),
    )
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    print(f"after {args.epochs} epoch(s): val_acc {metrics.get('val_acc', float('nan')):.4f}")
    return metrics


if __name__ == "__main__":
    main()
