"""Optimizers with weight decay on kernels (or all parameters), coupled (SGD) or decoupled.

Each function takes the `optim.*` section resolved against the algorithm's defaults (no None
left; `semisup.experiment.resolve_optim`).

Fine-tuning a pretrained network follows USB-CV (microsoft/Semi-supervised-learning
`semilearn/core/utils/build.py`: `get_optimizer`, `get_cosine_schedule_with_warmup`;
`semilearn/nets/utils.py`: `param_groups_layer_decay`): AdamW, a linear warm-up from 0, and
layer-wise learning-rate decay, where a parameter at depth d of a network whose classifier is at
depth D trains with lr · layer_decay^(D − d). The depths come from the model's `layer_ids()`;
parameters outside the model (an algorithm's projection or rotation head) train at the full rate,
as USB's unmatched parameters do. Each parameter group carries its `lr_scale`, which the trainer
multiplies into the scheduled rate.
"""

from __future__ import annotations

import torch
from torch import nn

from semisup.config import OptimConfig
from semisup.errors import UserError
from semisup.math.schedules import cosine_lr, warmup_cosine_lr


def parameter_groups(
    module: nn.Module, s: OptimConfig, network: nn.Module | None = None
) -> list[dict]:
    """The optimizer's parameter groups: one per (depth, decayed or not).

    Kernels (≥ 2-d, not in the network's `no_weight_decay()`, e.g. a ViT's position embedding)
    are decayed; biases and norms are not, unless `decay_all_parameters` (SimMatch's ImageNet
    code: `torch.optim.SGD(model.parameters(), ..., weight_decay=...)`). Without layer decay
    there is a single depth, so the groups are [kernels, others].

    Args:
        module: what the optimizer trains (an algorithm: its model and heads).
        s: the resolved `optim.*` section.
        network: the classifier inside `module` whose `layer_ids()` give the depths (needed when
            `s.layer_decay` is not 1) and whose `no_weight_decay()` names undecayed weights.
    """
    network = network if network is not None else module
    names = {id(p): n for n, p in network.named_parameters()}
    undecayed = set(network.no_weight_decay()) if hasattr(network, "no_weight_decay") else set()
    depth_of = _depths(network, s.layer_decay)
    deepest = max(depth_of.values(), default=0)
    coupled = s.name == "adamw" or not s.decoupled_weight_decay
    groups: dict[tuple[int, bool, bool], dict] = {}
    for p in module.parameters():
        if not p.requires_grad:
            continue
        name = names.get(id(p))
        decays = (p.ndim > 1 or bool(s.decay_all_parameters)) and name not in undecayed
        depth = depth_of.get(name, deepest) if name is not None else deepest
        group = groups.setdefault(
            (depth, not decays, p.ndim <= 1),
            {
                "params": [],
                "weight_decay": s.weight_decay if decays and coupled else 0.0,
                "decays": decays,
                "lr_scale": s.layer_decay ** (deepest - depth),
            },
        )
        group["params"].append(p)
    return [groups[key] for key in sorted(groups)]


def _depths(network: nn.Module, layer_decay: float) -> dict[str, int]:
    if not 0 < layer_decay <= 1:
        raise UserError(f"optim.layer_decay must be in (0, 1], got {layer_decay}")
    if layer_decay == 1:
        return {}
    if not hasattr(network, "layer_ids"):
        raise UserError(
            f"optim.layer_decay needs a model that gives its layer depths (layer_ids()); "
            f"{type(network).__name__} does not: set optim.layer_decay=1"
        )
    return network.layer_ids()


def build_optimizer(
    module: nn.Module, s: OptimConfig, network: nn.Module | None = None
) -> torch.optim.Optimizer:
    """SGD, Adam or AdamW over `module`'s trainable parameters (see `parameter_groups`).

    Coupled decay (FixMatch: L2 on kernels) and AdamW's decay go into the kernels' groups;
    decoupled decay with Adam (MixMatch family) is applied after each step by `decay_kernels`.
    """
    groups = parameter_groups(module, s, network)
    if s.name == "sgd":
        return torch.optim.SGD(groups, lr=s.lr, momentum=s.momentum, nesterov=s.nesterov)
    if s.name == "adam":
        return torch.optim.Adam(groups, lr=s.lr, betas=(0.9, 0.999), eps=1e-8)
    if s.name == "adamw":
        return torch.optim.AdamW(groups, lr=s.lr, betas=(0.9, 0.999), eps=1e-8)
    raise UserError(f"unknown optimizer '{s.name}'. Valid optimizers: adam, adamw, sgd")


def load_optimizer(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Loads a saved optimizer state into `optimizer`.

    Groups saved without `lr_scale` / `decays` (checkpoints written before layer-wise decay
    existed) keep the values of the freshly built groups.
    """
    fresh = [
        {key: group[key] for key in ("lr_scale", "decays")} for group in optimizer.param_groups
    ]
    optimizer.load_state_dict(state)
    for group, keys in zip(optimizer.param_groups, fresh, strict=True):
        for key, value in keys.items():
            group.setdefault(key, value)


def learning_rate(s: OptimConfig, step: int, total_steps: int) -> float:
    """The learning rate for `step` (0-based) under the configured warm-up and schedule.

    During the warm-up the rate is lr · step / warmup_steps (0 at the first step, as USB's
    LambdaLR); after it, the schedule runs over the remaining steps.
    """
    warmup = s.warmup_steps
    if not 0 <= warmup < total_steps:
        raise UserError(
            f"optim.warmup_steps must be at least 0 and below train.steps={total_steps}, "
            f"got {warmup}"
        )
    if step < warmup:
        return s.lr * step / warmup
    step, total_steps = step - warmup, total_steps - warmup
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
    """Decoupled weight decay after an Adam step: kernels ← kernels · (1 − wd · lr · lr_scale).

    As in the MixMatch code (with `decay_all_parameters` every parameter shrinks); for coupled
    decay and AdamW (decay inside its step) nothing is done here.
    """
    if s.name == "adamw" or not (s.decoupled_weight_decay and s.weight_decay):
        return
    for group in optimizer.param_groups:
        if group["decays"]:
            torch._foreach_mul_(group["params"], 1.0 - s.weight_decay * lr * group["lr_scale"])


def freeze_backbone(model: nn.Module) -> None:
    """Linear probing: every parameter but the classifier's (`model.head`) stops training.

    BatchNorm running statistics still follow the training batches.
    """
    head = {id(p) for p in model.head.parameters()}
    for p in model.parameters():
        if id(p) not in head:
            p.requires_grad_(False)
