"""Training Signal Annealing (TSA) for the supervised loss (UDA, Xie et al. 2020, §3.2).

Early in training a labeled example only contributes to the loss while the model's probability of
its correct class is at most a threshold η that rises from 1/C to 1 as training progresses, so
the model cannot fit the few labels before it has learned from the unlabeled data. Follows
google-research/uda `image/main.py` (`get_tsa_threshold`, `anneal_sup_loss`);
docs/algorithms.md#tsa.

The API, used by UDA and RealMix:
    1. `threshold(schedule, progress, num_classes)`: η for the fraction of training done;
    2. a keep-mask (float, no gradient): `hard_label_keep_mask` is UDA's rule for integer labels
       (RealMix adds its own rule for mixed soft labels on top of `threshold`);
    3. `masked_mean(losses, mask)`: Σ mask·loss / max(Σ mask, 1), UDA's normalisation.

Example:
    >>> eta = tsa.threshold("linear", progress=step / total_steps, num_classes=10)
    >>> keep = tsa.hard_label_keep_mask(logits_x.softmax(-1), y, eta)
    >>> loss_x = tsa.masked_mean(F.cross_entropy(logits_x, y, reduction="none"), keep)
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
from torch import Tensor

Schedule = Literal["none", "linear", "log", "exp"]
SCHEDULES: tuple[str, ...] = get_args(Schedule)

_SCALE = 5.0  # UDA's `scale` for the exp and log schedules


def threshold(schedule: str, progress: float, num_classes: int) -> float:
    """η(ρ) = c(ρ)·(1 − 1/C) + 1/C: UDA's `get_tsa_threshold` with start 1/C and end 1.

    c(ρ) is ρ ("linear", UDA's linear_schedule), exp(5(ρ − 1)) ("exp": slow release, for when
    the model overfits easily), 1 − exp(−5ρ) ("log": fast release), or 1 ("none": no annealing,
    every example is kept). c is capped at 1 (as google-research/fixmatch `uda.py` does).

    Args:
        schedule: one of `SCHEDULES`.
        progress: ρ, the fraction of training done (step / total steps).
        num_classes: C.

    Returns:
        η ∈ [1/C, 1]. Check RM1 (C = 10, ρ = 0 / 0.5 / 1): linear 0.1 / 0.55 / 1;
        exp 0.10606 / 0.17388 / 1; log 0.1 / 0.92612 / 0.99394.
    """
    if schedule == "linear":
        coeff = progress
    elif schedule == "exp":
        coeff = math.exp((progress - 1.0) * _SCALE)
    elif schedule == "log":
        coeff = 1.0 - math.exp(-progress * _SCALE)
    elif schedule == "none":
        coeff = 1.0
    else:
        raise ValueError(f"unknown TSA schedule '{schedule}'. Valid: {', '.join(SCHEDULES)}")
    start = 1.0 / num_classes
    return min(coeff, 1.0) * (1.0 - start) + start


@torch.no_grad()
def hard_label_keep_mask(probs: Tensor, labels: Tensor, eta: float) -> Tensor:
    """UDA's rule: keep a labeled example while p(correct class) ≤ η.

    UDA drops the examples with p_correct > η (`1 − 1[p_correct > η]`), so an example whose
    probability equals η is kept.

    Args:
        probs: (N, C) predicted probabilities of the labeled images.
        labels: (N,) integer labels.
        eta: the threshold from `threshold`.

    Returns:
        (N,) float mask, 1.0 = the example contributes to the loss; never carries a gradient.
    """
    correct = probs.gather(1, labels[:, None]).squeeze(1)
    return (correct <= eta).float()


def masked_mean(losses: Tensor, mask: Tensor) -> Tensor:
    """Σ mask·loss / max(Σ mask, 1): the mean over the kept examples (0 when none is kept).

    Args:
        losses: (N,) per-example losses.
        mask: (N,) weights, usually from a keep-mask.
    """
    return (losses * mask).sum() / mask.sum().clamp(min=1.0)
