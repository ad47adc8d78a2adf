"""RandAugment as FixMatch and CReST use it, batched over the CTAugment op table.

Cubuk et al., "RandAugment", CVPR-W 2020. Each image gets `num_layers` ops drawn uniformly with
replacement, each applied with probability `prob` at a random magnitude, then one cutout. The
two Google codes differ in op list, magnitude scale and cutout size; each class follows its code
and maps every (op, magnitude) onto the level v ∈ [0, 1] of our op table (the CTAugment ops,
docs/algorithms.md#ctaugment) so that the op's argument equals the code's. Randomness comes only
from the generator.

Deviations shared by both (the op table's ops are the CTAugment ones):

* Rotate, shear and translate fill uncovered pixels black; both codes fill them grey (the RGBA
  trick of `auto_augment/augmentations.py`; `wrap`/`unwrap` with 128 in CReST's ops).
* Translation is capped at 30 % of the image side, CTAugment's range. On 32 px images that
  costs nothing: FixMatch shifts at most 9 px, and CReST's 10 px is capped at 9.6 px, which
  nearest sampling rounds back to a 10 px shift.
* The cutout grey is 127 (CTAugment's); both codes zero the [-1, 1]-scaled image, i.e. 127.5.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from semisup.augment.ops import OPS, Op
from semisup.augment.policy import MAX_PARAMS, Policy, apply_policy, generator_device

# (magnitude (M,), random sign ±1 (M,), image height, image width) -> op level v (M,), float64.
LevelFn = Callable[[Tensor, Tensor, int, int], Tensor]


class RandAugment:
    """FixMatch's RandAugment with random magnitude and cutout ('rac', the RA ablation).

    google-research/fixmatch `libml/augment.py` (`AugmentPoolRAMC`, nops=2, magnitude=10) and
    `third_party/auto_augment/augmentations.py`: two ops drawn with replacement from the 14 of
    `RANDOM_POLICY_OPS`, each applied with probability 0.5 at an integer level L uniform in
    {1, …, 9} (`np.random.randint(1, 10)` out of PARAMETER_MAX = 10), then `cutout_numpy`: a
    16×16 px grey square (fixed pixels, not a fraction of the image; v = 1 of our cutout on
    32×32 images) centred on a uniform pixel and clipped at the borders. The FixMatch paper
    describes the ops as always applied; the code applies each with probability 0.5.

    Levels, as the code maps L (signs are random): rotate ±int(3L)°, solarize threshold
    256 − int(25.6L), color/contrast/brightness/sharpness factor 0.1 + 0.18L, shear ±0.03L,
    translate ±L px, posterize to 4 − int(0.4L) bits, autocontrast and equalize in full.

    Args:
        num_layers: ops per image.
        prob: probability that each drawn op is applied.
        max_level: levels are uniform in {1, …, max_level − 1} out of 10.
        cutout_size: side of the final cutout square in pixels (capped at half the image side).
        op_table: the op table supplying the ops (default: all ops).
    """

    def __init__(
        self,
        num_layers: int = 2,
        prob: float = 0.5,
        max_level: int = 10,
        cutout_size: int = 16,
        op_table: Mapping[str, Op] | None = None,
    ) -> None:
        self.num_layers = num_layers
        self.prob = prob
        self.max_level = max_level
        self.cutout_size = cutout_size
        self.op_table = _layer_table(OPS if op_table is None else op_table, FIXMATCH_LEVELS)

    def sample_policy(
        self, n: int, height: int, width: int, generator: torch.Generator | None = None
    ) -> Policy:
        """A policy for n images of height × width: the layers, then cutout (depth layers + 1).

        Skipped layers are `identity`. Tensors are on the generator's device (CPU without one).
        """
        device = generator_device(generator)
        magnitudes = torch.randint(
            1, self.max_level, (n, self.num_layers), generator=generator, device=device
        )
        return _sample_policy(
            FIXMATCH_LEVELS,
            self.op_table,
            magnitudes.double(),
            prob=self.prob,
            cutout_level=_cutout_level_for_size(self.cutout_size, min(height, width)),
            size=(height, width),
            generator=generator,
        )

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augments (N, C, H, W) uint8 images; keep the generator on `images.device`."""
        n, _, h, w = images.shape
        policy = self.sample_policy(n, h, w, generator)
        return apply_policy(images, policy, self.op_table, generator)


