"""SimCLR's augmentation, batched and bit-exact with the Pillow ops it is made of.

Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations", ICML
2020, as CoMatch's second strong view (salesforce/CoMatch `datasets/cifar.py`,
`trans_strong1`): torchvision's `RandomResizedCrop(32, scale=(0.2, 1.))`,
`RandomHorizontalFlip()`, `RandomApply([ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8)` and
`RandomGrayscale(p=0.2)` on a PIL image. Each step is the Pillow operation torchvision calls,
emulated as the CTAugment ops are (`_color`, `_geometry`):

* the crop is ``img.crop(box).resize(size, BILINEAR)`` (`crop_and_resize`), with the box drawn
  as `RandomResizedCrop.get_params` does (10 tries of area and log-ratio, then the whole image
  clipped to the ratio range); the output keeps the input's size (32 px in the code);
* brightness, contrast and saturation are `ImageEnhance` Brightness, Contrast and Color with
  factors uniform in [0.6, 1.4]; hue converts to HSV (`Convert.c` `rgb2hsv_row`/`hsv2rgb`,
  bit-exact), adds int(255·h) mod 256 to H (h uniform in [−0.1, 0.1], torchvision's uint8
  wrap-around) and converts back; the four run in a random order per image (`get_params`'s
  `randperm(4)`); grey images skip hue (torchvision returns "L" images as they are);
* grey scale is ``convert("L")`` copied to the three channels.

The randomness comes from the generator, drawn batch-wise (not torchvision's stream).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from semisup.augment._color import enhance_brightness, enhance_color, enhance_contrast, grey
from semisup.augment._geometry import crop_and_resize

BILINEAR = 2  # index of Pillow's BILINEAR (triangle) filter in `_geometry.RESCALE_METHODS`
CROP_TRIES = 10  # RandomResizedCrop.get_params


def rgb_to_hsv(images: Tensor) -> Tensor:
    """Pillow's ``convert("HSV")`` of uint8 RGB images (N, 3, H, W) (`rgb2hsv_row`).

    The C code's mix of float and double arithmetic is kept: C's float operations in float32,
    its double constants in float64, and each store to a float variable rounded to float32.
    """
    rgb = images.to(torch.int32)
    red, green, blue = rgb.unbind(dim=1)
    high, low = rgb.amax(dim=1), rgb.amin(dim=1)
    constant = high == low
    spread = (high - low).to(torch.float32).masked_fill(constant, 1.0)
    saturation = (high - low).to(torch.float32) / high.to(torch.float32).masked_fill(high == 0, 1)
    red_c, green_c, blue_c = ((high - c).to(torch.float32) / spread for c in (red, green, blue))
    hue = torch.where(
        red == high,
        blue_c - green_c,
        torch.where(
            green == high,
            (2.0 + red_c.double() - blue_c.double()).float(),
            (4.0 + green_c.double() - red_c.double()).float(),
        ),
    )
    hue = torch.fmod(hue.double() / 6.0 + 1.0, 1.0).float()
    hue_byte = (hue.double() * 255.0).to(torch.int32).clamp(0, 255).masked_fill(constant, 0)
    sat_byte = (saturation.double() * 255.0).to(torch.int32).clamp(0, 255).masked_fill(constant, 0)
    return torch.stack([hue_byte, sat_byte, high], dim=1).to(torch.uint8)


def hsv_to_rgb(hsv: Tensor) -> Tensor:
    """Pillow's ``convert("RGB")`` of uint8 HSV images (N, 3, H, W) (`hsv2rgb`)."""
    hue, sat, value = hsv.to(torch.int32).unbind(dim=1)
    position = hue.to(torch.float64) * 6.0 / 255.0
    sector = torch.floor(position)
    fraction = (position - sector).float()
    sat_fraction = (sat.to(torch.float64) / 255.0).float()
    level = value.to(torch.float64)
    p = torch.round(level * (1.0 - sat_fraction.double()))
    q = torch.round(level * (1.0 - (sat_fraction * fraction).double()))
    t = torch.round(level * (1.0 - sat_fraction.double() * (1.0 - fraction.double())))
    p, q, t = (x.to(torch.int32).clamp(0, 255) for x in (p, q, t))
    rows = (
        (value, t, p),
        (q, value, p),
        (p, value, t),
        (p, q, value),
        (t, p, value),
        (value, p, q),
    )
    sector = sector.to(torch.int64) % 6
    channels = []
    for channel in range(3):
        choices = torch.stack([row[channel] for row in rows])  # (6, N, H, W)
        picked = choices.gather(0, sector.unsqueeze(0)).squeeze(0)
        channels.append(torch.where(sat == 0, value, picked))
    return torch.stack(channels, dim=1).to(torch.uint8)


