"""Optimizers with weight decay on kernels only, coupled (SGD, L2) or decoupled (Adam).

Each function takes the `optim.*` section resolved against the algorithm's defaults (no None
left; `semisup.experiment.resolve_optim`).
"""

from __future__ import annotations

import torch
from torch import nn

from semisup.config import OptimConfig
from semisup.errors import UserError
from semisup.math.schedules import cosine_lr


def split_kernels(module: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(kernels, others): conv/linear weights (≥ 2-d) get weight decay; biases and BN do not."""
    kernels, others = [], []
    for p in module.parameters():
        if p.requires_grad:
            (kernels if p.ndim > 1 else others).append(p)
    return kernels, others


def build_optimizer(module: nn.Module, s: OptimConfig) -> torch.optim.Optimizer:
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


def learning_rate(s: OptimConfig, step: int, total_steps: int) -> float:
    """The learning rate for `step` under the configured schedule."""
    if s.schedule == "cosine":
        return cosine_lr(step, total_steps, s.lr, s.cosine_factor)
    if s.schedule == "constant":
        return s.lr
    raise UserError(f"unknown lr schedule '{s.schedule}'. Valid schedules: constant, cosine")


@torch.no_grad()
def decay_kernels(optimizer: torch.optim.Optimizer, s: OptimConfig, lr: float) -> None:
    """Decoupled weight decay after the step: kernels ← kernels · (1 − wd · lr) (MixMatch code)."""
    if s.decoupled_weight_decay and s.weight_decay:
        torch._foreach_mul_(optimizer.param_groups[0]["params"], 1.0 - s.weight_decay * lr)
