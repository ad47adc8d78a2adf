"""Batched, on-device augmentation.

Weak flips/shifts, the CTAugment op table, CTAugment and RandAugment policies, and the view
builder the trainer uses.
"""

from __future__ import annotations

import torch
from torch import Tensor

from semisup.augment.ctaugment import CTAugment
from semisup.augment.ops import OPS
from semisup.augment.randaugment import CReSTRandAugment, RandAugment
from semisup.augment.views import Transform, ViewMaker
from semisup.augment.weak import WeakAugment

STRONG_POLICIES = ("ctaugment", "randaugment", "randaugment_crest", "none")


def full_cutout(images: Tensor, generator: torch.Generator) -> Tensor:
    """CTAugment's cutout op at level 1: a grey square of half the side at a random centre.

    FixMatch appends it to every CTAugment strong view (docs/algorithms.md#ctaugment).
    """
    level = torch.ones(len(images), device=images.device)
    return OPS["cutout"].fn(images, level, generator=generator)


__all__ = [
    "OPS",
    "STRONG_POLICIES",
    "CReSTRandAugment",
    "CTAugment",
    "RandAugment",
    "Transform",
    "ViewMaker",
    "WeakAugment",
    "full_cutout",
]