class CReSTRandAugment:
    """The RandAugment of CReST's strong view 'dhrac' (`randaug2-0.5---all` + `cutout0.5`).

    google-research/crest `data/augment.py`, `data/augment_ops.py` (`RandAugment`, mode 'all')
    and `third_party/rand_augment.py`, `third_party/augment_ops.py`; the TF RandAugment of UDA
    lineage. Two layers, each draws one of 16 ops uniformly and a magnitude m uniform in [0, 1)
    (num_levels=None), and is applied with probability 0.5; then `CutOut(scale=0.5)` always:
    a grey square of half the image side (our cutout at v = 1).

    Levels, as `LEVEL_TO_ARG` maps m (signs are random): rotate ±30m°, posterize to int(4m) bits
    (TF clamps the resulting shift of 8 to 7, so 0 bits keep 1), solarize threshold int(256m),
    solarize_add adds int(110m) below 128, color/contrast/brightness/sharpness factor
    0.1 + 1.8m, shear ±0.3m, translate ±m·TRANSLATE_CONST px (10 on 32 px, 30 on 96 px, 40 on
    128, 100 on 256, else int(0.3·side)), autocontrast, equalize and invert in full.

    Deviations beyond the module's: rotation is rounded to whole degrees (CTAugment's rotate,
    `int(round(·))`) where CReST rotates by the real angle; our cutout is square (min side)
    where CReST's is half of each side, and its centre is a uniform pixel where CReST rounds a
    uniform real (which can reach the far edge). SolarizeAdd is not a CTAugment op; it is
    implemented here (`SOLARIZE_ADD`) and added to the op table.

    Args:
        num_layers: ops per image.
        prob: probability that each layer is applied.
        op_table: the op table supplying the ops (default: all ops).
    """

    def __init__(
        self,
        num_layers: int = 2,
        prob: float = 0.5,
        op_table: Mapping[str, Op] | None = None,
    ) -> None:
        self.num_layers = num_layers
        self.prob = prob
        table = {**(OPS if op_table is None else op_table), "solarize_add": SOLARIZE_ADD}
        self.op_table = _layer_table(table, CREST_LEVELS)

    def sample_policy(
        self, n: int, height: int, width: int, generator: torch.Generator | None = None
    ) -> Policy:
        """A policy for n images of height × width: the layers, then cutout (depth layers + 1).

        Skipped layers are `identity`. Tensors are on the generator's device (CPU without one).
        """
        device = generator_device(generator)
        magnitudes = torch.rand(
            (n, self.num_layers), generator=generator, device=device, dtype=torch.float64
        )
        return _sample_policy(
            CREST_LEVELS,
            self.op_table,
            magnitudes,
            prob=self.prob,
            cutout_level=1.0,
            size=(height, width),
            generator=generator,
        )

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augments (N, C, H, W) uint8 images; keep the generator on `images.device`."""
        n, _, h, w = images.shape
        policy = self.sample_policy(n, h, w, generator)
        return apply_policy(images, policy, self.op_table, generator)


# ==== inverses of the CTAugment level mappings (docs/algorithms.md#ctaugment): argument -> v ====


def _v_rotate(degrees: Tensor) -> Tensor:
    """CTAugment rotates by int(round((2v − 1) · 45)) degrees."""
    return (degrees / 45 + 1) / 2


def _v_enhance(factor: Tensor) -> Tensor:
    """CTAugment's enhance factor is 0.1 + 1.9v."""
    return (factor - 0.1) / 1.9


def _v_shear(shear: Tensor) -> Tensor:
    """CTAugment shears by (2v − 1) · 0.3."""
    return (shear / 0.3 + 1) / 2


def _v_translate(fraction: Tensor) -> Tensor:
    """CTAugment (paper) translates by (2v − 1) · 0.3 of the side; beyond that is capped."""
    return ((fraction / 0.3 + 1) / 2).clamp(0, 1)


