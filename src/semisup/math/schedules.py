"""Pure schedule functions of the step counter."""

from __future__ import annotations

import math


def cosine_lr(step: int, total_steps: int, base_lr: float, factor: float = 7 / 16) -> float:
    """FixMatch's learning rate: base_lr · cos(factor · π · step / total_steps).

    With factor 7/16 the rate ends at cos(7π/16) ≈ 0.195 of its start (docs/algorithms.md#fixmatch);
    CReST's "halfcos level 1" is factor 1/16.
    """
    return base_lr * math.cos(factor * math.pi * step / total_steps)


def warmup_cosine_lr(
    step: int, total_steps: int, base_lr: float, warmup_epochs: int, epochs: int
) -> float:
    """SimMatch's ImageNet rate: linear warm-up, then a half cosine to 0, set once per epoch.

    The run is `epochs` E epochs of T/E steps. During the first `warmup_epochs` w the rate
    rises every step, base_lr · (t + 1) / (w·T/E) (`warmup_learning_rate`, called with the
    1-based step); from epoch e = ⌊t·E/T⌋ ≥ w on it is base_lr · ½(1 + cos(π (e − w)/(E − w)))
    for the whole epoch (`adjust_learning_rate` with `--cos`, at the start of each epoch), so it
    reaches 0 only after the last epoch. KyleZheng1997/simmatch `utils/lr_schedule.py` and
    `simmatch.py` (`--warmup-epoch 5 --epochs 400 --cos`).

    Args:
        step: optimizer steps done (0-based).
        total_steps: T.
        base_lr: the peak rate.
        warmup_epochs: w (≥ 0, < E).
        epochs: E.
    """
    steps_per_epoch = total_steps / epochs
    epoch = math.floor(step / steps_per_epoch)
    if epoch < warmup_epochs:
        return base_lr * min(1.0, (step + 1) / (warmup_epochs * steps_per_epoch))
    progress = (epoch - warmup_epochs) / (epochs - warmup_epochs)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def linear_rampup(step: int, rampup_steps: int) -> float:
    """clip(step / rampup_steps, 0, 1): MixMatch/ReMixMatch's unlabeled-weight warm-up."""
    if rampup_steps <= 0:
        return 1.0
    return min(max(step / rampup_steps, 0.0), 1.0)
