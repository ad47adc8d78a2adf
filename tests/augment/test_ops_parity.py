"""Parity of the batched CTAugment ops (`semisup.augment.ops`) with the Pillow ops they replace.

Every op is compared with a Pillow reference applied image by image exactly as
google-research/fixmatch `libml/ctaugment.py` applies it (docs/algorithms.md#ctaugment), on random
images (RGB and grey, several sizes, one non-square, plus low-contrast, two-valued and constant
images) and on real MNIST (grey) and CIFAR-10 JPEG (RGB) images.

Tolerances achieved (max / mean abs pixel difference to Pillow): every op is bit-exact, 0 / 0.

| op                   | why it is exact                                                   |
|----------------------|-------------------------------------------------------------------|
| autocontrast         | per-channel table in float64 as ImageOps; Image.blend in float32  |
| blur, smooth         | integer kernel sum + Filter.c rounding (provably equal: _filters) |
| brightness, color,   | ImageEnhance degenerate images; Image.blend emulated in float32   |
| contrast, sharpness  | (float32 factor, same order, clip, truncate); fixed-point luma    |
| cutout               | the reference square for the same centre                          |
| equalize             | integer table as ImageOps, clipped to 255 like Image.point        |
| identity, invert,    | copy / 255 - x / bit mask / threshold compare                     |
| posterize, solarize  |                                                                   |
| rescale              | Resample.c 22-bit weights rebuilt in double, exact integer        |
|                      | products; NEAREST as ImagingScaleAffine                           |
| rotate, shear        | Geometry.c 16.16 fixed-point affine engine, in integers           |
| translate            | ImagingScaleAffine's double accumulation, reproduced              |
"""

from __future__ import annotations

import functools
import gzip
import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageFilter, ImageOps
from torch import Tensor

from semisup.augment import ops
from semisup.augment._mappings import shortest_decimal
from semisup.augment.ops import OPS, OPS_CODE_TRANSLATE, Op, op_table

# (max abs difference, mean abs difference) allowed per op; see the table above.
TOLERANCE: dict[str, tuple[int, float]] = {name: (0, 0.0) for name in OPS}

NAMES = [
    "autocontrast",
    "blur",
    "brightness",
    "color",
    "contrast",
    "cutout",
    "equalize",
    "identity",
    "invert",
    "posterize",
    "rescale",
    "rotate",
    "sharpness",
    "shear_x",
    "shear_y",
    "smooth",
    "solarize",
    "translate_x",
    "translate_y",
]
BINS = {name: (17,) for name in NAMES} | {"identity": (), "posterize": (8,), "rescale": (17, 6)}
DETERMINISTIC = [name for name in NAMES if name not in ("cutout", "rescale")]
ENHANCE = ["brightness", "color", "contrast", "sharpness"]
BLENDED = ["autocontrast", "blur", "equalize", "invert", "smooth"]
GRID = [0.0, 0.1, 0.25, 0.5, 0.6, 0.7, 0.75, 0.9, 1.0, 0.9 / 1.9]
# method levels hitting every filter: int(5.99 m) = 0, 1, 2, 3, 4, 5, 5
METHOD_GRID = [0.0, 0.17, 0.34, 0.51, 0.67, 0.84, 1.0]
RESAMPLING = Image.Resampling
RESCALE_FILTERS = (
    RESAMPLING.LANCZOS,  # ANTIALIAS in the original code
    RESAMPLING.BICUBIC,
    RESAMPLING.BILINEAR,
    RESAMPLING.BOX,
    RESAMPLING.HAMMING,
    RESAMPLING.NEAREST,
)


# ------------------------------------------------------------------ Pillow reference ops


def _enhance(kind: type) -> Callable[[Image.Image, float], Image.Image]:
    return lambda image, v: kind(image).enhance(0.1 + 1.9 * v)


def _affine(coefficients: Callable[[Image.Image, float], tuple[float, ...]]) -> Callable:
    return lambda image, v: image.transform(image.size, Image.AFFINE, coefficients(image, v))


