"""SimCLR's augmentation (`semisup.augment.simclr`) against the Pillow code torchvision runs.

CoMatch's `trans_strong1` (salesforce/CoMatch `datasets/cifar.py`) is torchvision's
RandomResizedCrop / RandomHorizontalFlip / ColorJitter / RandomGrayscale on PIL images; the
reference below transcribes those torchvision functions for given random draws and runs them
with Pillow, image by image.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance

from semisup.augment.simclr import (
    CROP_TRIES,
    SimCLRAugment,
    crop_boxes,
    hsv_to_rgb,
    resized_crop_boxes,
    rgb_to_hsv,
    shift_hue,
)
from semisup.augment.views import ViewMaker
from semisup.augment.weak import WeakAugment

RATIO = (3 / 4, 4 / 3)


def to_pil(image: torch.Tensor) -> Image.Image:
    array = image.numpy()
    return Image.fromarray(array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0))


def from_pil(image: Image.Image) -> torch.Tensor:
    array = np.asarray(image)
    return torch.from_numpy((array[None] if array.ndim == 2 else array.transpose(2, 0, 1)).copy())


def all_colours(step: int) -> torch.Tensor:
    """Every (r, g, b) on a grid of `step`, plus 255, as one (1, 3, 1, M) image."""
    values = torch.tensor(sorted({*range(0, 256, step), 255}), dtype=torch.uint8)
    grid = torch.cartesian_prod(values, values, values)
    return grid.T.reshape(1, 3, 1, -1)


def test_hsv_conversions_equal_pillows():
    colours = all_colours(3)  # 86^3 colours
    assert torch.equal(rgb_to_hsv(colours)[0], from_pil(to_pil(colours[0]).convert("HSV")))
    # the same grid read as HSV triples
    size = (colours.shape[-1], 1)
    as_hsv = Image.frombytes("HSV", size, colours[0].permute(1, 2, 0).numpy().tobytes())
    assert torch.equal(hsv_to_rgb(colours)[0], from_pil(as_hsv.convert("RGB")))
    # red, blue, grey 9: hue 0 and 4/6 of 255, saturation 255, 255, 0
    pixels = torch.tensor([[255, 0, 9], [0, 0, 9], [0, 255, 9]], dtype=torch.uint8)
    hsv = rgb_to_hsv(pixels.view(1, 3, 1, 3))[0, :, 0].T
    assert hsv.tolist() == [[0, 255, 255], [170, 255, 255], [0, 0, 9]]


def pil_adjust_hue(image: Image.Image, hue_factor: float) -> Image.Image:
    """torchvision `functional_pil.adjust_hue`, transcribed (uint8 wrap-around of the shift)."""
    if image.mode in {"L", "1", "I", "F"}:
        return image
    h, s, v = image.convert("HSV").split()
    np_h = np.array(h, dtype=np.uint8)
    np_h += np.uint8(int(hue_factor * 255) % 256)  # np.uint8(hue_factor * 255) on x86
    h = Image.fromarray(np_h, "L")
    return Image.merge("HSV", (h, s, v)).convert(image.mode)


def test_shift_hue_equals_torchvisions_adjust_hue():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 9, 7), dtype=torch.uint8, generator=generator)
    factors = [-0.1, -0.05, -0.001, 0.0, 0.03, 0.1]
    shift = torch.tensor([int(f * 255) % 256 for f in factors])
    assert shift.tolist() == [231, 244, 0, 0, 7, 25]
    ours = shift_hue(images, shift)
    for image, out, factor in zip(images, ours, factors, strict=True):
        assert torch.equal(out, from_pil(pil_adjust_hue(to_pil(image), factor))), factor
    grey = images[:, :1]
    assert torch.equal(shift_hue(grey, shift), grey)


def get_params_transcribed(height, width, areas, log_ratios, position):
    """torchvision `RandomResizedCrop.get_params` with its random draws given, transcribed."""
    area = height * width
    for target, log_ratio in zip(areas, log_ratios, strict=True):
        target_area = area * target
        aspect_ratio = math.exp(log_ratio)
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            i = math.floor(position[0] * (height - h + 1))  # torch.randint(0, height - h + 1)
            j = math.floor(position[1] * (width - w + 1))
            return i, j, h, w
    in_ratio = float(width) / float(height)
    if in_ratio < min(RATIO):
        w = width
        h = int(round(w / min(RATIO)))
    elif in_ratio > max(RATIO):
        h = height
        w = int(round(h * max(RATIO)))
    else:
        w = width
        h = height
    return (height - h) // 2, (width - w) // 2, h, w


@pytest.mark.parametrize(("height", "width"), [(32, 32), (5, 40), (40, 5), (28, 28)])
def test_crop_boxes_follow_get_params(height, width):
    generator = torch.Generator().manual_seed(1)
    n = 200
    areas = torch.empty(n, CROP_TRIES, dtype=torch.float64).uniform_(0.2, 1.0, generator=generator)
    log_ratios = torch.empty(n, CROP_TRIES, dtype=torch.float64).uniform_(
        math.log(RATIO[0]), math.log(RATIO[1]), generator=generator
    )
    position = torch.rand(n, 2, dtype=torch.float64, generator=generator)
    boxes = crop_boxes(areas, log_ratios, position, height, width)
    for k in range(n):
        i, j, h, w = get_params_transcribed(
            height, width, areas[k].tolist(), log_ratios[k].tolist(), position[k].tolist()
        )
        assert boxes[k].tolist() == [j, i, j + w, i + h], k
    # the whole 5x40 area at ratio 1 is 14x14, too high: the centred crop clipped to 4/3
    whole = torch.ones(1, CROP_TRIES, dtype=torch.float64)
    fallback = crop_boxes(whole, 0 * whole, torch.zeros(1, 2, dtype=torch.float64), 5, 40)
    assert fallback.tolist() == [[16, 0, 23, 5]]  # w = round(5 · 4/3) = 7, left (40 − 7) // 2


def test_sampled_boxes_stay_inside_and_keep_the_area_range():
    boxes = resized_crop_boxes(500, 32, 32, torch.Generator().manual_seed(2))
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 32).all() and (boxes[:, 3] <= 32).all()
    area = (widths * heights).double() / 1024
    assert area.min() > 0.17 and area.max() <= 1.0  # 20-100 % up to rounding


def simclr_reference(images, seed, hflip=True):
    """CoMatch's trans_strong1 with Pillow, image by image, from the draws `SimCLRAugment` makes.

    The draws are repeated from the same seed in the same order: crop (areas, log ratios,
    positions), then (flip, jitter, grey) uniforms, the jitter order, the jitter factors.
    """
    n, _, height, width = images.shape
    generator = torch.Generator().manual_seed(seed)
    areas = torch.empty(n, CROP_TRIES, dtype=torch.float64).uniform_(0.2, 1.0, generator=generator)
    log_ratios = torch.empty(n, CROP_TRIES, dtype=torch.float64).uniform_(
        math.log(RATIO[0]), math.log(RATIO[1]), generator=generator
    )
    position = torch.rand(n, 2, dtype=torch.float64, generator=generator)
    draws = torch.rand(n, 3, generator=generator)
    order = torch.rand(n, 4, generator=generator).argsort(dim=1)
    uniform = torch.rand(n, 4, dtype=torch.float64, generator=generator)
    outputs = []
    for k in range(n):
        image = to_pil(images[k])
        i, j, h, w = get_params_transcribed(
            height, width, areas[k].tolist(), log_ratios[k].tolist(), position[k].tolist()
        )
        image = image.crop((j, i, j + w, i + h)).resize((width, height), Image.BILINEAR)
        if hflip and draws[k, 0] < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        if draws[k, 1] < 0.8:
            b, c, s = (1 + (2 * float(uniform[k, m]) - 1) * 0.4 for m in range(3))
            hue = (2 * float(uniform[k, 3]) - 1) * 0.1
            for fn_id in order[k].tolist():
                if fn_id == 0:
                    image = ImageEnhance.Brightness(image).enhance(b)
                elif fn_id == 1:
                    image = ImageEnhance.Contrast(image).enhance(c)
                elif fn_id == 2:
                    image = ImageEnhance.Color(image).enhance(s)
                else:
                    image = pil_adjust_hue(image, hue)
        if draws[k, 2] < 0.2:  # RandomGrayscale: convert("L"), back to the input's bands
            image = image.convert("L").convert(image.mode)
        outputs.append(from_pil(image))
    return torch.stack(outputs)


@pytest.mark.parametrize(("shape", "hflip"), [((3, 32, 32), True), ((1, 28, 28), False)])
def test_simclr_view_equals_the_pillow_pipeline(shape, hflip):
    images = torch.randint(
        0, 256, (40, *shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(3)
    )
    images[1] = images[1] // 16 + 100  # low contrast
    ours = SimCLRAugment(hflip)(images, torch.Generator().manual_seed(4))
    assert torch.equal(ours, simclr_reference(images, 4, hflip))


def test_view_maker_draws_simclr_views_from_the_stored_images():
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    maker = ViewMaker(WeakAugment(True), None, lambda x, g: x, simclr=SimCLRAugment())
    view = maker.make("simclr", images, torch.Generator().manual_seed(5))
    assert torch.equal(view, SimCLRAugment()(images, torch.Generator().manual_seed(5)))
    with pytest.raises(ValueError, match="simclr transform"):
        ViewMaker(WeakAugment(True), None, lambda x, g: x).make("simclr", images, None)


def test_labeled_images_take_the_simclr_view_where_the_algorithm_asks_for_a_weak_one():
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    unlabeled = torch.randint(0, 256, (8, 3, 8, 8), dtype=torch.uint8)
    maker = ViewMaker(
        WeakAugment(True), None, lambda x, g: x, simclr=SimCLRAugment(), labeled="simclr"
    )
    views = maker({"x": "weak", "u_w": "weak"}, images, unlabeled, torch.Generator().manual_seed(5))
    generator = torch.Generator().manual_seed(5)
    assert torch.equal(views["x"], SimCLRAugment()(images, generator))
    assert torch.equal(views["u_w"], WeakAugment(True)(unlabeled, generator))  # unlabeled: weak
    with pytest.raises(ValueError, match="needs a ViewMaker built with a simclr transform"):
        ViewMaker(WeakAugment(True), None, lambda x, g: x, labeled="simclr")
    with pytest.raises(ValueError, match="labeled must be 'weak' or 'simclr', got 'strong'"):
        ViewMaker(WeakAugment(True), None, lambda x, g: x, labeled="strong")
