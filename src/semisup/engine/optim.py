"""Optimizers with weight decay on kernels only, coupled (SGD, L2) or decoupled (Adam)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from semisup.errors import UserError
from semisup.math.schedules import cosine_lr


@dataclass(frozen=True)
class OptimSettings:
    """Resolved optimizer settings (config `optim.*` over the algorithm's defaults)."""

    name: str
    lr: float
    momentum: float
    nesterov: bool
    weight_decay: float
    decoupled_weight_decay: bool
    schedule: str
    cosine_factor: float


def split_kernels(module: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(kernels, others): conv/linear weights (≥ 2-d) get weight decay; biases and BN do not."""
    kernels, others = [], []
    for p in module.parameters():
        if p.requires_grad:
            (kernels if p.ndim > 1 else others).append(p)
    return kernels, others


def build_optimizer(module: nn.Module, s: OptimSettings) -> torch.optim.Optimizer:
    """SGD or Adam over `module`'s parameters.

    Coupled decay (FixMatch: L2 on kernels) goes into the kernels' parameter group; decoupled
    decay (MixMatch family) is applied after each step by `decay_kernels`.
    """
    kernels, others = split_kernels(module)
    coupled = 0.0 if s.decoupled_weight_decay else s.weight_decay
    groups = [{"params": kernels, "weight_decay": coupled}, {"params": others, "weight_decay": 0}]
    if s.name == "sgd":
        return torch.optim.SGD(groups, lr=s.lr, momentum=s.momentum, nesterov=s.nesterov)
    if s.name == "adam":
        return torch.optim.Adam(groups, lr=s.lr, betas=(0.9, 0.999), eps=1e-8)
    raise UserError(f"unknown optimizer '{s.name}'. Valid optimizers: adam, sgd")


def learning_rate(s: OptimSettings, step: int, total_steps: int) -> float:
    """The learning rate for `step` under the configured schedule."""
    if s.schedule == "cosine":
        return cosine_lr(step, total_steps, s.lr, s.cosine_factor)
    if s.schedule == "constant":
        return s.lr
    raise UserError(f"unknown lr schedule '{s.schedule}'. Valid schedules: constant, cosine")


@torch.no_grad()
def decay_kernels(optimizer: torch.optim.Optimizer, s: OptimSettings, lr: float) -> None:
    """Decoupled weight decay after the step: kernels ← kernels · (1 − wd · lr) (MixMatch code)."""
    if s.decoupled_weight_decay and s.weight_decay:
        torch._foreach_mul_(optimizer.param_groups[0]["params"], 1.0 - s.weight_decay * lr)
