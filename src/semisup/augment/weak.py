"""The weak augmentation of the Google code ("d"): random flip, then reflect-pad and crop.

Batched on uint8 tensors on the training device: one gather builds every output image from
per-image flips and shifts, which is exact (no interpolation) and works for any dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor


def reflect(index: Tensor, size: int) -> Tensor:
    """Maps out-of-range pixel indices back inside like TF/PyTorch 'reflect' padding.

    The edge pixel is not repeated: index -1 → 1, index `size` → `size − 2`.
    """
    index = index.abs()
    return torch.where(index >= size, 2 * (size - 1) - index, index)


def shift_and_flip(images: Tensor, dx: Tensor, dy: Tensor, flip: Tensor) -> Tensor:
    """Translates each image by (dx, dy) pixels with reflect padding, mirroring where `flip`.

    Equal to flipping first, reflect-padding by max |shift| and cropping at the shifted window.

    Args:
        images: (N, C, H, W), any dtype.
        dx, dy: (N,) integer shifts; output pixel (i, j) reads input (i + dy, j + dx).
        flip: (N,) bool, mirror left-right before shifting.

    Returns:
        (N, C, H, W) tensor of the same dtype.
    """
    n, c, h, w = images.shape
    rows = reflect(torch.arange(h, device=images.device)[None] + dy[:, None], h)  # (N, H)
    cols = torch.arange(w, device=images.device)[None] + dx[:, None]  # (N, W)
    cols = reflect(cols, w)
    cols = torch.where(flip[:, None], w - 1 - cols, cols)
    flat = (rows[:, :, None] * w + cols[:, None, :]).reshape(n, 1, h * w).expand(n, c, h * w)
    return images.reshape(n, c, h * w).gather(2, flat).reshape(n, c, h, w)


class WeakAugment:
    """Per image: random horizontal flip and random translation with reflect padding.

    The flip has probability 0.5 (only if `hflip`); the translation is uniform in whole pixels up
    to `pad_fraction` of the image side on each axis.

    The papers' setting: 4 px on 32 px images (12.5 %), 12 px on STL-10's 96 px; no flip for
    digits and SVHN.

    Args:
        hflip: whether to flip.
        pad_fraction: the largest shift as a fraction of the image side.
    """

    def __init__(self, hflip: bool, pad_fraction: float = 0.125) -> None:
        self.hflip = hflip
        self.pad_fraction = pad_fraction

    def sample(
        self, n: int, height: int, width: int, generator: torch.Generator, device: torch.device
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The per-image shifts dx, dy (pixels) and flips that `__call__` draws, in its order."""
        pad_y, pad_x = int(height * self.pad_fraction), int(width * self.pad_fraction)
        dx = torch.randint(-pad_x, pad_x + 1, (n,), generator=generator, device=device)
        dy = torch.randint(-pad_y, pad_y + 1, (n,), generator=generator, device=device)
        if self.hflip:
            flip = torch.rand(n, generator=generator, device=device) < 0.5
        else:
            flip = torch.zeros(n, dtype=torch.bool, device=device)
        return dx, dy, flip

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        n, _, h, w = images.shape
        dx, dy, flip = self.sample(n, h, w, generator, images.device)
        return shift_and_flip(images, dx, dy, flip)
