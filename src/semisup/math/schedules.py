"""Pure schedule functions of the step counter."""

from __future__ import annotations

import math


def cosine_lr(step: int, total_steps: int, base_lr: float, factor: float = 7 / 16) -> float:
    """FixMatch's learning rate: base_lr · cos(factor · π · step / total_steps).

    With factor 7/16 the rate ends at cos(7π/16) ≈ 0.195 of its start (docs/algorithms.md#fixmatch);
    CReST's "halfcos level 1" is factor 1/16.
    """
    return base_lr * math.cos(factor * math.pi * step / total_steps)


def linear_rampup(step: int, rampup_steps: int) -> float:
    """clip(step / rampup_steps, 0, 1): MixMatch/ReMixMatch's unlabeled-weight warm-up."""
    if rampup_steps <= 0:
        return 1.0
    return min(max(step / rampup_steps, 0.0), 1.0)