def _v_posterize(bits: Tensor) -> Tensor:
    """CTAugment keeps 1 + int(7.999v) bits; the middle of the bits' level range."""
    return (bits - 0.5) / 8


def _v_solarize(threshold: Tensor) -> Tensor:
    """CTAugment's solarize threshold is int(255.999v); the middle of the threshold's range."""
    return (threshold + 0.5) / 255.999


def _cutout_level_for_size(size: int, side: int) -> float:
    """The v at which CTAugment's cutout, side 1 + int(v · side · 0.499), is `size` px (≤ 1)."""
    return min(1.0, (size - 0.5) / (side * 0.499))


def _none(m: Tensor, sign: Tensor, height: int, width: int) -> Tensor:
    """Ops without a level (identity)."""
    return torch.zeros_like(m)


def _full(m: Tensor, sign: Tensor, height: int, width: int) -> Tensor:
    """Ops applied in full whatever the magnitude (autocontrast, equalize, invert)."""
    return torch.ones_like(m)


# ==== FixMatch: integer level L in {1..9}, PARAMETER_MAX = 10 (auto_augment/augmentations.py) ====


def _int_parameter(level: Tensor, maxval: float) -> Tensor:
    """The code's int_parameter: int(L · maxval / 10)."""
    return (level * maxval / 10).floor()


def _fm_rotate(level: Tensor, sign: Tensor, height: int, width: int) -> Tensor:
    return _v_rotate(sign * _int_parameter(level, 30))


def _fm_solarize(level: Tensor, sign: Tensor, height: int, width: int) -> Tensor:
    return _v_solarize(256 - _int_parameter(level, 256))


def _fm_enhance(level: Tensor, sign: Tensor, height: int, width: int) -> Tensor:
    return _v_enhance(level * 1.8 / 10 + 0.1)


def _fm_shear(level: Tensor, sign: Tensor, height: int, width: int) -> Tensor:
    return _v_shear(sign * level * 0.3 / 10)


def _fm_translate_x(level: Tensor, sign: Tensor, height: int, width: int) -> Tensor:
    return _v_translate(sign * _int_parameter(level, 10) / width)


def _fm_translate_y(level: Tensor, sign: Tensor, height: int, width: int) -> Tensor:
    return _v_translate(sign * _int_parameter(level, 10) / height)


def _fm_posterize(level: Tensor, sign: Tensor, height: int, width: int) -> Tensor:
    return _v_posterize(4 - _int_parameter(level, 4))


# Op table name -> level mapping, in the order of the code's RANDOM_POLICY_OPS.
FIXMATCH_LEVELS: dict[str, LevelFn] = {
    "identity": _none,
    "autocontrast": _full,
    "equalize": _full,
    "rotate": _fm_rotate,
    "solarize": _fm_solarize,
    "color": _fm_enhance,
    "contrast": _fm_enhance,
    "brightness": _fm_enhance,
    "sharpness": _fm_enhance,
    "shear_x": _fm_shear,
    "translate_x": _fm_translate_x,
    "translate_y": _fm_translate_y,
    "posterize": _fm_posterize,
    "shear_y": _fm_shear,
}


# ==== CReST: magnitude m uniform in [0, 1) (third_party/rand_augment.py LEVEL_TO_ARG) ====


def _translate_const(side: int) -> int:
    """CReST's TRANSLATE_CONST for an image side (data/augment_ops.py RandAugment)."""
    return {32: 10, 96: 30, 128: 40, 256: 100}.get(side, int(0.3 * side))


def _crest_rotate(m: Tensor, sign: Tensor, height: int, width: int) -> Tensor:
    return _v_rotate(sign * m * 30)


def _crest_posterize(m: Tensor, sign: Tensor, height: int, width: int) -> Tensor:
    return _v_posterize((m * 4).floor().clamp_min(1))


def _crest_solarize(m: Tensor, sign: Tensor, height: int, width: int) -> Tensor:
    return _v_solarize((m * 256).floor())


def _crest_solarize_add(m: Tensor, sign: Tensor, height: int, width: int) -> Tensor:
    """solarize_add takes the magnitude itself (see `_solarize_add`)."""
    return m


