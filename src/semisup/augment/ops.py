"""The CTAugment op table: 19 batched image ops, bit-exact with the Pillow ops they replace.

Reference: google-research/fixmatch ``libml/ctaugment.py`` (docs/algorithms.md#ctaugment). Each op
maps a magnitude ``v`` in [0, 1] to an argument exactly as that code does and then reproduces
the Pillow call bit for bit (see ``_color``, ``_filters`` and ``_geometry`` for how):

=============  ======  =================================================================
op             bins    mapping (``v`` = level of the image)
=============  ======  =================================================================
autocontrast   17      ``blend(img, ImageOps.autocontrast(img), v)``
blur           17      ``blend(img, img.filter(BLUR), v)``
brightness     17      ``ImageEnhance.Brightness`` factor ``0.1 + 1.9 v``
color          17      ``ImageEnhance.Color`` factor ``0.1 + 1.9 v``
contrast       17      ``ImageEnhance.Contrast`` factor ``0.1 + 1.9 v``
cutout         17      side ``s = 1 + int(v * min(W, H) * 0.499)``; random centre ``(cx, cy)``;
                       paint ``[c - s // 2, c + s // 2)`` (clipped) grey 127
equalize       17      ``blend(img, ImageOps.equalize(img), v)``
identity       --      no-op
invert         17      ``blend(img, ImageOps.invert(img), v)``
posterize      8       ``ImageOps.posterize`` with ``bits = 1 + int(7.999 v)``
rescale        17, 6   ``scale = 0.25 v``; crop ``(scale W, scale H, (1 - scale) W,
                       (1 - scale) H)`` (rounded half-to-even by ``Image.crop``), resize back
                       with ``[LANCZOS, BICUBIC, BILINEAR, BOX, HAMMING, NEAREST][int(5.99 m)]``
rotate         17      ``Image.rotate(int(round((2 v - 1) * 45)))``: counter-clockwise, nearest,
                       black fill (``round`` is numpy's half-to-even)
sharpness      17      ``ImageEnhance.Sharpness`` factor ``0.1 + 1.9 v``
shear_x        17      ``AFFINE (1, s, 0, 0, 1, 0)``, ``s = (2 v - 1) * 0.3``, nearest
shear_y        17      ``AFFINE (1, 0, 0, s, 1, 0)``, ``s = (2 v - 1) * 0.3``, nearest
smooth         17      ``blend(img, img.filter(SMOOTH), v)``
solarize       17      ``ImageOps.solarize`` with threshold ``int(255.999 v)`` (invert >= it)
translate_x    17      ``AFFINE (1, 0, d W, 0, 1, 0)``, ``d = (2 v - 1) * 0.3``, nearest
translate_y    17      ``AFFINE (1, 0, 0, 0, 1, d H)``
=============  ======  =================================================================

**Translate: paper versus code.** The paper translates by ``λ`` times the image size,
``λ ∈ [-0.3, 0.3]``; the Google code passes ``d`` to ``AFFINE`` in *pixels*, ``|d| <= 0.3``,
which with nearest resampling never moves a pixel (a no-op). :data:`OPS` follows the paper:
the offset is ``d`` times the width (height), and Pillow's nearest sampling turns it into a
whole-pixel shift of ``-round(d W)`` (halves rounding up), black fill. The code's behaviour
is :func:`translate_x_code` / :func:`translate_y_code`, used by :data:`OPS_CODE_TRANSLATE`;
:func:`op_table` picks one table by name (``"paper"`` or ``"code"``).

**Calling convention.** Every op is ``fn(images, level, *, generator=None) -> images`` with
``images`` uint8 (N, C, H, W), C = 1 or 3, on any device, and ``level`` float (N,) in [0, 1],
one magnitude per image (``rescale``: (N, 2), the scale and the method level; ``identity``
ignores it). The output is a new uint8 tensor of the same shape on the same device. Only
``cutout`` is random; it draws its centres from ``generator`` (which must live on the images'
device; None uses the global generator). All ops are batched tensor code, no per-image loops.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from torch import Tensor

from semisup.augment._color import (
    apply_lut,
    autocontrast_lut,
    blend,
    enhance_brightness,
    enhance_color,
    enhance_contrast,
    equalize_lut,
    grey,
    histograms,
    identity_lut,
    mean_grey_level,
)
from semisup.augment._filters import BLUR, SMOOTH, pillow_filter
from semisup.augment._geometry import (
    affine_fixed,
    crop_and_resize,
    rotation_matrices,
    shift,
)
from semisup.augment._mappings import (
    cutout_size,
    enhance_factor,
    per_image_levels,
    posterize_bits,
    rescale_method_index,
    rotate_degrees,
    shear_factor,
    solarize_threshold,
    translate_fraction,
)

__all__ = [
    "CUTOUT_GREY",
    "OPS",
    "OPS_CODE_TRANSLATE",
    "Op",
    "OpFn",
    "blend",
    "cutout_size",
    "degenerate_blur",
    "degenerate_grey",
    "degenerate_mean",
    "degenerate_smooth",
    "enhance_factor",
    "op_table",
    "posterize_bits",
    "register",
    "rescale_method_index",
    "rotate_degrees",
    "shear_factor",
    "solarize_threshold",
    "translate_fraction",
    "translate_x_code",
    "translate_y_code",
]

CUTOUT_GREY = 127


class OpFn(Protocol):
    """Signature shared by every op."""

    def __call__(
        self, images: Tensor, level: Tensor, *, generator: torch.Generator | None = None
    ) -> Tensor: ...


@dataclass(frozen=True)
class Op:
    """One CTAugment op: the function and the number of bins of each of its parameters."""

    fn: OpFn
    bins: tuple[int, ...]


OPS: dict[str, Op] = {}


def register(*bins: int) -> Callable[[OpFn], OpFn]:
    """Decorator adding ``fn`` to :data:`OPS` under ``fn.__name__`` with the given bins."""

    def add(fn: OpFn) -> OpFn:
        OPS[fn.__name__] = Op(fn, tuple(bins))
        return fn

    return add


# --------------------------------------------------------------------- degenerate images


def degenerate_blur(images: Tensor) -> Tensor:
    """``img.filter(ImageFilter.BLUR)``."""
    return pillow_filter(images, *BLUR)


def degenerate_smooth(images: Tensor) -> Tensor:
    """``img.filter(ImageFilter.SMOOTH)`` (also the degenerate image of Sharpness)."""
    return pillow_filter(images, *SMOOTH)


def degenerate_grey(images: Tensor) -> Tensor:
    """``img.convert("L").convert(img.mode)``, the degenerate image of ``ImageEnhance.Color``."""
    return grey(images).expand_as(images)


def degenerate_mean(images: Tensor) -> Tensor:
    """Constant mean-grey image (N, C, 1, 1) of ``ImageEnhance.Contrast``."""
    n, c = images.shape[:2]
    mean = mean_grey_level(images).to(torch.uint8)
    return mean.view(n, 1, 1, 1).expand(n, c, 1, 1)


# ------------------------------------------------------------------------------- the ops


def _blend_point_op(images: Tensor, lut: Tensor, level: Tensor | float) -> Tensor:
    """``blend(img, img.point(lut), v)`` computed once per table entry, then looked up.

    Blending is per pixel, so blending the identity table with ``lut`` (N, C or 1, 256) and
    applying the result equals blending the two images, at a fraction of the cost.
    """
    identity_table = identity_lut(images.device).expand(images.shape[0], lut.shape[1], 256)
    blended = blend(
        identity_table,
        lut.to(torch.uint8).expand_as(identity_table),
        per_image_levels(level, images),
    )
    return apply_lut(images, blended)


@register(17)
def autocontrast(
    images: Tensor, level: Tensor, *, generator: torch.Generator | None = None
) -> Tensor:
    """``blend(img, ImageOps.autocontrast(img), v)``, per channel (band) stretch to [0, 255]."""
    return _blend_point_op(images, autocontrast_lut(images), level)


@register(17)
def blur(images: Tensor, level: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """``blend(img, img.filter(ImageFilter.BLUR), v)``."""
    return blend(images, degenerate_blur(images), per_image_levels(level, images))


@register(17)
def brightness(
    images: Tensor, level: Tensor, *, generator: torch.Generator | None = None
) -> Tensor:
    """``ImageEnhance.Brightness(img).enhance(0.1 + 1.9 v)``: blend from black."""
    return enhance_brightness(images, enhance_factor(per_image_levels(level, images)))


@register(17)
def color(images: Tensor, level: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """``ImageEnhance.Color(img).enhance(0.1 + 1.9 v)``: blend from the grey image."""
    return enhance_color(images, enhance_factor(per_image_levels(level, images)))


@register(17)
def contrast(images: Tensor, level: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """``ImageEnhance.Contrast(img).enhance(0.1 + 1.9 v)``: blend from the mean grey level."""
    return enhance_contrast(images, enhance_factor(per_image_levels(level, images)))


@register(17)
def cutout(images: Tensor, level: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """Paint a grey (127) square ``[c - s // 2, c + s // 2)`` around a random centre pixel.

    ``s = 1 + int(v * min(W, H) * 0.499)``; the centre ``(cx, cy)`` is uniform over the pixels
    (``cx`` drawn first, then ``cy``, from ``generator``); the square is clipped at the borders.
    Its side is ``2 * (s // 2)``, i.e. ``s`` for even ``s`` (16 at v = 1 on 32 px) and
    ``s - 1`` for odd ``s``, as in the reference code. Grey images get the value 127 (the
    reference writes an RGB tuple, which Pillow rejects for "L" images).
    """
    n, _, height, width = images.shape
    half = cutout_size(per_image_levels(level, images), width, height) // 2
    device = images.device
    centre_x = torch.randint(0, width, (n,), generator=generator, device=device)
    centre_y = torch.randint(0, height, (n,), generator=generator, device=device)
    xs = torch.arange(width, device=device).view(1, 1, width)
    ys = torch.arange(height, device=device).view(1, height, 1)
    inside_x = (xs >= (centre_x - half).view(n, 1, 1)) & (xs < (centre_x + half).view(n, 1, 1))
    inside_y = (ys >= (centre_y - half).view(n, 1, 1)) & (ys < (centre_y + half).view(n, 1, 1))
    return images.masked_fill((inside_x & inside_y).unsqueeze(1), CUTOUT_GREY)


@register(17)
def equalize(images: Tensor, level: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """``blend(img, ImageOps.equalize(img), v)``, per channel histogram equalisation."""
    return _blend_point_op(images, equalize_lut(histograms(images)), level)


@register()
def identity(images: Tensor, level: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """No-op (returns a copy); ``level`` is ignored."""
    return images.clone()


@register(17)
def invert(images: Tensor, level: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """``blend(img, ImageOps.invert(img), v)`` with ``invert(x) = 255 - x``."""
    return _blend_point_op(images, 255 - identity_lut(images.device), level)


@register(8)
def posterize(images: Tensor, level: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """``ImageOps.posterize(img, 1 + int(7.999 v))``: keep the top ``bits`` bits."""
    bits = posterize_bits(per_image_levels(level, images))
    mask = (256 - (1 << (8 - bits))).to(torch.uint8)
    return images & mask.view(-1, 1, 1, 1)


@register(17, 6)
def rescale(images: Tensor, level: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """Crop a centred box (``scale = 0.25 v``) and resize it back (fixmatch repo version).

    ``level[:, 0]`` is the scale level, ``level[:, 1]`` picks the filter via ``int(5.99 m)``.
    The box ``(scale W, scale H, (1 - scale) W, (1 - scale) H)`` is rounded half-to-even, as
    ``Image.crop`` does.
    """
    levels = per_image_levels(level, images, columns=2)
    height, width = images.shape[-2:]
    scale = levels[:, 0] * 0.25
    box = torch.stack(
        [scale * width, scale * height, (1 - scale) * width, (1 - scale) * height], dim=1
    )
    return crop_and_resize(
        images, torch.round(box).to(torch.int64), rescale_method_index(levels[:, 1])
    )


@register(17)
def rotate(images: Tensor, level: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """``Image.rotate(int(round((2 v - 1) * 45)))``: counter-clockwise about the centre."""
    height, width = images.shape[-2:]
    degrees = rotate_degrees(per_image_levels(level, images))
    return affine_fixed(images, rotation_matrices(degrees, width, height))


@register(17)
def sharpness(images: Tensor, level: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """``ImageEnhance.Sharpness(img).enhance(0.1 + 1.9 v)``: blend from the SMOOTH image."""
    factor = enhance_factor(per_image_levels(level, images))
    return blend(degenerate_smooth(images), images, factor)


def _shear(images: Tensor, level: Tensor, axis: int) -> Tensor:
    """AFFINE with ``s = (2 v - 1) * 0.3`` at position 1 (x) or 3 (y) of the identity."""
    s = shear_factor(per_image_levels(level, images))
    matrix = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], dtype=torch.float64, device=s.device)
    matrix = matrix.repeat(s.shape[0], 1)
    matrix[:, axis] = s
    return affine_fixed(images, matrix)


@register(17)
def shear_x(images: Tensor, level: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """``img.transform(size, AFFINE, (1, s, 0, 0, 1, 0))``, ``s = (2 v - 1) * 0.3``, not centred."""
    return _shear(images, level, axis=1)


@register(17)
def shear_y(images: Tensor, level: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """``img.transform(size, AFFINE, (1, 0, 0, s, 1, 0))``, ``s = (2 v - 1) * 0.3``, not centred."""
    return _shear(images, level, axis=3)


@register(17)
def smooth(images: Tensor, level: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """``blend(img, img.filter(ImageFilter.SMOOTH), v)``."""
    return blend(images, degenerate_smooth(images), per_image_levels(level, images))


@register(17)
def solarize(images: Tensor, level: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """``ImageOps.solarize(img, int(255.999 v))``: invert the pixels >= the threshold."""
    threshold = (
        solarize_threshold(per_image_levels(level, images)).to(torch.uint8).view(-1, 1, 1, 1)
    )
    flip = (images >= threshold).to(torch.uint8).mul_(255)
    return images ^ flip  # 255 - x == x XOR 255 for uint8


@register(17)
def translate_x(
    images: Tensor, level: Tensor, *, generator: torch.Generator | None = None
) -> Tensor:
    """Paper translate: ``AFFINE (1, 0, d W, 0, 1, 0)``, ``d = (2 v - 1) * 0.3``, black fill."""
    offset = translate_fraction(per_image_levels(level, images)) * images.shape[-1]
    return shift(images, offset, dim=-1)


@register(17)
def translate_y(
    images: Tensor, level: Tensor, *, generator: torch.Generator | None = None
) -> Tensor:
    """Paper translate: ``AFFINE (1, 0, 0, 0, 1, d H)``, ``d = (2 v - 1) * 0.3``, black fill."""
    offset = translate_fraction(per_image_levels(level, images)) * images.shape[-2]
    return shift(images, offset, dim=-2)


def translate_x_code(
    images: Tensor, level: Tensor, *, generator: torch.Generator | None = None
) -> Tensor:
    """Google-code translate: ``AFFINE (1, 0, d, 0, 1, 0)`` with ``d`` in pixels.

    ``|d| <= 0.3 < 0.5``, so nearest sampling reads every pixel from where it is: the result
    is always a copy of the input (verified against Pillow in the tests).
    """
    per_image_levels(level, images)  # validate the shape like every other op
    return images.clone()


def translate_y_code(
    images: Tensor, level: Tensor, *, generator: torch.Generator | None = None
) -> Tensor:
    """Google-code translate along y: ``AFFINE (1, 0, 0, 0, 1, d)``, a copy (see x)."""
    per_image_levels(level, images)
    return images.clone()


#: :data:`OPS` with ``translate_x``/``translate_y`` replaced by the code's pixel-offset no-ops.
OPS_CODE_TRANSLATE: dict[str, Op] = {
    **OPS,
    "translate_x": Op(translate_x_code, OPS["translate_x"].bins),
    "translate_y": Op(translate_y_code, OPS["translate_y"].bins),
}


def op_table(translate: Literal["paper", "code"] = "paper") -> dict[str, Op]:
    """The op table for a translate convention: ``"paper"`` (:data:`OPS`) or ``"code"``."""
    if translate == "paper":
        return OPS
    if translate == "code":
        return OPS_CODE_TRANSLATE
    raise ValueError(f"translate must be 'paper' or 'code', got {translate!r}")
