"""Magnitude → argument mappings of the CTAugment ops (fixmatch ``libml/ctaugment.py``).

Each mapping takes float64 levels ``v`` in [0, 1] and evaluates the reference expression in
the same double-precision operation order as the Python original, so the arguments are the
ones Pillow received there (values from docs/algorithms.md#numeric-checks C5 in the docstrings).
`per_image_levels` makes every caller's level that float64: a Python number is used as it is
(never through float32), and a float32 (or half) level is read as the shortest decimal it
stands for, so ``torch.tensor(0.45)`` rotates by -4 degrees as ``Image.rotate`` given the
Python float 0.45 does, not by -5 as its float32 value 0.449999988 would.
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
    "shortest_decimal",
    "solarize_threshold",
    "translate_fraction",
]


def shortest_decimal(level: Tensor) -> Tensor:
    """The float64 nearest to the shortest decimal that rounds to each (low-precision) `level`.

    The decimal is the one Python prints for the value (``repr(numpy.float32(0.45))`` is
    '0.45'): of the roundings to 1, 2, ..., 9 significant digits, the first that converts back
    to `level` exactly. float32 needs at most 9 digits; levels are expected in [0, 1] (zero
    and non-finite values are kept as they are).

    Args:
        level: a floating-point tensor narrower than float64.
    """
    wide = level.to(torch.float64)
    result = wide.clone()
    done = (level == 0) | ~torch.isfinite(level)
    exponent = torch.floor(torch.log10(wide.abs().masked_fill(done, 1.0))).to(torch.int64)
    # 10^0 .. 10^22 are exact in float64 (Python computes them exactly; CUDA's pow may not)
    powers = torch.tensor([10.0**k for k in range(23)], dtype=torch.float64, device=level.device)
    for digits in range(1, 10):
        power = digits - 1 - exponent  # round to a multiple of 10^(-power)
        up = powers[power.clamp(0, 22)]
        down = powers[(-power).clamp(0, 22)]
        candidate = torch.round(wide * up / down) * down / up
        found = ~done & (candidate.to(level.dtype) == level)
        result = torch.where(found, candidate, result)
        done = done | found
    return result


def per_image_levels(level: Tensor | float, images: Tensor, columns: int | None = None) -> Tensor:
    """``level`` as float64 on the images' device, shape (N,) or (N, columns).

    A Python number or 0-d tensor (or a (columns,) tensor) is broadcast to every image.
    Python numbers and float64 tensors keep their value; narrower floating-point tensors
    become their `shortest_decimal`, so a level at a rounding boundary of a mapping gives the
    argument the Python original computes from the same decimal level.
    """
    n = images.shape[0]
    if isinstance(level, Tensor) and level.is_floating_point() and level.dtype != torch.float64:
        level = shortest_decimal(level)
    level = torch.as_tensor(level, dtype=torch.float64, device=images.device)
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