def shift_hue(images: Tensor, shift: Tensor) -> Tensor:
    """The PIL `adjust_hue` of torchvision: H ← (H + shift) mod 256 in HSV; grey stays grey.

    Args:
        images: uint8 images (N, C, H, W).
        shift: int64 (N,) hue offsets in [0, 255] (int(255·hue_factor) mod 256).
    """
    if images.shape[1] != 3:
        return images.clone()
    hsv = rgb_to_hsv(images)
    hue = (hsv[:, 0].to(torch.int64) + shift.view(-1, 1, 1)) % 256
    return hsv_to_rgb(torch.cat([hue.to(torch.uint8).unsqueeze(1), hsv[:, 1:]], dim=1))


def resized_crop_boxes(
    n: int,
    height: int,
    width: int,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Tensor:
    """`RandomResizedCrop.get_params` for N images: int64 boxes (left, upper, right, lower).

    Draws, per image, `CROP_TRIES` area fractions uniform in `scale` and log aspect ratios
    uniform in log `ratio`, then two uniform numbers for the position (`crop_boxes`).
    """
    device = generator.device
    shape = (n, CROP_TRIES)
    area = torch.empty(shape, dtype=torch.float64, device=device)
    area.uniform_(scale[0], scale[1], generator=generator)
    log_ratio = torch.empty(shape, dtype=torch.float64, device=device)
    log_ratio.uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    position = torch.rand(n, 2, dtype=torch.float64, device=device, generator=generator)
    return crop_boxes(area, log_ratio, position, height, width, ratio)


def crop_boxes(
    area_fraction: Tensor,
    log_ratio: Tensor,
    position: Tensor,
    height: int,
    width: int,
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Tensor:
    """The boxes `get_params` picks from given draws: the first try that fits, else the centre.

    Try t has w = round(√(A·f_t·r_t)), h = round(√(A·f_t / r_t)) with A = H·W and
    r_t = exp(log_ratio_t); it fits when 0 < w ≤ W and 0 < h ≤ H. The fitting box's top is
    ⌊u_0·(H − h + 1)⌋ and left ⌊u_1·(W − w + 1)⌋ (`randint(0, H − h + 1)`). Without a fit the
    box is the whole image clipped to the ratio range, centred.

    Args:
        area_fraction: (N, tries) fractions of the image area.
        log_ratio: (N, tries) log aspect ratios (w / h).
        position: (N, 2) uniform numbers in [0, 1) for the top and left offsets.
        height: H.
        width: W.
        ratio: the aspect-ratio range of the fallback.

    Returns:
        int64 (N, 4) boxes (left, upper, right, lower).
    """
    area = height * width * area_fraction
    aspect = log_ratio.exp()
    crop_w = torch.round(torch.sqrt(area * aspect)).to(torch.int64)
    crop_h = torch.round(torch.sqrt(area / aspect)).to(torch.int64)
    fits = (crop_w > 0) & (crop_w <= width) & (crop_h > 0) & (crop_h <= height)
    first = fits.to(torch.int8).argmax(dim=1, keepdim=True)
    found = fits.any(dim=1)
    crop_w, crop_h = crop_w.gather(1, first).squeeze(1), crop_h.gather(1, first).squeeze(1)
    top = (position[:, 0] * (height - crop_h + 1)).floor().to(torch.int64)
    left = (position[:, 1] * (width - crop_w + 1)).floor().to(torch.int64)
    fallback_w, fallback_h = _central_crop(height, width, ratio)
    crop_w = torch.where(found, crop_w, fallback_w)
    crop_h = torch.where(found, crop_h, fallback_h)
    top = torch.where(found, top, (height - crop_h) // 2)
    left = torch.where(found, left, (width - crop_w) // 2)
    return torch.stack([left, top, left + crop_w, top + crop_h], dim=1)


def _central_crop(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int]:
    """(w, h) of `get_params`'s fallback: the image, clipped to the aspect-ratio range."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        return width, int(round(width / min(ratio)))
    if in_ratio > max(ratio):
        return int(round(height * max(ratio))), height
    return width, height


class SimCLRAugment:
    """CoMatch's second strong view: SimCLR's crop, flip, colour jitter and grey scale.

    Applied to the raw images (not after the weak view), as `trans_strong1` is.

    Args:
        hflip: flip half of the images (the code always does; off for digits and SVHN, as the
            weak view).
        jitter: (brightness, contrast, saturation, hue) strengths of `ColorJitter`.
        jitter_prob: probability of the colour jitter (`RandomApply`).
        grey_prob: probability of grey scale (`RandomGrayscale`).
        scale: area range of the crop.
    """

    def __init__(
        self,
        hflip: bool = True,
        jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1),
        jitter_prob: float = 0.8,
        grey_prob: float = 0.2,
        scale: tuple[float, float] = (0.2, 1.0),
    ) -> None:
        self.hflip, self.jitter, self.scale = hflip, jitter, scale
        self.jitter_prob, self.grey_prob = jitter_prob, grey_prob

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """Augments uint8 images (N, C, H, W); keep the generator on `images.device`."""
        n, _, height, width = images.shape
        boxes = resized_crop_boxes(n, height, width, generator, self.scale)
        method = torch.full((n,), BILINEAR, dtype=torch.int64, device=images.device)
        out = crop_and_resize(images, boxes, method)
        draws = torch.rand(n, 3, generator=generator, device=generator.device)
        if self.hflip:
            out = torch.where((draws[:, 0] < 0.5).view(-1, 1, 1, 1), out.flip(-1), out)
        out = self.color_jitter(out, draws[:, 1] < self.jitter_prob, generator)
        greyed = grey(out).expand_as(out)
        return torch.where((draws[:, 2] < self.grey_prob).view(-1, 1, 1, 1), greyed, out)

    def color_jitter(self, images: Tensor, apply: Tensor, generator: torch.Generator) -> Tensor:
        """`ColorJitter` on the images where `apply`: four ops in a random order per image."""
        n = len(images)
        device = generator.device
        order = torch.rand(n, 4, generator=generator, device=device).argsort(dim=1)
        uniform = torch.rand(n, 4, dtype=torch.float64, generator=generator, device=device)
        # factors uniform in [1 − s, 1 + s]; hue h in [−s, s] becomes int(255·h) mod 256
        factors = [1 + (2 * uniform[:, i] - 1) * s for i, s in enumerate(self.jitter[:3])]
        shift = torch.trunc((2 * uniform[:, 3] - 1) * self.jitter[3] * 255).to(torch.int64) % 256
        ops = (
            lambda x, keep: enhance_brightness(x, factors[0][keep]),
            lambda x, keep: enhance_contrast(x, factors[1][keep]),
            lambda x, keep: enhance_color(x, factors[2][keep]),
            lambda x, keep: shift_hue(x, shift[keep]),
        )
        out = images.clone()
        for step in range(4):
            for op_id, op in enumerate(ops):
                keep = apply & (order[:, step] == op_id)
                if keep.any():
                    out[keep] = op(out[keep], keep)
        return out