def _pil_rescale(image: Image.Image, scale: float, method: float) -> Image.Image:
    width, height = image.size
    scale *= 0.25
    box = (scale * width, scale * height, width * (1 - scale), height * (1 - scale))
    return image.crop(box).resize(image.size, RESCALE_FILTERS[int(method * 5.99)])


def _pil_cutout(image: Image.Image, level: float, centre_x: int, centre_y: int) -> Image.Image:
    """The reference cutout for a given centre (grey images get the single value 127)."""
    image = image.copy()
    half = (1 + int(level * min(image.size) * 0.499)) // 2
    width, height = image.size
    pixels = image.load()
    grey = (127, 127, 127) if image.mode == "RGB" else 127
    for i in range(max(0, centre_x - half), min(width, centre_x + half)):
        for j in range(max(0, centre_y - half), min(height, centre_y + half)):
            pixels[i, j] = grey
    return image


PIL_OPS: dict[str, Callable[[Image.Image, float], Image.Image]] = {
    "autocontrast": lambda image, v: Image.blend(image, ImageOps.autocontrast(image), v),
    "blur": lambda image, v: Image.blend(image, image.filter(ImageFilter.BLUR), v),
    "brightness": _enhance(ImageEnhance.Brightness),
    "color": _enhance(ImageEnhance.Color),
    "contrast": _enhance(ImageEnhance.Contrast),
    "equalize": lambda image, v: Image.blend(image, ImageOps.equalize(image), v),
    "identity": lambda image, v: image,
    "invert": lambda image, v: Image.blend(image, ImageOps.invert(image), v),
    "posterize": lambda image, v: ImageOps.posterize(image, 1 + int(v * 7.999)),
    "rotate": lambda image, v: image.rotate(int(np.round((2 * v - 1) * 45))),
    "sharpness": _enhance(ImageEnhance.Sharpness),
    "shear_x": _affine(lambda image, v: (1, (2 * v - 1) * 0.3, 0, 0, 1, 0)),
    "shear_y": _affine(lambda image, v: (1, 0, 0, (2 * v - 1) * 0.3, 1, 0)),
    "smooth": lambda image, v: Image.blend(image, image.filter(ImageFilter.SMOOTH), v),
    "solarize": lambda image, v: ImageOps.solarize(image, int(v * 255.999)),
    # the paper's translate: d = (2v - 1) * 0.3 of the image size
    "translate_x": _affine(lambda image, v: (1, 0, (2 * v - 1) * 0.3 * image.size[0], 0, 1, 0)),
    "translate_y": _affine(lambda image, v: (1, 0, 0, 0, 1, (2 * v - 1) * 0.3 * image.size[1])),
}
# the Google code's translate: d in pixels
PIL_CODE_TRANSLATE = {
    "translate_x": _affine(lambda image, v: (1, 0, (2 * v - 1) * 0.3, 0, 1, 0)),
    "translate_y": _affine(lambda image, v: (1, 0, 0, 0, 1, (2 * v - 1) * 0.3)),
}


def to_pil(image: Tensor) -> Image.Image:
    array = image.cpu().numpy()
    return Image.fromarray(array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0))


def from_pil(image: Image.Image) -> Tensor:
    array = np.asarray(image)
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return torch.from_numpy(array.copy())


def pil_batch(name: str, images: Tensor, levels: Tensor, table: dict | None = None) -> Tensor:
    """The Pillow reference applied image by image, image i with level i."""
    table = PIL_OPS if table is None else table
    outputs = []
    for image, level in zip(images, levels, strict=True):
        if name == "rescale":
            outputs.append(_pil_rescale(to_pil(image), float(level[0]), float(level[1])))
        else:
            outputs.append(table[name](to_pil(image), float(level)))
    return torch.stack([from_pil(out) for out in outputs]) if outputs else images.clone()


