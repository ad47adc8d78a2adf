"""Pixel-value building blocks of the CTAugment ops, batched and bit-exact with Pillow.

Every function takes uint8 images of shape (N, C, H, W), C = 1 ("L") or 3 ("RGB"), on any
device, and works per image (and per channel where Pillow works per band). Pillow's C code is
emulated step by step, in the same precision and order, so the results equal Pillow's bit for
bit:

* ``Image.blend`` (``libImaging/Blend.c``) computes ``in1 + alpha * (in2 - in1)`` in float32
  with a float32 ``alpha`` and truncates (clipping first when ``alpha`` is outside [0, 1]).
* ``Image.convert("L")`` (``libImaging/Convert.c``) is the fixed-point ITU-R 601-2 luma
  ``(19595 R + 38470 G + 7471 B + 0x8000) >> 16``.
* ``ImageOps.autocontrast`` / ``equalize`` build a 256-entry lookup table per band in Python
  (double / integer arithmetic) from the band's histogram (for autocontrast only its lowest and
  highest non-empty bins matter, i.e. the band's minimum and maximum); ``Image.point`` clips
  the table entries to [0, 255].

Point ops blended with the original (``blend(img, img.point(lut), v)``) can be computed as one
blended table per image and channel, since blending is per pixel; the ops module does that.
"""

from __future__ import annotations

import torch
from torch import Tensor

from semisup.augment._mappings import per_image_levels

__all__ = [
    "apply_lut",
    "autocontrast_lut",
    "blend",
    "enhance_brightness",
    "enhance_color",
    "enhance_contrast",
    "equalize_lut",
    "grey",
    "histograms",
    "identity_lut",
    "mean_grey_level",
]

_LUMA_WEIGHTS = (19595, 38470, 7471)
_LUMA_ROUNDING = 0x8000


def blend(a: Tensor, b: Tensor, weight: Tensor | float) -> Tensor:
    """Pillow's ``Image.blend(a, b, weight)``, one weight per image.

    ``out = a + weight * (b - a)`` evaluated in float32 (``weight`` is rounded to float32,
    as Pillow parses it with the ``"f"`` format), clipped to [0, 255] and truncated. For
    ``weight`` in [0, 1] this interpolates (weight 0 gives ``a``, weight 1 gives ``b``); outside
    it extrapolates, which is how ``ImageEnhance`` factors above 1 work.

    Args:
        a: uint8 tensor (N, ...), e.g. images (N, C, H, W) or lookup tables (N, C, 256).
        b: uint8 tensor broadcastable with ``a`` (e.g. a per-image constant (N, C, 1, 1)).
        weight: blend weight per image, shape (N,), or one number for all.

    Returns:
        uint8 tensor of the broadcast shape of ``a`` and ``b``.
    """
    alpha = per_image_levels(weight, a).to(torch.float32)
    alpha = alpha.view(-1, *([1] * (a.dim() - 1)))
    first = a.to(torch.float32)
    mixed = b.to(torch.float32) - first  # exact: small integers
    # Separate float32 multiply and add (no fused multiply-add), as in Blend.c.
    mixed.mul_(alpha).add_(first).clamp_(0.0, 255.0)
    return mixed.to(torch.uint8)  # float -> uint8 truncates


def grey(images: Tensor) -> Tensor:
    """Pillow's ``convert("L")``: fixed-point ITU-R 601-2 luma, shape (N, 1, H, W), uint8.

    Grey input (C = 1) is returned as is.
    """
    if images.shape[1] == 1:
        return images
    luma = torch.full_like(images[:, :1], _LUMA_ROUNDING, dtype=torch.int32)
    for weight, channel in zip(_LUMA_WEIGHTS, images.split(1, dim=1), strict=True):
        luma.add_(channel.to(torch.int32).mul_(weight))
    return luma.bitwise_right_shift_(16).to(torch.uint8)


def _flat_offsets(n: int, c: int, stride: int, device: torch.device) -> Tensor:
    """int32 (N * C, 1) offsets ``k * stride`` of each (image, channel) row in a flat table."""
    return (torch.arange(n * c, device=device, dtype=torch.int32) * stride).view(n * c, 1)


def histograms(images: Tensor) -> Tensor:
    """Per-image, per-channel 256-bin histograms, int64 of shape (N, C, 256)."""
    n, c = images.shape[:2]
    index = images.reshape(n * c, images.shape[-2] * images.shape[-1]).to(torch.int32)
    index.add_(_flat_offsets(n, c, 256, images.device))
    return torch.bincount(index.reshape(-1), minlength=n * c * 256).view(n, c, 256)


def mean_grey_level(images: Tensor) -> Tensor:
    """``int(ImageStat.Stat(image.convert("L")).mean[0] + 0.5)`` per image, int64 (N,).

    This is the grey level of ``ImageEnhance.Contrast``'s degenerate image.
    """
    luma = grey(images).flatten(1)
    total = luma.to(torch.int64).sum(dim=1).to(torch.float64)  # exact integer sums
    # correctly rounded, like Python's int / int (a scalar divisor may become a reciprocal)
    mean = total.div(torch.full_like(total, float(luma.shape[1])))
    return torch.floor(mean + 0.5).to(torch.int64)


