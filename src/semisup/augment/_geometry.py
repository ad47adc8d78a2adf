"""Geometric building blocks of the CTAugment ops, batched and bit-exact with Pillow.

Nearest-neighbour affine transforms (``Image.transform(size, AFFINE, a)``, ``Image.rotate``)
follow ``libImaging/Geometry.c``, which has two engines for 8-bit images:

* when ``a[1]`` or ``a[3]`` is non-zero (rotate, shear), ``affine_fixed``: the matrix is rounded
  to 16.16 fixed point, ``A = floor(a * 65536 + 0.5)``, the offsets absorb the half-pixel
  centre, ``A2 = fix(a2 + a0/2 + a1/2)``, and output pixel (x, y) reads input
  ``((A2 + x A0 + y A1) >> 16, (A5 + x A3 + y A4) >> 16)`` or is black when that is outside
  the image. :func:`affine_fixed` does the same integer arithmetic. (Pillow switches to a
  double-precision loop only when a transformed corner leaves [-32768, 32768], i.e. never for
  images of realistic size.)
* when ``a[1] == a[3] == 0`` (translate, nearest resize), ``ImagingScaleAffine``: the source
  column of output column x is ``int(p_x)`` with ``p_0 = a2 + a0/2`` and ``p_{x+1} = p_x + a0``
  accumulated in double precision (negative gives -1, i.e. outside). :func:`scale_positions`
  repeats that accumulation.

``Image.resize`` with a resampling filter (``libImaging/Resample.c``) is separable: per axis,
double-precision filter weights normalised to sum 1 and rounded to 22-bit fixed point, a
horizontal pass, clipping to uint8, then a vertical pass. :func:`crop_and_resize` turns every
pass into an integer matrix (built on the host in double precision, cached) and applies it as
a float64 matrix product, which is exact because every product and sum is an integer below
2^53.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = [
    "RESCALE_METHODS",
    "affine_fixed",
    "crop_and_resize",
    "rotation_matrices",
    "scale_positions",
    "shift",
]

_FIXED_SCALE = 65536.0
_PRECISION_BITS = 22  # Resample.c: 32 - 8 - 2
_ONE = float(1 << _PRECISION_BITS)
_HALF = float(1 << (_PRECISION_BITS - 1))
_INVERSE_ONE = 1.0 / _ONE  # a power of two: multiplying by it is exact


def _fix(values: Tensor) -> Tensor:
    """Geometry.c's ``FIX``: ``floor(v * 65536 + 0.5)`` as a C ``int`` (int32; float64 input)."""
    return torch.floor(values * _FIXED_SCALE + 0.5).to(torch.int32)


def affine_fixed(images: Tensor, matrix: Tensor) -> Tensor:
    """``Image.transform(size, AFFINE, matrix, NEAREST)`` per image, Pillow's fixed-point engine.

    Pillow uses this engine whenever ``matrix[1]`` or ``matrix[3]`` is non-zero; for the
    identity matrix it gives the identity as well. Pixels mapped from outside are black.

    Args:
        images: uint8 images (N, C, H, W).
        matrix: float64 (N, 6), ``(a0, a1, a2, a3, a4, a5)`` mapping output (x, y) to input
            ``(a0 x + a1 y + a2, a3 x + a4 y + a5)`` at pixel centres.

    Returns:
        uint8 images (N, C, H, W).
    """
    n, c, height, width = images.shape
    a0, a1, a2, a3, a4, a5 = matrix.to(torch.float64).unbind(dim=1)
    x_start = _fix(a2 + a0 * 0.5 + a1 * 0.5)  # Geometry.c adds in this order
    y_start = _fix(a5 + a3 * 0.5 + a4 * 0.5)
    steps = [_fix(a).view(n, 1, 1) for a in (a0, a1, a3, a4)]
    ys = torch.arange(height, device=images.device, dtype=torch.int32).view(1, height, 1)
    xs = torch.arange(width, device=images.device, dtype=torch.int32).view(1, 1, width)
    # 16.16 fixed point in C ints; ``>> 16`` floors like the C arithmetic shift
    source_x = (xs * steps[0] + ys * steps[1]).add_(x_start.view(n, 1, 1)).bitwise_right_shift_(16)
    source_y = (xs * steps[2] + ys * steps[3]).add_(y_start.view(n, 1, 1)).bitwise_right_shift_(16)
    return _gather_pixels(images, source_x, source_y)


def _gather_pixels(images: Tensor, source_x: Tensor, source_y: Tensor) -> Tensor:
    """``out[n, :, y, x] = images[n, :, source_y, source_x]``, black where outside the image."""
    n, c, height, width = images.shape
    inside = (source_x >= 0) & (source_x < width) & (source_y >= 0) & (source_y < height)
    # pixels outside read an extra black pixel appended at flat index H * W
    flat = torch.where(inside, source_y * width + source_x, height * width).to(torch.int64)
    padded = torch.cat([images.flatten(2), images.new_zeros(n, c, 1)], dim=2)
    gathered = padded.gather(2, flat.view(n, 1, height * width).expand(n, c, height * width))
    return gathered.view(n, c, height, width)