def assert_close_to_pillow(name: str, ours: Tensor, reference: Tensor) -> None:
    assert ours.dtype == torch.uint8 and ours.shape == reference.shape
    difference = (ours.cpu().to(torch.int32) - reference.to(torch.int32)).abs()
    max_abs, mean_abs = TOLERANCE[name]
    worst = int(difference.flatten(1).amax(1).argmax())
    assert difference.max() <= max_abs, f"{name}: max |diff| {difference.max()} (image {worst})"
    assert difference.float().mean() <= mean_abs, f"{name}: mean |diff| {difference.float().mean()}"


# ------------------------------------------------------------------------------- images


def random_images(shape: tuple[int, int, int], n: int = 20, seed: int = 0) -> Tensor:
    """Random uint8 images plus hard cases: low contrast, two values, constant."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (max(n, 5), *shape), generator=generator, dtype=torch.uint8)
    images[1] = images[1] // 16 + 100  # low contrast
    images[2] = torch.where(images[2] > 127, 200, 30)  # two values per channel
    images[3] = 77  # constant
    images[4] = images[4] // 64 * 85  # four levels
    return images[:n]


def level_column(n: int, seed: int = 0) -> Tensor:
    """The level grid followed by random levels, one per image (float64)."""
    generator = torch.Generator().manual_seed(seed + 1)
    extra = torch.rand(max(0, n - len(GRID)), generator=generator, dtype=torch.float64)
    return torch.cat([torch.tensor(GRID, dtype=torch.float64), extra])[:n]


def rescale_levels(n: int, seed: int = 0) -> Tensor:
    method = torch.tensor(METHOD_GRID * (n // len(METHOD_GRID) + 1), dtype=torch.float64)[:n]
    return torch.stack([level_column(n, seed), method], dim=1)


def levels_for(name: str, n: int, seed: int = 0) -> Tensor:
    return rescale_levels(n, seed) if name == "rescale" else level_column(n, seed)


# (C, H, W): CIFAR and MNIST sizes, non-square, equalize with step 1 (272 pixels) so Pillow
# clips table entries above 255, and an image smaller than the 5x5 BLUR kernel
SHAPES = [(3, 32, 32), (1, 28, 28), (3, 20, 27), (1, 16, 17), (3, 4, 6)]


@functools.cache
def mnist_images(root: Path, n: int = 16) -> Tensor:
    with gzip.open(root / "mnist" / "t10k-images-idx3-ubyte.gz") as stream:
        stream.read(16)  # idx header
        pixels = np.frombuffer(stream.read(n * 28 * 28), dtype=np.uint8)
    return torch.from_numpy(pixels.reshape(n, 1, 28, 28).copy())


@functools.cache
def cifar_images(root: Path, n: int = 16) -> Tensor:
    with zipfile.ZipFile(root / "cifar10-jpeg" / "cifar10_jpeg_q75.zip") as archive:
        names = sorted(name for name in archive.namelist() if name.startswith("train/"))
        chosen = names[:: len(names) // n][:n]  # spread over the classes
        arrays = [
            np.asarray(Image.open(io.BytesIO(archive.read(name))).convert("RGB")) for name in chosen
        ]
    return torch.from_numpy(np.stack(arrays).transpose(0, 3, 1, 2).copy())


# -------------------------------------------------------------------------------- tests


def test_op_table_names_bins_and_order() -> None:
    assert list(OPS) == NAMES  # alphabetical register order, 19 ops
    assert {name: op.bins for name, op in OPS.items()} == BINS
    assert all(isinstance(op, Op) and callable(op.fn) for op in OPS.values())
    with pytest.raises(AttributeError):
        OPS["blur"].bins = (3,)  # frozen


def test_op_table_variants() -> None:
    assert op_table() is OPS and op_table("paper") is OPS
    assert op_table("code") is OPS_CODE_TRANSLATE
    assert list(OPS_CODE_TRANSLATE) == NAMES
    assert OPS_CODE_TRANSLATE["translate_x"].fn is ops.translate_x_code
    assert OPS_CODE_TRANSLATE["translate_y"].fn is ops.translate_y_code
    assert all(OPS_CODE_TRANSLATE[k] == OPS[k] for k in NAMES if not k.startswith("translate"))
    with pytest.raises(ValueError, match="translate"):
        op_table("pixels")  # type: ignore[arg-type]


def test_register_adds_to_table() -> None:
    try:

        @ops.register(5, 3)
        def zz_test_op(images: Tensor, level: Tensor, *, generator=None) -> Tensor:
            return images

        assert OPS["zz_test_op"] == Op(zz_test_op, (5, 3))
    finally:
        OPS.pop("zz_test_op", None)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", [*DETERMINISTIC, "rescale"])
def test_matches_pillow_on_random_images(name: str, shape: tuple[int, int, int]) -> None:
    images = random_images(shape)
    levels = levels_for(name, len(images))
    out = OPS[name].fn(images, levels)
    assert_close_to_pillow(name, out, pil_batch(name, images, levels))


@pytest.mark.parametrize("dataset", ["mnist", "cifar"])
@pytest.mark.parametrize("name", [*DETERMINISTIC, "rescale"])
def test_matches_pillow_on_real_images(name: str, dataset: str, shared_datasets: Path) -> None:
    images = (mnist_images if dataset == "mnist" else cifar_images)(shared_datasets)
    levels = levels_for(name, len(images), seed=3)
    out = OPS[name].fn(images, levels)
    assert_close_to_pillow(name, out, pil_batch(name, images, levels))


@pytest.mark.parametrize("name", ["translate_x", "translate_y"])
def test_code_translate_matches_pillow_and_is_a_copy(name: str) -> None:
    for shape in SHAPES[:3]:
        images = random_images(shape)
        levels = level_column(len(images))
        out = OPS_CODE_TRANSLATE[name].fn(images, levels)
        assert torch.equal(out, pil_batch(name, images, levels, PIL_CODE_TRANSLATE))
        assert torch.equal(out, images) and out.data_ptr() != images.data_ptr()


def test_rescale_all_filters_and_scales() -> None:
    images = random_images((3, 32, 32), n=len(METHOD_GRID) * 6, seed=5)
    scale = torch.linspace(0, 1, 6, dtype=torch.float64).repeat_interleave(len(METHOD_GRID))
    method = torch.tensor(METHOD_GRID * 6, dtype=torch.float64)
    levels = torch.stack([scale, method], dim=1)
    assert set(ops.rescale_method_index(method).tolist()) == set(range(6))
    assert_close_to_pillow(
        "rescale", OPS["rescale"].fn(images, levels), pil_batch("rescale", images, levels)
    )


# cutout draws its centres batch-wise; its per-image behaviour is tested below
@pytest.mark.parametrize("name", [name for name in NAMES if name != "cutout"])
def test_batch_with_per_image_levels_equals_single_images(name: str) -> None:
    images = random_images((3, 20, 27), n=8, seed=7)
    levels = levels_for(name, 8, seed=7)
    batched = OPS[name].fn(images, levels)
    for i in range(len(images)):
        single = OPS[name].fn(images[i : i + 1], levels[i : i + 1])
        assert torch.equal(batched[i : i + 1], single), (name, i)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("channels", [1, 3])
def test_dtype_shape_device_preserved_and_input_untouched(name: str, channels: int) -> None:
    images = random_images((channels, 12, 9), n=4)
    before = images.clone()
    out = OPS[name].fn(images, levels_for(name, 4), generator=torch.Generator().manual_seed(1))
    assert out.dtype == torch.uint8 and out.shape == images.shape and out.device == images.device
    assert torch.equal(images, before)
    assert out.data_ptr() != images.data_ptr()


@pytest.mark.parametrize("layout", ["channels_last", "strided", "hwc_numpy"])
def test_non_contiguous_images(layout: str) -> None:
    images = random_images((3, 20, 27), n=6)
    if layout == "channels_last":
        odd = images.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        odd = torch.cat([images, images], dim=3)[..., ::2]
        images = odd.contiguous()
    else:  # an (N, H, W, C) array seen as (N, C, H, W), as torch.from_numpy(...).permute gives
        odd = torch.from_numpy(images.permute(0, 2, 3, 1).numpy().copy()).permute(0, 3, 1, 2)
    assert not odd.is_contiguous()
    for name in NAMES:
        levels = levels_for(name, 6)
        expected = OPS[name].fn(images, levels, generator=torch.Generator().manual_seed(0))
        got = OPS[name].fn(odd, levels, generator=torch.Generator().manual_seed(0))
        assert torch.equal(got, expected), name


def test_float32_levels_and_broadcast_levels() -> None:
    images = random_images((3, 32, 32), n=13)
    # rotate's rounding boundaries: (2v - 1)·45 is -4.4999…, 13.5000…02, 31.4999… for the
    # decimals v = 0.45, 0.65, 0.85 (-4, 14, 31 degrees) but -4.5000011, 13.4999979, 31.5000021
    # for their float32 values (-5, 13, 32)
    levels32 = torch.cat([level_column(10), torch.tensor([0.45, 0.65, 0.85])]).to(torch.float32)
    decimals = torch.tensor([float(str(v)) for v in levels32.numpy()], dtype=torch.float64)
    for name in DETERMINISTIC:
        ours = OPS[name].fn(images, levels32)
        assert_close_to_pillow(name, ours, pil_batch(name, images, decimals))
    assert ops.rotate_degrees(ops.per_image_levels(levels32, images))[-3:].tolist() == [-4, 14, 31]
    boundary = pil_batch("rotate", images[:1], torch.tensor([0.45], dtype=torch.float64))
    for level in (0.45, torch.tensor(0.45), torch.tensor([0.45]), torch.tensor([0.45]).half()):
        assert torch.equal(ops.rotate(images[:1], level), boundary), level
    assert not torch.equal(ops.rotate(images[:1], 0.45), ops.rotate(images[:1], 0.4499999))
    assert torch.equal(ops.rotate(images, torch.tensor(0.25)), ops.rotate(images, 0.25))
    assert torch.equal(
        ops.rotate(images, 0.25), ops.rotate(images, torch.full((13,), 0.25, dtype=torch.float64))
    )


def test_shortest_decimal_is_the_decimal_python_prints() -> None:
    generator = torch.Generator().manual_seed(0)
    levels = torch.cat([torch.rand(2000, generator=generator), torch.tensor([0.0, 1.0, 1e-8])])
    for narrow in (levels, levels.half()):
        printed = [float(str(v)) for v in narrow.numpy()]
        assert shortest_decimal(narrow).tolist() == printed, narrow.dtype
    brain = levels.bfloat16()  # numpy has no bfloat16: check the round trip only
    assert torch.equal(shortest_decimal(brain).to(torch.bfloat16), brain)


def test_wrong_level_shape_raises() -> None:
    images = random_images((3, 8, 8), n=4)
    with pytest.raises(ValueError, match="level"):
        ops.rotate(images, torch.rand(3))
    with pytest.raises(ValueError, match="level"):
        ops.rescale(images, torch.rand(4))


def test_empty_batch() -> None:
    images = torch.zeros(0, 3, 8, 8, dtype=torch.uint8)
    for name in NAMES:
        out = OPS[name].fn(images, levels_for(name, 0))
        assert out.shape == images.shape


@pytest.mark.parametrize("name", ENHANCE)
def test_enhance_factor_one_is_identity(name: str) -> None:
    images = random_images((3, 32, 32))
    level = torch.full((len(images),), 0.9 / 1.9, dtype=torch.float64)
    assert float(ops.enhance_factor(level)[0]) == pytest.approx(1.0, abs=1e-12)
    assert torch.equal(OPS[name].fn(images, level), images)


@pytest.mark.parametrize("name", BLENDED)
def test_blend_ops_at_zero_are_identity(name: str) -> None:
    images = random_images((3, 32, 32))
    assert torch.equal(OPS[name].fn(images, torch.zeros(len(images))), images)


def test_neutral_geometry_levels_are_identity() -> None:
    images = random_images((3, 20, 27))
    half = torch.full((len(images),), 0.5)
    for name in ["rotate", "shear_x", "shear_y", "translate_x", "translate_y"]:
        assert torch.equal(OPS[name].fn(images, half), images), name
    assert torch.equal(ops.posterize(images, torch.ones(len(images))), images)
    no_crop = torch.stack([torch.zeros(len(images)), torch.rand(len(images))], dim=1)
    assert torch.equal(ops.rescale(images, no_crop), images)


def test_mapping_values_from_algorithms_md_c5() -> None:
    def at(fn: Callable[..., Tensor], v: float, *args: int) -> float:
        return fn(torch.tensor([v], dtype=torch.float64), *args).item()

    assert at(ops.enhance_factor, 0.5) == pytest.approx(1.05, abs=1e-6)
    assert at(ops.rotate_degrees, 0.25) == -22
    assert at(ops.rotate_degrees, 0.75) == 22
    assert at(ops.rotate_degrees, 0.6) == 9
    assert at(ops.shear_factor, 0.75) == pytest.approx(0.15, abs=1e-6)
    assert at(ops.posterize_bits, 0.5) == 4
    assert at(ops.posterize_bits, 1.0) == 8
    assert at(ops.solarize_threshold, 0.5) == 127
    assert at(ops.cutout_size, 1.0, 32, 32) == 16
    assert at(ops.cutout_size, 1.0, 96, 96) == 48
    assert at(ops.rescale_method_index, 0.5) == 2  # BILINEAR
    # translate in "code" mode leaves a 32x32 image unchanged, for any level
    images = random_images((3, 32, 32))
    for name in ["translate_x", "translate_y"]:
        assert torch.equal(OPS_CODE_TRANSLATE[name].fn(images, level_column(len(images))), images)


def test_rotate_direction_and_paper_translate_distance() -> None:
    image = torch.zeros(1, 1, 32, 32, dtype=torch.uint8)
    image[0, 0, 16, 28] = 255  # a dot right of the centre
    turned = ops.rotate(image, torch.tensor([1.0]))  # +45 degrees: counter-clockwise
    y, x = divmod(int(turned.flatten().argmax()), 32)
    assert y < 16 and x > 16  # moved up (image y points down)
    # v = 0.75: d = 0.15 of the width = 4.8 px; content moves left by round(4.8) = 5
    shifted = ops.translate_x(image, torch.tensor([0.75]))
    assert int(shifted.flatten().argmax()) % 32 == 28 - 5


# -------------------------------------------------------------------------------- cutout


def _cutout_centres(seed: int, n: int, width: int, height: int) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    centre_x = torch.randint(0, width, (n,), generator=generator)
    centre_y = torch.randint(0, height, (n,), generator=generator)
    return centre_x, centre_y


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28), (3, 20, 27)], ids=str)
def test_cutout_matches_pillow_for_the_same_centres(shape: tuple[int, int, int]) -> None:
    images = random_images(shape, n=24)
    levels = level_column(24)
    out = ops.cutout(images, levels, generator=torch.Generator().manual_seed(11))
    centre_x, centre_y = _cutout_centres(11, 24, shape[2], shape[1])
    for i in range(24):
        reference = _pil_cutout(
            to_pil(images[i]), float(levels[i]), int(centre_x[i]), int(centre_y[i])
        )
        assert torch.equal(out[i], from_pil(reference)), i


def test_cutout_paints_exactly_the_clipped_square_and_nothing_else() -> None:
    n, height, width = 64, 32, 32
    images = torch.full((n, 3, height, width), 5, dtype=torch.uint8)
    levels = torch.ones(n)
    out = ops.cutout(images, levels, generator=torch.Generator().manual_seed(3))
    centre_x, centre_y = _cutout_centres(3, n, width, height)
    side = int(ops.cutout_size(torch.tensor([1.0]), width, height))
    assert side == 16
    half = side // 2
    painted = (out == ops.CUTOUT_GREY).all(dim=1)
    assert torch.equal(painted, (out != 5).any(dim=1))  # grey or untouched, all channels alike
    for i in range(n):
        x0, x1 = max(0, int(centre_x[i]) - half), min(width, int(centre_x[i]) + half)
        y0, y1 = max(0, int(centre_y[i]) - half), min(height, int(centre_y[i]) + half)
        expected = torch.zeros(height, width, dtype=torch.bool)
        expected[y0:y1, x0:x1] = True
        assert torch.equal(painted[i], expected), i
        if half <= int(centre_x[i]) <= width - half and half <= int(centre_y[i]) <= height - half:
            assert int(painted[i].sum()) == side * side  # a full 16x16 square inside


def test_cutout_is_reproducible_with_a_seeded_generator() -> None:
    images = random_images((3, 32, 32), n=16)
    levels = level_column(16)
    first = ops.cutout(images, levels, generator=torch.Generator().manual_seed(0))
    second = ops.cutout(images, levels, generator=torch.Generator().manual_seed(0))
    other = ops.cutout(images, torch.ones(16), generator=torch.Generator().manual_seed(1))
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


# --------------------------------------------------------------------------------- blend


def test_blend_matches_image_blend_including_extrapolation() -> None:
    generator = torch.Generator().manual_seed(4)
    a = torch.randint(0, 256, (12, 3, 9, 7), generator=generator, dtype=torch.uint8)
    b = torch.randint(0, 256, (12, 3, 9, 7), generator=generator, dtype=torch.uint8)
    weights = torch.tensor([0, 0.3, 0.5, 1, 1.05, 1.9, 2.0, 0.1, -0.4, 0.999, 0.7, 1.37])
    ours = ops.blend(a, b, weights)
    for i in range(12):
        reference = Image.blend(to_pil(a[i]), to_pil(b[i]), float(weights[i]))
        assert torch.equal(ours[i], from_pil(reference)), float(weights[i])


# ---------------------------------------------------------------------------------- CUDA


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", NAMES)
def test_cuda_batch_matches_pillow(name: str) -> None:
    for images in (random_images((3, 32, 32), n=32), random_images((1, 28, 28), n=32)):
        levels = levels_for(name, len(images))
        generator = torch.Generator(device="cuda").manual_seed(2)
        out = OPS[name].fn(images.cuda(), levels.cuda(), generator=generator)
        assert out.is_cuda and out.dtype == torch.uint8 and out.shape == images.shape
        if name == "cutout":  # the CUDA generator draws other centres; check the paint only
            changed = (out.cpu() != images).any(dim=1)
            assert bool((out.cpu().permute(0, 2, 3, 1)[changed] == ops.CUTOUT_GREY).all())
            continue
        assert_close_to_pillow(name, out, pil_batch(name, images, levels))


# ---------------------------------------------------------------------------- exhaustive


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28), (3, 96, 96), (1, 33, 17)], ids=str)
def test_exhaustive_geometry_grid(shape: tuple[int, int, int]) -> None:
    levels = torch.linspace(0, 1, 181, dtype=torch.float64)  # every rotation angle, twice
    images = random_images(shape, n=len(levels), seed=9)
    for name in ["rotate", "shear_x", "shear_y", "translate_x", "translate_y"]:
        assert_close_to_pillow(name, OPS[name].fn(images, levels), pil_batch(name, images, levels))


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28), (3, 96, 96), (3, 20, 27)], ids=str)
def test_exhaustive_rescale_grid(shape: tuple[int, int, int]) -> None:
    scale = torch.linspace(0, 1, 65, dtype=torch.float64)
    method = torch.tensor(METHOD_GRID[:-1], dtype=torch.float64)
    levels = torch.cartesian_prod(scale, method)
    images = random_images(shape, n=len(levels), seed=10)
    assert_close_to_pillow(
        "rescale", ops.rescale(images, levels), pil_batch("rescale", images, levels)
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", DETERMINISTIC)
def test_exhaustive_random_levels(name: str) -> None:
    for seed, shape in enumerate([(3, 32, 32), (1, 28, 28), (3, 96, 96), (1, 5, 5), (3, 1, 7)]):
        images = random_images(shape, n=200, seed=seed)
        levels = torch.rand(200, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        assert_close_to_pillow(name, OPS[name].fn(images, levels), pil_batch(name, images, levels))
