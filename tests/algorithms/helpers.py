"""Tiny fixtures shared by the algorithm tests."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from semisup.algorithms.base import TaskInfo
from semisup.config import build_config
from semisup.engine.checkpoint import load_checkpoint
from semisup.engine.trainer import Trainer
from semisup.experiment import build_trainer


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


def assert_resumes_exactly(tmp_path: Path, overrides: dict[str, object]) -> Trainer:
    """A short digits run's checkpoint restores every algorithm buffer, and the next step.

    `overrides` name the algorithm and any setting; the run is 3 steps of labeled batch 8 with
    μ = 2, evaluated (and checkpointed) at the end. Asserts that a fresh trainer that loads the
    checkpoint holds bit-identical buffers and that one more step gives the same loss and
    buffers in both. Returns the trainer that ran straight through (to check that its state
    was written).
    """
    settings = {
        "algorithm.mu": 2,
        "train.steps": 3,
        "train.eval_every": 3,
        "train.batch_size": 8,
        "train.progress": False,
        "train.tensorboard": False,
        **overrides,
    }
    first = build_trainer(build_config(None, settings), tmp_path / "first")
    first.fit()
    resumed = build_trainer(build_config(None, settings), tmp_path / "resumed")
    resumed.load_state_dict(load_checkpoint(tmp_path / "first" / "checkpoint.pt", resumed.device))
    _assert_same_buffers(first.algorithm, resumed.algorithm)
    next_straight, next_resumed = first.train_step(), resumed.train_step()
    assert next_straight is not None and next_resumed is not None
    assert torch.equal(next_straight["loss"], next_resumed["loss"])
    _assert_same_buffers(first.algorithm, resumed.algorithm)
    return first


def _assert_same_buffers(a: nn.Module, b: nn.Module) -> None:
    buffers = dict(a.named_buffers())
    assert buffers.keys() == dict(b.named_buffers()).keys()
    for name, value in buffers.items():
        assert torch.equal(value, b.get_buffer(name)), name
