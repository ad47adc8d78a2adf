"""Optimizer settings of the original codes, shared by the algorithms built on them.

Each dict holds every `optim.*` key; an algorithm's `optim_defaults` is one of them (or one with a
key changed), and the config's `optim.*` keys override it.
"""

from __future__ import annotations

from typing import Any

# google-research/fixmatch: SGD with Nesterov momentum 0.9, lr 0.03, L2 weight decay 5e-4 on the
# kernels, cosine decay lr·cos(7π·t / (16·T)) (docs/algorithms.md#fixmatch).
FIXMATCH_SGD: dict[str, Any] = {
    "name": "sgd",
    "lr": 0.03,
    "momentum": 0.9,
    "nesterov": True,
    "weight_decay": 5e-4,
    "decoupled_weight_decay": False,
    "schedule": "cosine",
    "cosine_factor": 7 / 16,
    "warmup_epochs": 0,
    "schedule_epochs": 1,
    "decay_all_parameters": False,
}

# google-research/mixmatch (and remixmatch, realmix): Adam 0.002, constant rate, decoupled decay:
# kernels ×(1 − 0.02·lr) after every step; momentum/nesterov unused (docs/algorithms.md#mixmatch).
MIXMATCH_ADAM: dict[str, Any] = {
    **FIXMATCH_SGD,
    "name": "adam",
    "lr": 0.002,
    "weight_decay": 0.02,
    "decoupled_weight_decay": True,
    "schedule": "constant",
}
