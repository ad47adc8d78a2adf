"""Images from Python (`semisup.api.images`) and flat rows (`semisup.api.flat_rows`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from semisup.api.flat_rows import FlatRows
from semisup.api.images import ImageFormat, as_uint8, prepare_images
from semisup.errors import UserError


def test_floats_in_unit_range_become_rounded_bytes():
    floats = np.array([0.0, 0.5, 1.0, 0.2 / 255, 0.6 / 255])
    assert as_uint8(floats).tolist() == [0, 128, 255, 0, 1]  # rint(127.5) = 128 (half to even)
    assert as_uint8(np.array([0, 17, 255], dtype=np.int64)).dtype == np.uint8


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (np.array([0.0, np.nan]), "NaN"),
        (np.array([0.0, np.inf]), "NaN or infinite"),
        (np.array([0.0, 1.5]), r"in \[0, 1\], got 0..1.5"),
        (np.array([-1, 3]), "0..255, got -1..3"),
        (np.array([0, 256]), "0..255, got 0..256"),
        (np.array([True, False]), "dtype bool"),
    ],
)
def test_bad_pixel_values_are_refused(values, message):
    with pytest.raises(UserError, match=message):
        as_uint8(values)


def test_a_numpy_batch_is_channels_last_and_a_torch_batch_channels_first():
    rgb = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    from_numpy, image_format = prepare_images(rgb, None)
    assert image_format == ImageFormat(channels=3, size=4)
    assert torch.equal(from_numpy, torch.from_numpy(rgb).permute(0, 3, 1, 2))
    from_torch, _ = prepare_images(torch.from_numpy(rgb).permute(0, 3, 1, 2), None)
    assert torch.equal(from_torch, from_numpy)
    grey, grey_format = prepare_images(rgb[..., 0], None)
    assert grey_format.shape == (1, 4, 4) and torch.equal(grey[:, 0], torch.from_numpy(rgb[..., 0]))


def test_single_images_of_every_kind_give_the_same_batch():
    pixels = np.array([[0, 64], [128, 255]], dtype=np.uint8)
    items = [
        pixels,
        pixels / 255.0,
        Image.fromarray(pixels),
        torch.from_numpy(pixels)[None],  # (C, H, W)
        pixels[:, :, None],  # (H, W, 1)
    ]
    batch, image_format = prepare_images(items, None)
    assert image_format == ImageFormat(channels=1, size=2)
    assert all(torch.equal(image[0], torch.from_numpy(pixels)) for image in batch)


def test_files_are_read_and_grey_images_join_colour_ones_as_rgb(tmp_path):
    colour = np.zeros((6, 6, 3), dtype=np.uint8)
    colour[..., 0] = 255
    Image.fromarray(colour).save(tmp_path / "red.png")
    grey = np.full((6, 6), 90, dtype=np.uint8)
    batch, image_format = prepare_images(
        [tmp_path / "red.png", str(tmp_path / "red.png"), grey], None
    )
    assert image_format == ImageFormat(channels=3, size=6)
    assert batch[0, :, 0, 0].tolist() == [255, 0, 0] and batch[1].equal(batch[0])
    assert batch[2, :, 0, 0].tolist() == [90, 90, 90]


def test_a_trained_format_resizes_and_converts_new_images():
    image_format = ImageFormat(channels=1, size=4)
    bigger = np.full((3, 8, 8, 3), 200, dtype=np.uint8)
    batch, kept = prepare_images(bigger, image_format)
    assert kept == image_format and batch.shape == (3, 1, 4, 4)
    assert batch.unique().tolist() == [200]  # flat colour stays flat through grey and resizing


def test_the_most_common_shorter_side_wins_and_image_size_overrides_it():
    sizes = [(8, 8), (8, 8), (6, 10)]
    items = [np.zeros(size, dtype=np.uint8) for size in sizes]
    assert prepare_images(items, None)[1].size == 8
    assert prepare_images(items, None, image_size=5)[0].shape == (3, 1, 5, 5)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        ([], "no images"),
        (np.zeros((0, 4, 4), dtype=np.uint8), "no images"),
        (np.zeros((2, 4, 4, 2), dtype=np.uint8), r"\(N, H, W, C\) with C in 1, 3, 4"),
        (np.zeros((2, 4), dtype=np.uint8), "got shape \\(2, 4\\)"),
        ([np.zeros(4, dtype=np.uint8)], "a single image must be"),
        ([{"not": "an image"}], "cannot read a dict"),
    ],
)
def test_unusable_images_are_refused(images, message):
    with pytest.raises(UserError, match=message):
        prepare_images(images, None)


def test_an_unreadable_file_is_named(tmp_path):
    (tmp_path / "notes.png").write_text("not a png")
    with pytest.raises(UserError, match="notes.png: not an image"):
        prepare_images([tmp_path / "notes.png"], None)
    with pytest.raises(UserError, match="missing.png: cannot be read"):
        prepare_images([tmp_path / "missing.png"], None)


def test_flat_rows_are_square_images_scaled_from_the_fitted_range():
    rows = np.array([[0.0, 4.0, 8.0, 16.0], [16.0, 16.0, 0.0, 0.0]])
    rule = FlatRows.fit(rows)
    assert (rule.num_features, rule.low, rule.high, rule.side) == (4, 0.0, 16.0, 2)
    images = rule.to_images(rows)
    assert images.dtype == np.uint8
    assert images[0].tolist() == [[0, 64], [128, 255]]  # 4/16·255 = 63.75 → 64
    assert rule.to_images(np.array([[-5.0, 32.0, 8.0, 8.0]]))[0, 0].tolist() == [0, 255]


def test_flat_rows_of_a_non_square_width_are_padded_with_the_low_end():
    rule = FlatRows.fit(np.array([[2.0, 3.0, 4.0], [4.0, 4.0, 4.0]]))
    assert rule.side == 2
    assert rule.to_images(np.array([[2.0, 3.0, 4.0]]))[0].tolist() == [[0, 128], [255, 0]]
    assert FlatRows.fit(np.array([[7.0]])).to_images(np.array([[7.0]])).shape == (1, 1, 1)
