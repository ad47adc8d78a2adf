"""Images given from Python, as the uint8 (N, C, S, S) batches the trainer and models take.

Accepted forms:

- a NumPy batch (N, H, W) (grey) or (N, H, W, C) with C = 1, 3 or 4: channels last, as PIL,
  scikit-learn and matplotlib store images;
- a torch batch (N, H, W) or (N, C, H, W): channels first, as torchvision stores them;
- a sequence of single images: file paths, PIL images, NumPy arrays (H, W) or (H, W, C), torch
  tensors (H, W) or (C, H, W).

Pixel values are uint8 (or another integer type) in 0..255, or floats in [0, 1], which are
scaled by 255 and rounded; NaN, infinity and values out of range are errors.

The training images fix the run's `ImageFormat`: 1 channel when every image is grey, else 3
(transparency is composited on white), and the side S (`image_size`, else the side of equal
square images, else the most common shorter side; `data.folder.dataset.choose_size`). Every
image, at training and at prediction, is converted to that format exactly as a folder data set's
files and `semisup predict`'s are (`inference.prepare_image`: centred square, BICUBIC resize).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from semisup.data.folder.dataset import choose_size
from semisup.data.folder.decode import GREY_MODES, Probe, probe_image
from semisup.errors import UserError
from semisup.inference import ImageLike, prepare_image

# A batch (NumPy channels last, torch channels first) or a sequence of single images.
Images = np.ndarray | Tensor | Sequence[Any]


@dataclass(frozen=True)
class ImageFormat:
    """The channel count and square side every image of a run is converted to."""

    channels: int
    size: int

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, S, S), the shape of one image as the model takes it."""
        return self.channels, self.size, self.size


def as_uint8(array: np.ndarray) -> np.ndarray:
    """Pixel values as uint8: integers 0..255 as they are, floats in [0, 1] times 255, rounded.

    Raises:
        UserError: for NaN or infinite values, values out of range, or a non-numeric dtype.
    """
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind in "iu":
        if array.size and (array.min() < 0 or array.max() > 255):
            raise UserError(
                f"integer images must hold values 0..255, got {array.min()}..{array.max()}"
            )
        return array.astype(np.uint8)
    if array.dtype.kind != "f":
        raise UserError(
            f"images must be uint8 (0..255) or floats in [0, 1], got dtype {array.dtype}"
        )
    if not np.isfinite(array).all():
        raise UserError("the images contain NaN or infinite values; replace or drop them")
    if array.size and (array.min() < 0.0 or array.max() > 1.0):
        raise UserError(
            f"float images must hold values in [0, 1], got {array.min():.4g}..{array.max():.4g}; "
            "divide 0..255 values by 255 (or pass them as uint8)"
        )
    return np.rint(array * 255.0).astype(np.uint8)


def prepare_images(
    images: Images, image_format: ImageFormat | None, image_size: int | None = None
) -> tuple[Tensor, ImageFormat]:
    """The images as a uint8 (N, C, S, S) tensor, and the format they were converted to.

    Args:
        images: a batch or a sequence of images (see the module docstring).
        image_format: the format to convert to (a trained run's); None: chosen from `images`
            (training), with side `image_size` when given.
        image_size: the side S when `image_format` is None (None: from the images).

    Raises:
        UserError: for no images, a batch of another rank, an unsupported image or pixel values
            out of range.
    """
    batch = _as_channels_last_batch(images)
    if batch is None:
        items = [_as_item(image) for image in images]  # type: ignore[union-attr]
        batch = _stack_equal_arrays(items)
        if batch is None:
            return _from_items(items, image_format, image_size)
    if len(batch) == 0:
        raise UserError("no images given: pass at least one image")
    if image_format is None:
        grey = batch.ndim == 3 or batch.shape[3] == 1
        probe = Probe(width=batch.shape[2], height=batch.shape[1], grey=grey)
        image_format = _choose_format([probe], image_size)
    if _matches(batch, image_format):
        pixels = batch.reshape(*batch.shape[:3], -1).transpose(0, 3, 1, 2)
        return torch.from_numpy(np.ascontiguousarray(pixels)), image_format
    return _from_items(list(batch), image_format, image_size)


