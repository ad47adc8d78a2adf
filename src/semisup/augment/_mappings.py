"""Magnitude → argument mappings of the CTAugment ops (fixmatch ``libml/ctaugment.py``).

Each mapping takes float64 levels ``v`` in [0, 1] and evaluates the reference expression in
the same double-precision operation order as the Python original, so the arguments are the
ones Pillow received there (values from docs/algorithms.md#numeric-checks C5 in the docstrings).
"""

from __future__ import annotations

import torch
from torch import Tensor

from semisup.augment._geometry import RESCALE_METHODS

__all__ = [
    "cutout_size",
    "enhance_factor",
    "per_image_levels",
    "posterize_bits",
    "rescale_method_index",
    "rotate_degrees",
    "shear_factor",
    "solarize_threshold",
    "translate_fraction",
]


def per_image_levels(level: Tensor | float, images: Tensor, columns: int | None = None) -> Tensor:
    """``level`` as float64 on the images' device, shape (N,) or (N, columns).

    A Python number or 0-d tensor (or a (columns,) tensor) is broadcast to every image.
    """
    n = images.shape[0]
    level = torch.as_tensor(level, device=images.device).to(torch.float64)
    shape = (n,) if columns is None else (n, columns)
    if level.shape != shape:
        try:
            level = level.expand(shape)
        except RuntimeError:
            raise ValueError(f"level must have shape {shape}, got {tuple(level.shape)}") from None
    return level


def enhance_factor(level: Tensor) -> Tensor:
    """``ImageEnhance`` factor ``0.1 + 1.9 v`` (1.0 at v = 0.9/1.9; 1.05 at v = 0.5)."""
    return 0.1 + 1.9 * level


def posterize_bits(level: Tensor) -> Tensor:
    """Bits kept by posterize, ``1 + int(7.999 v)`` in {1..8} (v = 0.5 → 4, v = 1 → 8)."""
    return 1 + torch.floor(level * 7.999).to(torch.int64)


def solarize_threshold(level: Tensor) -> Tensor:
    """Solarize threshold ``int(255.999 v)`` in {0..255} (v = 0.5 → 127)."""
    return torch.floor(level * 255.999).to(torch.int64)


def rotate_degrees(level: Tensor) -> Tensor:
    """Rotation ``int(round((2 v - 1) * 45))`` degrees, half-to-even (0.25 → -22, 0.6 → 9)."""
    return torch.round((2 * level - 1) * 45).to(torch.int64)


def shear_factor(level: Tensor) -> Tensor:
    """Shear ``(2 v - 1) * 0.3`` (v = 0.75 → 0.15)."""
    return (2 * level - 1) * 0.3


def translate_fraction(level: Tensor) -> Tensor:
    """Translation ``d = (2 v - 1) * 0.3``: of the image size (paper) or in pixels (code)."""
    return (2 * level - 1) * 0.3


def cutout_size(level: Tensor, width: int, height: int) -> Tensor:
    """Cutout side ``1 + int(v * min(W, H) * 0.499)`` (v = 1: 16 on 32 px, 48 on 96 px)."""
    return 1 + torch.floor(level * min(width, height) * 0.499).to(torch.int64)


def rescale_method_index(level: Tensor) -> Tensor:
    """Rescale filter index ``int(5.99 m)`` (m = 0.5 → 2, BILINEAR).

    The filters are [ANTIALIAS (= LANCZOS), BICUBIC, BILINEAR, BOX, HAMMING, NEAREST].
    """
    return torch.floor(level * 5.99).to(torch.int64).clamp(0, len(RESCALE_METHODS) - 1)
