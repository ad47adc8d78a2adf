"""Optimizers with weight decay on kernels (or all parameters), coupled (SGD) or decoupled.

Each function takes the `optim.*` section resolved against the algorithm's defaults (no None
left; `semisup.experiment.resolve_optim`).
"""

from __future__ import annotations

import torch
from torch import nn

from semisup.config import OptimConfig
from semisup.errors import UserError
from semisup.math.schedules import cosine_lr, warmup_cosine_lr


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
    decay (MixMatch family) is applied after each step by `decay_kernels`. With
    `decay_all_parameters` biases and BatchNorm weights are decayed too (SimMatch's ImageNet
    code: `torch.optim.SGD(model.parameters(), ..., weight_decay=...)`).
    """
    kernels, others = split_kernels(module)
    coupled = 0.0 if s.decoupled_weight_decay else s.weight_decay
    coupled_others = coupled if s.decay_all_parameters else 0
    groups = [
        {"params": kernels, "weight_decay": coupled},
        {"params": others, "weight_decay": coupled_others},
    ]
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
    if s.schedule == "warmup_cosine":
        if not 0 <= s.warmup_epochs < s.schedule_epochs:
            raise UserError(
                f"optim.warmup_epochs ({s.warmup_epochs}) must be at least 0 and below "
                f"optim.schedule_epochs ({s.schedule_epochs}), e.g. 5 and 400 as SimMatch"
            )
        return warmup_cosine_lr(step, total_steps, s.lr, s.warmup_epochs, s.schedule_epochs)
    raise UserError(
        f"unknown lr schedule '{s.schedule}'. Valid schedules: constant, cosine, warmup_cosine"
    )


@torch.no_grad()
def decay_kernels(optimizer: torch.optim.Optimizer, s: OptimConfig, lr: float) -> None:
    """Decoupled weight decay after the step: kernels ← kernels · (1 − wd · lr) (MixMatch code).

    With `decay_all_parameters` every parameter shrinks.
    """
    if s.decoupled_weight_decay and s.weight_decay:
        groups = optimizer.param_groups if s.decay_all_parameters else optimizer.param_groups[:1]
        for group in groups:
            torch._foreach_mul_(group["params"], 1.0 - s.weight_decay * lr)
