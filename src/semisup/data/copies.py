"""Expanded unlabeled sets: N generated copies of every unlabeled image (RealMix's "Extend").

The trainer draws unlabeled positions from `copies.size` instead of the U unlabeled images;
position p stands for copy p // U of image p % U, and `copies(images, positions)` turns the U-set
images gathered for those positions into the copies. Nothing is materialised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from semisup.math import erasing


class UnlabeledCopies(Protocol):
    """Any expansion of the unlabeled set into `size` positions."""

    @property
    def size(self) -> int:
        """Number of positions (copies × U)."""
        ...

    def __call__(self, images: Tensor, positions: Tensor) -> Tensor:
        """uint8 images of unlabeled images `positions % U` → their copies `positions // U`."""
        ...


@dataclass(frozen=True)
class ErasedCopies:
    """RealMix's Extend: randomly erased copies, each draw a hash of (seed, copy, image).

    RealMix (Nair et al., 2019) §3, uizard-technologies/realmix `scripts/make_aug_copy.py`: the
    code writes N erased copies of the unlabeled set to disk once and trains on them instead of
    the originals. Here copy c of image i is erased on the fly from a hash of (`seed`, c, i)
    (`semisup.math.erasing.erase_copies`), so it is the same whenever it is drawn.

    Attributes:
        copies: N erased copies.
        keep_original: also keep the un-erased images, as copy 0 (copies 1..N are erased).
        seed: seed of the copies.
        erase_probability: p of erasing a copy.
        num_unlabeled: U, the size of the unlabeled set.
    """

    copies: int
    keep_original: bool
    seed: int
    erase_probability: float
    num_unlabeled: int

    @property
    def size(self) -> int:
        """(N + keep_original) · U positions."""
        return (self.copies + int(self.keep_original)) * self.num_unlabeled

    def __call__(self, images: Tensor, positions: Tensor) -> Tensor:
        """Erases image `positions % U` as copy `positions // U`."""
        copy, image = positions // self.num_unlabeled, positions % self.num_unlabeled
        erased = erasing.erase_copies(images, copy, image, self.seed, self.erase_probability)
        if self.keep_original:
            return torch.where((copy == 0)[:, None, None, None], images, erased)
        return erased