def scale_positions(start: Tensor, step: float, size: int) -> Tensor:
    """Source indices of ``ImagingScaleAffine`` along one axis, -1 where outside on the left.

    Args:
        start: float64 (N,), the matrix offset (``a2`` or ``a5``).
        step: the matrix scale on that axis (``a0`` or ``a4``).
        size: number of output pixels.

    Returns:
        int64 (N, size): ``int(p_i)`` for ``p_0 = start + step / 2``, ``p_{i+1} = p_i + step``,
        or -1 where ``p_i < 0``. Callers treat indices >= the input size as outside too.
    """
    position = start.to(torch.float64) + step * 0.5
    positions = []
    for _ in range(size):  # sequential double-precision accumulation, as in Geometry.c
        positions.append(position)
        position = position + step
    stacked = torch.stack(positions, dim=-1)
    return torch.where(stacked < 0, -1.0, stacked.trunc()).to(torch.int64)


def shift(images: Tensor, offset: Tensor, dim: int) -> Tensor:
    """``Image.transform(size, AFFINE, ...)`` for a pure translation along one axis.

    Output pixel i along ``dim`` (-1: x, -2: y) reads input ``int(offset + 0.5 + i)`` (black
    outside), which moves the content by ``-round(offset)`` pixels (halves rounding up).

    Args:
        images: uint8 images (N, C, H, W).
        offset: float64 (N,), ``a2`` for x or ``a5`` for y, in pixels.
        dim: -1 (x) or -2 (y).

    Returns:
        uint8 images (N, C, H, W).
    """
    size = images.shape[dim]
    source = scale_positions(offset, 1.0, size)
    inside = (source >= 0) & (source < size)
    shape = [images.shape[0], 1, 1, 1]
    shape[dim] = size
    source = source.clamp(0, size - 1).view(shape)
    inside = inside.view(shape)
    return images.gather(dim, source.expand_as(images)) * inside


@functools.lru_cache(maxsize=64)
def _rotation_table(width: int, height: int) -> Tensor:
    """Float64 (91, 6) affine matrices of ``Image.rotate(angle)`` for angles -45..45 degrees.

    Built exactly as ``Image.rotate`` does it (angle taken modulo 360, cosine/sine rounded to
    15 decimals, rotation about the image centre). Angle 0 (a plain copy in Pillow) is the
    identity.
    """
    centre_x, centre_y = width / 2, height / 2
    rows = []
    for degrees in range(-45, 46):
        angle = degrees % 360.0
        if angle == 0:
            rows.append((1.0, 0.0, 0.0, 0.0, 1.0, 0.0))
            continue
        radians = -math.radians(angle)
        cos, sin = round(math.cos(radians), 15), round(math.sin(radians), 15)
        neg_sin = round(-math.sin(radians), 15)
        x_offset = cos * -centre_x + sin * -centre_y + 0.0 + centre_x
        y_offset = neg_sin * -centre_x + cos * -centre_y + 0.0 + centre_y
        rows.append((cos, sin, x_offset, neg_sin, cos, y_offset))
    return torch.tensor(rows, dtype=torch.float64)


def rotation_matrices(degrees: Tensor, width: int, height: int) -> Tensor:
    """Affine matrices (N, 6) of ``Image.rotate`` for integer angles in [-45, 45] (int64 (N,))."""
    table = _rotation_table(width, height).to(degrees.device)
    return table[degrees + 45]


def _float32(value: float) -> float:
    """Round a double to float32 and back (a C ``float`` literal used in double arithmetic)."""
    return struct.unpack("f", struct.pack("f", value))[0]


_HAMMING_A, _HAMMING_B = _float32(0.54), _float32(0.46)


def _box(x: float) -> float:
    return 1.0 if -0.5 < x <= 0.5 else 0.0


def _triangle(x: float) -> float:
    x = abs(x)
    return 1.0 - x if x < 1.0 else 0.0


def _hamming(x: float) -> float:
    x = abs(x)
    if x == 0.0:
        return 1.0
    if x >= 1.0:
        return 0.0
    x = x * math.pi
    return math.sin(x) / x * (_HAMMING_A + _HAMMING_B * math.cos(x))


def _bicubic(x: float) -> float:
    a = -0.5
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def _sinc(x: float) -> float:
    if x == 0.0:
        return 1.0
    x = x * math.pi
    return math.sin(x) / x


def _lanczos(x: float) -> float:
    return _sinc(x) * _sinc(x / 3) if -3.0 <= x < 3.0 else 0.0


_Filter = tuple[Callable[[float], float], float]
_NEAREST = None
#: Resampling filters in the order of the fixmatch ``rescale`` op:
#: ANTIALIAS (= LANCZOS), BICUBIC, BILINEAR, BOX, HAMMING, NEAREST.
RESCALE_METHODS: tuple[_Filter | None, ...] = (
    (_lanczos, 3.0),
    (_bicubic, 2.0),
    (_triangle, 1.0),
    (_box, 0.5),
    (_hamming, 1.0),
    _NEAREST,
)


