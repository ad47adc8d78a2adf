"""RandAugment (FixMatch's 'rac') and CReST's RandAugment: levels, sampling and cutout."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from semisup.augment import ops
from semisup.augment.randaugment import (
    CREST_LEVELS,
    FIXMATCH_LEVELS,
    SOLARIZE_ADD,
    CReSTRandAugment,
    RandAugment,
)

AUGMENTERS = [RandAugment, CReSTRandAugment]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(n: int, seed: int = 0, size: int = 32) -> Tensor:
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=_gen(seed))


def _op_names(augment: RandAugment | CReSTRandAugment, op_ids: Tensor) -> set[str]:
    names = list(augment.op_table)
    return {names[i] for i in op_ids.unique().tolist()}


# ==== level mappings: our op's argument equals the code's ====


def _levels(fn, magnitude: Tensor, sign: float, size: int = 32) -> Tensor:
    v = fn(magnitude, torch.full_like(magnitude, sign), size, size)
    assert torch.all((v >= 0) & (v <= 1))
    return v


@pytest.mark.parametrize("sign", [-1.0, 1.0])
def test_fixmatch_levels_reproduce_the_auto_augment_arguments(sign):
    level = torch.arange(1, 10, dtype=torch.float64)  # np.random.randint(1, 10)
    ints = level.long()
    close = torch.testing.assert_close
    v = {name: _levels(fn, level, sign) for name, fn in FIXMATCH_LEVELS.items()}
    assert torch.equal(ops.rotate_degrees(v["rotate"]), (sign * (ints * 30 // 10)).long())
    assert torch.equal(ops.solarize_threshold(v["solarize"]), 256 - ints * 256 // 10)
    assert torch.equal(ops.posterize_bits(v["posterize"]), 4 - ints * 4 // 10)
    for name in ("color", "contrast", "brightness", "sharpness"):
        close(ops.enhance_factor(v[name]), level * 1.8 / 10 + 0.1)
    for name in ("shear_x", "shear_y"):
        close(ops.shear_factor(v[name]), sign * level * 0.3 / 10)
    for name in ("translate_x", "translate_y"):
        close(ops.translate_fraction(v[name]) * 32, sign * level)  # L pixels
    for name in ("autocontrast", "equalize"):
        assert torch.all(v[name] == 1)


@pytest.mark.parametrize("sign", [-1.0, 1.0])
def test_crest_levels_reproduce_the_tf_randaugment_arguments(sign):
    m = torch.linspace(0, 0.999, 1000, dtype=torch.float64)
    close = torch.testing.assert_close
    v = {name: _levels(fn, m, sign) for name, fn in CREST_LEVELS.items()}
    degrees = ops.rotate_degrees(v["rotate"]).double()
    assert torch.all((degrees - sign * 30 * m).abs() <= 0.5)  # rounded to whole degrees
    assert torch.equal(ops.solarize_threshold(v["solarize"]), (m * 256).long())
    assert torch.equal(ops.posterize_bits(v["posterize"]), (m * 4).long().clamp_min(1))
    for name in ("color", "contrast", "brightness", "sharpness"):
        close(ops.enhance_factor(v[name]), m * 1.8 + 0.1)
    for name in ("shear_x", "shear_y"):
        close(ops.shear_factor(v[name]), sign * m * 0.3)
    for name in ("translate_x", "translate_y"):  # TRANSLATE_CONST 10 on 32 px, capped at 9.6
        close(ops.translate_fraction(v[name]) * 32, sign * (m * 10).clamp(max=9.6))
    for name in ("autocontrast", "equalize", "invert"):
        assert torch.all(v[name] == 1)
    close(v["solarize_add"], m)


def test_solarize_add_adds_below_128_and_clips():
    images = (
        torch.tensor([0, 100, 127, 128, 255], dtype=torch.uint8).view(1, 1, 1, 5).repeat(2, 1, 1, 1)
    )
    level = torch.tensor([0.5, 1.0], dtype=torch.float64)  # +55, +110
    out = SOLARIZE_ADD.fn(images, level)
    assert out.flatten(1).tolist() == [[55, 155, 182, 128, 255], [110, 210, 237, 128, 255]]


# ==== policies ====


@pytest.mark.parametrize("augment_cls", AUGMENTERS)
def test_reproducible_given_the_generator(augment_cls):
    augment = augment_cls()
    images = _images(64)
    a, b = augment(images, _gen(4)), augment(images, _gen(4))
    assert torch.equal(a, b)
    assert a.dtype == torch.uint8 and a.shape == images.shape and a.device == images.device
    assert not torch.equal(a, augment(images, _gen(5)))
    p, q = augment.sample_policy(100, 32, 32, _gen(4)), augment.sample_policy(100, 32, 32, _gen(4))
    assert torch.equal(p.ops, q.ops) and torch.equal(p.levels, q.levels)


@pytest.mark.parametrize("augment_cls", AUGMENTERS)
def test_each_image_gets_its_own_ops(augment_cls):
    augment = augment_cls(prob=1.0)
    policy = augment.sample_policy(256, 32, 32, _gen(0))
    assert len({tuple(row) for row in policy.ops[:, :2].tolist()}) > 100
    same = _images(1).expand(64, -1, -1, -1).contiguous()
    outputs = augment(same, _gen(0))
    assert len({bytes(out.flatten().tolist()) for out in outputs}) > 50


def test_fixmatch_draws_from_its_14_ops():
    augment = RandAugment(prob=1.0)
    policy = augment.sample_policy(5000, 32, 32, _gen(0))
    assert _op_names(augment, policy.ops[:, :2]) == set(FIXMATCH_LEVELS)
    assert len(FIXMATCH_LEVELS) == 14
    brightness = list(augment.op_table).index("brightness")
    factors = ops.enhance_factor(policy.levels[:, :2, 0][policy.ops[:, :2] == brightness])
    expected = torch.arange(1, 10, dtype=torch.float64) * 0.18 + 0.1
    torch.testing.assert_close(factors.unique(), expected)


def test_crest_draws_from_its_16_ops():
    augment = CReSTRandAugment(prob=1.0)
    policy = augment.sample_policy(5000, 32, 32, _gen(0))
    assert _op_names(augment, policy.ops[:, :2]) == set(CREST_LEVELS)
    assert len(CREST_LEVELS) == 16 and "solarize_add" in CREST_LEVELS


@pytest.mark.parametrize(("augment_cls", "num_ops"), [(RandAugment, 14), (CReSTRandAugment, 16)])
@pytest.mark.parametrize("prob", [0.0, 0.5, 1.0])
def test_layers_are_applied_with_probability_prob(augment_cls, num_ops, prob):
    # A layer ends as identity when skipped (1 − p) or when identity is drawn (p / num_ops).
    # 2 × 20,000 layers: standard error ≤ 0.0025, tolerance 0.015.
    augment = augment_cls(prob=prob)
    policy = augment.sample_policy(20_000, 32, 32, _gen(1))
    identity = list(augment.op_table).index("identity")
    fraction = (policy.ops[:, :2] == identity).double().mean().item()
    assert fraction == pytest.approx(1 - prob + prob / num_ops, abs=0.015)
    skipped = policy.ops[:, :2] == identity
    assert torch.all(policy.levels[:, :2][skipped] == 0)


# ==== cutout ====


def _grey_rectangle_sides(image: Tensor) -> tuple[int, int]:
    """Sides of the grey region, asserting it is one filled axis-aligned rectangle."""
    grey = (image == ops.CUTOUT_GREY).all(0)
    rows, cols = grey.any(1).nonzero().flatten(), grey.any(0).nonzero().flatten()
    height, width = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
    assert grey.sum() == height * width
    return height, width


@pytest.mark.parametrize("augment_cls", AUGMENTERS)
def test_cutout_is_always_applied(augment_cls):
    # On black images no op makes the cutout grey (127), so the grey pixels are the cutout:
    # a 16 × 16 square clipped at the borders to at least 8 × 8.
    augment = augment_cls(prob=1.0)
    outputs = augment(torch.zeros((128, 3, 32, 32), dtype=torch.uint8), _gen(0))
    sides = torch.tensor([_grey_rectangle_sides(out) for out in outputs])
    assert sides.min() >= 8 and sides.max() == 16
    policy = augment.sample_policy(128, 32, 32, _gen(0))
    assert policy.depth == 3
    assert torch.all(policy.ops[:, 2] == list(augment.op_table).index("cutout"))


@pytest.mark.parametrize(("augment_cls", "side"), [(RandAugment, 16), (CReSTRandAugment, 48)])
def test_cutout_size_on_96_pixel_images(augment_cls, side):
    # FixMatch's cutout_numpy is 16 px whatever the image; CReST's is half the side.
    policy = augment_cls().sample_policy(16, 96, 96, _gen(0))
    assert torch.all(ops.cutout_size(policy.levels[:, 2, 0], 96, 96) == side)
