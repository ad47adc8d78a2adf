"""Random erasing whose every draw is a hash of (seed, copy, image): RealMix's Extend copies.

RealMix (docs/algorithms.md#realmix-extend, `scripts/make_aug_copy.py` +
`third_party/random_eraser_tf.py`) writes N augmented copies of the unlabeled set to disk. Here
copy c of image i is recomputed whenever it is drawn: its random numbers come from a
counter-based hash of (seed, c, i, k) (k numbers the draws), not from a generator, so the same
copy is identical in every epoch, on every device and after a resume, and nothing is stored
(50 copies of CIFAR-10 would be 7.5 GB).

The eraser, per image (Zhong et al.'s random erasing as in the RealMix code, but drawn per image
as intended; the code's TF wrapper drew once for the whole data set):
    with probability p: area s ~ U[0.02, 0.4]·H·W, aspect r ~ U[0.3, 1/0.3],
    w = int(√(s/r)), h = int(√(s·r)), top-left corner uniform; all four re-drawn until the box
    fits (here: the first of `attempts` candidate boxes that fits; none fitting, no erasing);
    the box is filled with one value c ~ U[0, 255] on every channel (uint8: int(c)).
"""

from __future__ import annotations

import torch
from torch import Tensor

_MASK32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9  # 2^32 / golden ratio, the usual stream offset


def _mul32(x: Tensor, constant: int) -> Tensor:
    """(x · constant) mod 2^32 for int64 x in [0, 2^32), without int64 overflow."""
    low = x * (constant & 0xFFFF)
    high = ((x * (constant >> 16)) & 0xFFFF) << 16
    return (low + high) & _MASK32


def _mix32(h: Tensor) -> Tensor:
    """MurmurHash3's 32-bit finaliser: a bijection on [0, 2^32) with full avalanche."""
    h = h ^ (h >> 16)
    h = _mul32(h, 0x85EBCA6B)
    h = h ^ (h >> 13)
    h = _mul32(h, 0xC2B2AE35)
    return h ^ (h >> 16)


def hash_uniforms(seed: int, keys: list[Tensor], count: int) -> Tensor:
    """`count` numbers in [0, 1) per row, a pure function of (seed, keys of the row, k).

    Args:
        seed: the stream's seed.
        keys: int64 tensors of equal shape (N,), e.g. copy and image indices (each < 2^32).
        count: numbers per row.

    Returns:
        (N, count) float64 values, uniform in [0, 1) (32-bit resolution).
    """
    h = _mix32(torch.full_like(keys[0], (seed + _GOLDEN) & _MASK32))  # fmix32(0) = 0: offset
    for key in keys:
        h = _mix32(h ^ (key & _MASK32))
    draws = torch.arange(count, device=h.device, dtype=torch.int64)
    return _mix32(h[:, None] ^ draws[None, :]).double() / 2.0**32


def erase_copies(
    images: Tensor,
    copy: Tensor,
    image: Tensor,
    seed: int,
    probability: float = 0.3,
    area: tuple[float, float] = (0.02, 0.4),
    aspect: tuple[float, float] = (0.3, 1 / 0.3),
    attempts: int = 64,
) -> Tensor:
    """Random erasing of uint8 images, each draw a hash of (seed, copy, image).

    Args:
        images: uint8 (N, C, H, W).
        copy: int64 (N,) copy number of each image.
        image: int64 (N,) index of each image in its set.
        seed: seed of the copies.
        probability: p, chance that an image is erased (0.3).
        area: range of the box area as a fraction of H·W.
        aspect: range of the box aspect ratio r (h = √(s·r), w = √(s/r)).
        attempts: candidate boxes tried before giving up on an image (the code loops until
            one fits; with 64 the chance that none of them fits is far below 1e-6).

    Returns:
        uint8 (N, C, H, W): `images` with one box per erased image set to its fill value.
    """
    n, _, height, width = images.shape
    u = hash_uniforms(seed, [copy, image], 2 + 4 * attempts)
    apply, fill = u[:, 0] < probability, (u[:, 1] * 255).floor()
    boxes = u[:, 2:].view(n, attempts, 4)
    s = (area[0] + (area[1] - area[0]) * boxes[..., 0]) * height * width
    r = aspect[0] + (aspect[1] - aspect[0]) * boxes[..., 1]
    w, h = (s / r).sqrt().floor(), (s * r).sqrt().floor()
    left, top = (boxes[..., 2] * width).floor(), (boxes[..., 3] * height).floor()
    fits = (left + w <= width) & (top + h <= height)
    first = fits.double().argmax(dim=1, keepdim=True)  # the first box that fits
    w, h, left, top = (t.gather(1, first).squeeze(1) for t in (w, h, left, top))
    erase = apply & fits.any(dim=1)

    rows = torch.arange(height, device=images.device, dtype=torch.float64)[None, :, None]
    cols = torch.arange(width, device=images.device, dtype=torch.float64)[None, None, :]
    inside = (
        (rows >= top[:, None, None])
        & (rows < (top + h)[:, None, None])
        & (cols >= left[:, None, None])
        & (cols < (left + w)[:, None, None])
        & erase[:, None, None]
    )
    values = fill.to(torch.uint8)[:, None, None, None].expand_as(images)
    return torch.where(inside[:, None], values, images)