def _filter_weights(crop: int, size: int, method: _Filter) -> list[list[tuple[int, int]]]:
    """Resample.c's ``precompute_coeffs`` + ``normalize_coeffs_8bpc`` for one axis.

    Returns, per output pixel, ``(source index, 22-bit fixed-point weight)`` pairs.
    """
    function, support = method
    scale = filter_scale = crop / size
    filter_scale = max(filter_scale, 1.0)
    support = support * filter_scale
    inverse = 1.0 / filter_scale
    rows = []
    for out in range(size):
        centre = 0.0 + (out + 0.5) * scale
        low = max(int(centre - support + 0.5), 0)
        count = min(int(centre + support + 0.5), crop) - low
        weights = [function((i + low - centre + 0.5) * inverse) for i in range(count)]
        total = 0.0
        for w in weights:
            total += w
        if total != 0.0:
            weights = [w / total for w in weights]
        rows.append([(low + i, _to_fixed(w)) for i, w in enumerate(weights)])
    return rows


def _to_fixed(weight: float) -> int:
    """Round a weight to 22-bit fixed point away from zero at halves (C ``int`` truncation)."""
    return int(weight * _ONE - 0.5) if weight < 0 else int(weight * _ONE + 0.5)


def _nearest_weights(crop: int, size: int) -> list[list[tuple[int, int]]]:
    """Nearest resize (``ImagingScaleAffine`` with step ``crop / size``) as one-hot rows."""
    step = crop / size
    position = 0.0 + step * 0.5
    rows = []
    for _ in range(size):
        source = -1 if position < 0 else int(position)
        rows.append([(source, 1 << _PRECISION_BITS)] if 0 <= source < crop else [])
        position += step
    return rows


@functools.lru_cache(maxsize=1024)
def _axis_matrix(size: int, start: int, stop: int, method: int) -> Tensor:
    """Float64 (size, size) fixed-point matrix: crop ``[start, stop)`` and resize to ``size``."""
    crop = stop - start
    matrix = torch.zeros(size, size, dtype=torch.float64)
    if crop == size:  # Pillow does not resample an axis whose size is unchanged
        rows = [[(i, 1 << _PRECISION_BITS)] for i in range(size)]
    elif RESCALE_METHODS[method] is None:
        rows = _nearest_weights(crop, size)
    else:
        rows = _filter_weights(crop, size, RESCALE_METHODS[method])
    for out, row in enumerate(rows):
        for source, weight in row:
            matrix[out, start + source] = weight
    return matrix


def _axis_matrices(start: Tensor, stop: Tensor, method: Tensor, size: int) -> Tensor:
    """Per-image (N, size, size) matrices, built once per distinct (start, stop, method)."""
    methods = len(RESCALE_METHODS)
    keys = (start * (size + 1) + stop) * methods + method
    distinct, inverse = torch.unique(keys, return_inverse=True)
    table = torch.stack(
        [
            _axis_matrix(
                size, key // methods // (size + 1), key // methods % (size + 1), key % methods
            )
            for key in distinct.tolist()
        ]
    )
    return table.to(start.device)[inverse]


def _round_to_uint8_range(values: Tensor) -> Tensor:
    """Resample.c's ``clip8`` in place: ``(v + 2^21) >> 22`` clipped to [0, 255] (exact)."""
    return values.add_(_HALF).mul_(_INVERSE_ONE).floor_().clamp_(0.0, 255.0)


def crop_and_resize(images: Tensor, box: Tensor, method: Tensor) -> Tensor:
    """``image.crop(box).resize(image.size, RESCALE_METHODS[method])`` per image.

    Args:
        images: uint8 images (N, C, H, W).
        box: int64 (N, 4) integer crop boxes ``(left, upper, right, lower)`` inside the image.
        method: int64 (N,) index into :data:`RESCALE_METHODS`.

    Returns:
        uint8 images (N, C, H, W).
    """
    n, c, height, width = images.shape
    if n == 0:
        return images.clone()
    left, upper, right, lower = box.unbind(dim=1)
    horizontal = _axis_matrices(left, right, method, width)
    vertical = _axis_matrices(upper, lower, method, height)
    # (N, H, C, W) layout: rows of all channels for the horizontal pass, and per image one
    # (H, C * W) matrix for the vertical pass, without copying in between
    pixels = images.permute(0, 2, 1, 3).to(torch.float64, memory_format=torch.contiguous_format)
    rows = _round_to_uint8_range(torch.bmm(pixels.view(n, height * c, width), horizontal.mT))
    resized = _round_to_uint8_range(torch.bmm(vertical, rows.view(n, height, c * width)))
    return resized.view(n, height, c, width).permute(0, 2, 1, 3).to(torch.uint8).contiguous()