def autocontrast_lut(images: Tensor) -> Tensor:
    """``ImageOps.autocontrast`` (cutoff 0) lookup tables, one per image and channel.

    With ``lo``/``hi`` the lowest/highest value of a channel, entry ``i`` is
    ``int(i * scale + offset)`` clipped to [0, 255], where ``scale = 255 / (hi - lo)`` and
    ``offset = -lo * scale`` (double precision); ``hi <= lo`` gives the identity table.

    Args:
        images: uint8 images (N, C, H, W).

    Returns:
        int64 tables of shape (N, C, 256).
    """
    flat = images.flatten(2)
    low = flat.amin(dim=-1, keepdim=True).to(torch.float64)
    high = flat.amax(dim=-1, keepdim=True).to(torch.float64)
    constant = high <= low
    # true division (``255.0 / tensor`` would multiply by a reciprocal, which can differ);
    # a constant channel gets scale 1 and offset 0, i.e. the identity table
    scale = torch.where(constant, 1.0, torch.full_like(high, 255.0).div_(high - low))
    offset = torch.where(constant, 0.0, -low * scale)
    levels = torch.arange(256, device=images.device, dtype=torch.float64)
    return (levels * scale).add_(offset).floor_().clamp_(0, 255).to(torch.int64)


def equalize_lut(hist: Tensor) -> Tensor:
    """``ImageOps.equalize`` lookup tables from histograms (..., 256).

    ``step = (count - count_of_last_non_empty_bin) // 255``; entry ``i`` is
    ``(step // 2 + pixels_below_i) // step``, clipped to 255 by ``Image.point``. One non-empty
    bin or ``step == 0`` gives the identity table.

    Returns:
        int64 tables of shape (..., 256).
    """
    present = (hist > 0).to(torch.uint8)
    high = 255 - present.flip(-1).argmax(dim=-1)
    last_count = hist.gather(-1, high.unsqueeze(-1))
    occupied = present.sum(dim=-1, keepdim=True)
    step = (hist.sum(dim=-1, keepdim=True) - last_count) // 255
    below = hist.cumsum(dim=-1).sub_(hist)
    # all terms are non-negative integers far below 2^53: float64 floor division is exact
    numerator = below.add_(step // 2).to(torch.float64)
    lut = numerator.div_(step.clamp(min=1).to(torch.float64)).floor_().clamp_(max=255)
    keep = ((occupied > 1) & (step > 0)).to(torch.int64)  # else the identity table
    identity = torch.arange(256, device=hist.device)
    return lut.to(torch.int64).mul_(keep).add_(identity * (1 - keep))


def enhance_brightness(images: Tensor, factor: Tensor) -> Tensor:
    """``ImageEnhance.Brightness(img).enhance(factor)`` per image: blend from black."""
    identity_table = identity_lut(images.device).expand(images.shape[0], 1, 256)
    return apply_lut(images, blend(torch.zeros_like(identity_table), identity_table, factor))


def enhance_color(images: Tensor, factor: Tensor) -> Tensor:
    """``ImageEnhance.Color(img).enhance(factor)`` per image: blend from the grey image."""
    return blend(grey(images), images, factor)  # grey (N, 1, H, W) broadcasts over RGB


def enhance_contrast(images: Tensor, factor: Tensor) -> Tensor:
    """``ImageEnhance.Contrast(img).enhance(factor)`` per image: blend from the mean grey."""
    identity_table = identity_lut(images.device).expand(images.shape[0], 1, 256)
    mean = mean_grey_level(images).to(torch.uint8).view(-1, 1, 1).expand_as(identity_table)
    return apply_lut(images, blend(mean, identity_table, factor))


def identity_lut(device: torch.device) -> Tensor:
    """The identity table ``0..255``, uint8 of shape (1, 1, 256)."""
    return torch.arange(256, device=device).to(torch.uint8).view(1, 1, 256)


def apply_lut(images: Tensor, lut: Tensor) -> Tensor:
    """``Image.point`` with one table per image and channel: ``out = lut[n, c, images]``.

    Args:
        images: uint8 images (N, C, H, W).
        lut: integer tables (N, C, 256) or (N, 1, 256) (shared by the channels), entries in
            [0, 255].

    Returns:
        uint8 images (N, C, H, W).
    """
    n, c = images.shape[:2]
    table = lut.to(torch.uint8).expand(n, c, 256).reshape(-1)
    index = images.reshape(n * c, images.shape[-2] * images.shape[-1]).to(torch.int32)
    index.add_(_flat_offsets(n, c, 256, images.device))
    return table.index_select(0, index.reshape(-1)).view(images.shape)