def _from_items(
    items: list[ImageLike], image_format: ImageFormat | None, image_size: int | None
) -> tuple[Tensor, ImageFormat]:
    """Single images converted one by one (decoded, converted and resized with Pillow)."""
    if not items:
        raise UserError("no images given: pass at least one image")
    if image_format is None:
        image_format = _choose_format([_probe(item) for item in items], image_size)
    channels, size = image_format.channels, image_format.size
    arrays = [prepare_image(item, size, channels) for item in items]
    return torch.from_numpy(np.stack(arrays)), image_format


def _choose_format(probes: list[Probe], image_size: int | None) -> ImageFormat:
    """1 channel when every image is grey (else 3); side `image_size` or `choose_size`'s."""
    channels = 1 if all(p.grey for p in probes) else 3
    return ImageFormat(channels, image_size or choose_size(probes))


def _stack_equal_arrays(items: list[ImageLike]) -> np.ndarray | None:
    """Single arrays of one shape as one batch (converted at once); None for anything else."""
    arrays = [item for item in items if isinstance(item, np.ndarray)]
    if not arrays or len(arrays) < len(items) or len({a.shape for a in arrays}) > 1:
        return None
    return np.stack(arrays)


def _as_channels_last_batch(images: Images) -> np.ndarray | None:
    """A NumPy or torch batch as uint8 (N, H, W) or (N, H, W, C); None for a sequence."""
    if isinstance(images, Tensor):
        if images.dim() == 4:
            images = images.permute(0, 2, 3, 1)
        array = images.detach().cpu().numpy()
    elif isinstance(images, np.ndarray):
        array = images
    else:
        return None
    if array.ndim not in (3, 4) or (array.ndim == 4 and array.shape[3] not in (1, 3, 4)):
        raise UserError(
            "an image batch must be (N, H, W) or (N, H, W, C) with C in 1, 3, 4 (NumPy) or "
            f"(N, C, H, W) (torch), got shape {tuple(images.shape)}"
        )
    return as_uint8(array)


def _as_item(image: object) -> ImageLike:
    """One image of a sequence: paths and PIL images as they are, arrays as uint8 (H, W[, C])."""
    if isinstance(image, (str, Path, Image.Image)):
        return image
    if isinstance(image, Tensor):
        image = image.detach().cpu()
        image = (image.permute(1, 2, 0) if image.dim() == 3 else image).numpy()
    if isinstance(image, np.ndarray):
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
            raise UserError(
                "a single image must be (H, W) or (H, W, C) with C in 1, 3, 4 (NumPy) or "
                f"(C, H, W) (torch), got shape {tuple(image.shape)}"
            )
        return as_uint8(image)
    raise UserError(
        f"cannot read a {type(image).__name__} as an image: give file paths, PIL images, "
        "NumPy arrays or torch tensors"
    )


def _probe(item: ImageLike) -> Probe:
    """Size and greyness of one image (a file's header is read)."""
    if isinstance(item, Image.Image):
        return Probe(item.width, item.height, item.mode in GREY_MODES)
    if isinstance(item, np.ndarray):
        return Probe(item.shape[1], item.shape[0], item.ndim == 2 or item.shape[2] == 1)
    try:
        data = Path(item).read_bytes()  # type: ignore[arg-type]
    except OSError as e:
        raise UserError(f"{item}: cannot be read ({e.strerror or e})") from e
    try:
        return probe_image(data)[0]
    except Exception as e:  # Pillow raises many types for files that are not images
        raise UserError(f"{item}: not an image, or a corrupt one ({type(e).__name__})") from e


def _matches(batch: np.ndarray, image_format: ImageFormat) -> bool:
    """Whether a channels-last batch already has the format's side and channel count."""
    channels = 1 if batch.ndim == 3 else batch.shape[3]
    side = image_format.size
    return batch.shape[1:3] == (side, side) and channels == image_format.channels
