"""Small networks for checking scores by hand."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class ToyConvNet(nn.Module):
    """conv(2->3) - ReLU - conv(3->4) - ReLU - mean pool - linear(4->5), no biases."""

    def __init__(self, bias: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1, bias=bias)
        self.conv2 = nn.Conv2d(3, 4, 3, padding=1, bias=bias)
        self.fc = nn.Linear(4, 5, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        return self.fc(x.mean((2, 3)))


class ToyMLP(nn.Module):
    """linear(6->5) - ReLU - linear(5->4) - ReLU - linear(4->3), no biases."""

    def __init__(self) -> None:
        super().__init__()
        self.l1 = nn.Linear(6, 5, bias=False)
        self.l2 = nn.Linear(5, 4, bias=False)
        self.l3 = nn.Linear(4, 3, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.l3(F.relu(self.l2(F.relu(self.l1(x.flatten(1))))))


class ToyBNNet(nn.Module):
    """Stem, two prunable 3x3 convs with batch norm, classifier (for prune() tests)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.conv1 = nn.Conv2d(8, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.stem(x))
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))