def _crest_enhance(m: Tensor, sign: Tensor, height: int, width: int) -> Tensor:
    return _v_enhance(m * 1.8 + 0.1)


def _crest_shear(m: Tensor, sign: Tensor, height: int, width: int) -> Tensor:
    return _v_shear(sign * m * 0.3)


def _crest_translate_x(m: Tensor, sign: Tensor, height: int, width: int) -> Tensor:
    return _v_translate(sign * m * _translate_const(width) / width)


def _crest_translate_y(m: Tensor, sign: Tensor, height: int, width: int) -> Tensor:
    return _v_translate(sign * m * _translate_const(height) / height)


# Op table name -> level mapping, in the order of CReST's ra_ops for mode 'all'.
CREST_LEVELS: dict[str, LevelFn] = {
    "autocontrast": _full,
    "equalize": _full,
    "posterize": _crest_posterize,
    "solarize": _crest_solarize,
    "color": _crest_enhance,
    "contrast": _crest_enhance,
    "brightness": _crest_enhance,
    "identity": _none,
    "invert": _full,
    "sharpness": _crest_enhance,
    "solarize_add": _crest_solarize_add,
    "rotate": _crest_rotate,
    "shear_x": _crest_shear,
    "shear_y": _crest_shear,
    "translate_x": _crest_translate_x,
    "translate_y": _crest_translate_y,
}


def _solarize_add(
    images: Tensor, level: Tensor, *, generator: torch.Generator | None = None
) -> Tensor:
    """TF `solarize_add` (CReST `third_party/augment_ops.py`): add int(110v) below 128, clipped."""
    addition = (level * 110).floor().to(torch.int16)[:, None, None, None]
    added = (images.to(torch.int16) + addition).clamp(0, 255).to(torch.uint8)
    return torch.where(images < 128, added, images)


# The bins only tell `apply_policy` that the op takes one level; it is never rate-tracked.
SOLARIZE_ADD = Op(fn=_solarize_add, bins=(17,))


# ==== shared sampling ====


def _layer_table(table: Mapping[str, Op], levels: Mapping[str, LevelFn]) -> dict[str, Op]:
    """The ops a RandAugment draws from, in draw order, then cutout (identity is among them)."""
    missing = [name for name in [*levels, "cutout"] if name not in table]
    if missing:
        raise ValueError(f"the op table lacks the ops {missing}")
    return {name: table[name] for name in [*levels, "cutout"]}


def _sample_policy(
    levels_by_op: Mapping[str, LevelFn],
    op_table: Mapping[str, Op],
    magnitudes: Tensor,
    *,
    prob: float,
    cutout_level: float,
    size: tuple[int, int],
    generator: torch.Generator | None,
) -> Policy:
    """Draws ops, application and signs for the (n, layers) `magnitudes`; appends cutout.

    Op indices refer to `op_table`, whose first entries are the ops of `levels_by_op` in order.
    """
    n, layers = magnitudes.shape
    device = magnitudes.device
    choice = torch.randint(len(levels_by_op), (n, layers), generator=generator, device=device)
    applied = torch.rand((n, layers), generator=generator, device=device) < prob
    flip = torch.rand((n, layers), generator=generator, device=device) < 0.5
    sign = 1 - 2 * flip.to(torch.float64)
    level = torch.zeros((n, layers), dtype=torch.float64, device=device)
    for op_id, level_fn in enumerate(levels_by_op.values()):
        where = choice == op_id
        level[where] = level_fn(magnitudes[where], sign[where], *size)
    names = list(op_table)
    ops = torch.where(applied, choice, names.index("identity"))
    level = torch.where(applied, level, 0.0)
    ops = torch.cat([ops, torch.full((n, 1), names.index("cutout"), device=device)], 1)
    level = torch.cat(
        [level, torch.full((n, 1), cutout_level, dtype=torch.float64, device=device)], 1
    )
    padding = torch.zeros((n, layers + 1, MAX_PARAMS - 1), dtype=torch.float64, device=device)
    return Policy(ops, torch.cat([level[..., None], padding], 2))
