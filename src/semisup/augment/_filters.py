"""Pillow's built-in 3x3 / 5x5 convolution filters (``ImageFilter.BLUR``, ``SMOOTH``), batched.

``Image.filter(kernel)`` (``libImaging/Filter.c``) divides the integer kernel weights ``w`` by
the kernel's scale ``d`` in float32 and, for every pixel away from the border, truncates the
float32 sum ``0.5 + sum(p * w / d)`` after clipping it to [0, 255] (the kernel is applied
flipped, which does not matter for the symmetric built-in kernels). The outer ``size // 2``
rows and columns are copied unchanged, and an image smaller than the kernel is returned as is.

With ``S = sum(p * w)`` (an exact integer) the float32 sum is ``S / d + 1/2 + e`` with a
rounding error ``|e| < 1e-4`` (8-bit pixels, a handful of float32 additions below 2^8). The
truncation equals ``floor((2 S + d) / (2 d))`` whenever that error cannot cross an integer:

* ``d`` a power of two (BLUR, ``d = 16``): every weight ``w / d`` and every partial sum is
  exactly representable, so ``e = 0``;
* ``d`` odd (SMOOTH, ``d = 13``): ``S / d + 1/2`` is never closer than ``1 / (2 d)`` to an
  integer, far more than ``|e|``.

:func:`pillow_filter` therefore computes ``S`` in integers and applies that formula, which is
bit-exact with Pillow (checked against Pillow on random and real images in the tests) and much
cheaper than emulating the float32 sums.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["BLUR", "SMOOTH", "Kernel", "pillow_filter"]

Kernel = tuple[tuple[int, ...], ...]

#: ``ImageFilter.BLUR``: a 5x5 ring of ones, scale 16.
BLUR: tuple[Kernel, int] = (
    (
        (1, 1, 1, 1, 1),
        (1, 0, 0, 0, 1),
        (1, 0, 0, 0, 1),
        (1, 0, 0, 0, 1),
        (1, 1, 1, 1, 1),
    ),
    16,
)

#: ``ImageFilter.SMOOTH``: 3x3 ones with 5 in the centre, scale 13.
SMOOTH: tuple[Kernel, int] = (((1, 1, 1), (1, 5, 1), (1, 1, 1)), 13)


def _check_exactness(kernel: Kernel, scale: int) -> None:
    """Raise unless the integer formula is provably equal to Pillow's float32 sum."""
    power_of_two = scale & (scale - 1) == 0
    if scale <= 0 or not (power_of_two or scale % 2 == 1):
        raise ValueError(f"kernel scale must be odd or a power of two, got {scale}")
    if any(w < 0 for row in kernel for w in row) or sum(map(sum, kernel)) != scale:
        raise ValueError("kernel weights must be non-negative and sum to the scale")


def _row_sum(pixels: Tensor, row: tuple[int, ...]) -> Tensor | None:
    """``sum_j row[j] * pixels[..., x - r + j]`` over every column x away from the border."""
    width = pixels.shape[-1]
    margin = len(row) - 1
    total = None
    for column, weight in enumerate(row):
        if weight == 0:
            continue
        term = pixels[..., column : width - margin + column]
        if total is None:
            total = term * weight
        elif weight == 1:
            total.add_(term)
        else:
            total.add_(term * weight)
    return total


def pillow_filter(images: Tensor, kernel: Kernel, scale: int) -> Tensor:
    """Apply a Pillow ``ImageFilter.Kernel`` (offset 0) to a batch, bit-exactly.

    Args:
        images: uint8 images (N, C, H, W).
        kernel: K rows of K non-negative integer weights (K = 3 or 5) summing to ``scale``,
            as written in ``ImageFilter``.
        scale: the kernel's divisor, odd or a power of two.

    Returns:
        uint8 images (N, C, H, W).
    """
    _check_exactness(kernel, scale)
    size = len(kernel)
    radius = size // 2
    height, width = images.shape[-2:]
    out = images.clone()
    if height < size or width < size:
        return out
    # S <= 255 * scale: int16 holds it for the built-in kernels
    dtype = torch.int16 if 255 * scale < 2**15 else torch.int32
    pixels = images.to(dtype)
    row_sums = {row: _row_sum(pixels, row) for row in set(kernel)}
    total = torch.zeros(
        (*images.shape[:2], height - 2 * radius, width - 2 * radius),
        dtype=dtype,
        device=images.device,
    )
    for index, row in enumerate(kernel):
        sums = row_sums[row]
        if sums is not None:  # kernel row `index` meets image row y + radius - index
            total.add_(sums[..., 2 * radius - index : height - index, :])
    out[..., radius : height - radius, radius : width - radius] = _round_half_up(total, scale)
    return out


def _round_half_up(sums: Tensor, scale: int) -> Tensor:
    """``floor((2 S + d) / (2 d))`` for integer sums ``S >= 0``, as float32 for uint8 storage.

    Computed as ``(S + d / 2 + 1/4) * (1 / d)``, which lies at least ``1 / (4 d)`` away from
    an integer, so float32 rounding (also of ``1 / d``) cannot change the truncation that
    happens when the result is stored as uint8.
    """
    return sums.to(torch.float32).add_(scale / 2 + 0.25).mul_(1.0 / scale)
