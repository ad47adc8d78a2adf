"""Exponential moving average of a model's weights, used for evaluation (and as a teacher)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class ModelEMA:
    """Shadow copy with `shadow ← decay · shadow + (1 − decay) · θ` after every step.

    As in the original code (tf.train.ExponentialMovingAverage on trainable variables, no bias
    correction): parameters are averaged, buffers (BatchNorm running statistics) are copied from
    the live model. The shadow starts equal to the model.

    Args:
        model: the live model.
        decay: 0.999 in all the papers.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One EMA step towards `model`'s current weights."""
        shadow = list(self.module.parameters())
        live = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(shadow, live, 1.0 - self.decay)
        for b_shadow, b_live in zip(self.module.buffers(), model.buffers(), strict=True):
            b_shadow.copy_(b_live)

    def state_dict(self) -> dict[str, Any]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state)
