"""Tiny fixtures shared by the algorithm tests."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from semisup.algorithms.base import TaskInfo


class LogitsAsImages(nn.Module):
    """A "model" whose logits are its input: images of shape (N, C, 1, 1) → (N, C).

    Makes loss values hand-computable. `scale` is a parameter so gradients have somewhere to go.
    """

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.num_features = 0

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * x.flatten(1)


class TinyNet(nn.Module):
    """A 2-layer CNN with BatchNorm for 8x8 grey images."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, num_classes)
        self.num_features = 4

    def forward_features(self, x: Tensor) -> Tensor:
        return torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3))

    def forward_head(self, features: Tensor) -> Tensor:
        return self.fc(features)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def info(num_classes: int = 3, num_labeled: int = 8, total_steps: int = 100) -> TaskInfo:
    """TaskInfo for a small balanced problem."""
    per_class = num_labeled // num_classes
    return TaskInfo(
        num_classes=num_classes,
        num_labeled=num_labeled,
        labeled_class_counts=(per_class,) * num_classes,
        total_steps=total_steps,
    )


def as_images(logits: list[list[float]]) -> Tensor:
    """Logit rows → (N, C, 1, 1) "images" for LogitsAsImages."""
    return torch.tensor(logits).reshape(len(logits), -1, 1, 1)
