"""Using a trained run: its EMA model classifies image files, PIL images and uint8 arrays.

`load(run_dir)` rebuilds the run's network from the config stored in its checkpoint and loads the
EMA weights (the model every evaluation of the run reports). Images are prepared exactly like
the run's training data of a folder data set: `data.folder.decode` applies EXIF rotation,
composites transparency on white, converts to grey or RGB to match the model's input channels,
and resizes the centred square to the run's image side with Pillow's BICUBIC filter; the network
then sees `x · 2/255 − 1`, or its own input normalisation (a timm model's mean and std;
`models.inputs.to_model_input`), as in training.

The class names and image shape come from the run's summary.json (written when training ends);
for an unfinished run they are read from its data set instead.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor, nn

from semisup.config import Config, config_from_dict
from semisup.data.folder.decode import _decode_opened, decode_image
from semisup.engine.checkpoint import load_checkpoint
from semisup.engine.metrics import predict_logits
from semisup.errors import UserError
from semisup.models import CUSTOM_MODEL, build_model_from_section

log = logging.getLogger("semisup")

# One image: a file path, a PIL image, or a uint8 array/tensor (H, W) or (H, W, C).
ImageLike = str | Path | Image.Image | np.ndarray | Tensor


@dataclass(frozen=True)
class Predictions:
    """The predicted classes of N images.

    Attributes:
        class_indices: int64 (N,), the most probable class of each image.
        classes: the name of each image's predicted class.
        probabilities: float32 (N, K), the softmax of the EMA model's logits.
    """

    class_indices: Tensor
    classes: list[str]
    probabilities: Tensor

    @property
    def confidences(self) -> Tensor:
        """float32 (N,), the probability of each predicted class."""
        return self.probabilities.gather(1, self.class_indices[:, None])[:, 0]

    def __len__(self) -> int:
        return len(self.class_indices)


class TrainedModel:
    """A run's EMA model, ready to classify images (see `load`).

    Attributes:
        model: the network in eval mode on `device`; it takes `to_model_input` of uint8 images
            (with its `input_normalization`) and returns logits. `predict` does all of it.
        class_names: one name per class index.
        image_shape: (C, S, S) of the images the network was trained on.
        device: where `model` runs.
        step: the optimizer step of the checkpoint.
    """

    def __init__(
        self,
        model: nn.Module,
        class_names: Sequence[str],
        image_shape: Sequence[int],
        device: torch.device,
        step: int = 0,
    ) -> None:
        channels, height, width = (int(s) for s in image_shape)
        if height != width:
            raise ValueError(f"runs train on square images, got image_shape {tuple(image_shape)}")
        self.model = model.to(device).eval()
        self.class_names = tuple(class_names)
        self.image_shape = (channels, height, width)
        self.device = device
        self.step = step

    def preprocess(self, images: ImageLike | Sequence[ImageLike]) -> Tensor:
        """The uint8 (N, C, S, S) batch the network takes, prepared like the training data.

        Args:
            images: one image or a sequence of them (file paths, PIL images, uint8 arrays or
                tensors (H, W) or (H, W, C)), or a uint8 batch (N, C, H, W).

        Raises:
            UserError: for a file that cannot be read or decoded, or an array of another dtype
                or shape.
        """
        channels, size, _ = self.image_shape
        if isinstance(images, (np.ndarray, Tensor)) and images.ndim == 4:
            batch = _as_uint8_array(images)
            if batch.shape[1:] == self.image_shape:
                return torch.from_numpy(np.ascontiguousarray(batch))
            items: Sequence[ImageLike] = list(batch.transpose(0, 2, 3, 1))
        elif isinstance(images, (str, Path, Image.Image, np.ndarray, Tensor)):
            items = [images]
        else:
            items = list(images)
        arrays = [prepare_image(item, size, channels) for item in items]
        if not arrays:
            return torch.empty((0, *self.image_shape), dtype=torch.uint8)
        return torch.from_numpy(np.stack(arrays))

    def predict(
        self, images: ImageLike | Sequence[ImageLike], batch_size: int = 256
    ) -> Predictions:
        """Classifies images with the EMA model in full precision.

        Args:
            images: as for `preprocess`.
            batch_size: images per forward pass.
        """
        batch = self.preprocess(images)
        if len(batch) == 0:
            probabilities = torch.empty((0, len(self.class_names)))
        else:
            logits = predict_logits(self.model, batch, batch_size, self.device)
            probabilities = logits.softmax(dim=1)
        indices = probabilities.argmax(dim=1)
        names = [self.class_names[i] for i in indices.tolist()]
        return Predictions(class_indices=indices, classes=names, probabilities=probabilities)


def load(
    run_dir: str | Path, device: str | torch.device = "auto", model: nn.Module | None = None
) -> TrainedModel:
    """Loads the EMA model of a `semisup train` (or `semisup.train`) run.

    Args:
        run_dir: the run directory (the `--out` of `semisup train`), holding checkpoint.pt.
        device: "auto" (CUDA when available), "cpu", "cuda" or "cuda:N".
        model: a network of the run's architecture to load the EMA weights into, instead of the
            one its config names. Needed for a run trained on a module passed to
            `semisup.train(model=...)` (config `model.name: custom`), which no config rebuilds.

    Raises:
        UserError: when the directory holds no readable checkpoint, its weights do not fit the
            model, or the run trained a custom module and `model` is not given.
    """
    from semisup.engine.runtime import resolve_device

    device = resolve_device(str(device))
    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist")
    checkpoint = run_dir / "checkpoint.pt"
    if not checkpoint.is_file():
        raise UserError(
            f"{run_dir} holds no checkpoint.pt: give the --out directory of a `semisup train` "
            "run that has reached its first evaluation (every train.eval_every steps)"
        )
    state = load_checkpoint(checkpoint)
    cfg = config_from_dict(state["config"])
    class_names, image_shape = run_class_names_and_shape(run_dir, cfg)
    if model is None:
        model = _build_configured(cfg.model, run_dir, len(class_names), image_shape[0])
        described = f"the {cfg.model['name']} model of its config"
    else:
        described = f"the given {type(model).__name__}"
    try:
        model.load_state_dict(state["ema"])
    except RuntimeError as e:
        raise UserError(
            f"the EMA weights in {checkpoint} do not fit {described} for "
            f"{len(class_names)} classes and images {tuple(image_shape)} "
            f"({str(e).splitlines()[0]}); is summary.json from another run?"
        ) from e
    return TrainedModel(model, class_names, image_shape, device, state["step"])


def _build_configured(
    section: dict[str, Any], run_dir: Path, num_classes: int, in_channels: int
) -> nn.Module:
    """The registered model of a run's `model` config section."""
    if section["name"] == CUSTOM_MODEL:
        cls = section.get("class", "a module")
        example = f"semisup.load({str(run_dir)!r}, model=<a new {cls.rpartition('.')[2]}>)"
        raise UserError(
            f"{run_dir} trained a custom module ({cls}) that its config cannot rebuild: load it "
            f"from Python with {example}"
        )
    return build_model_from_section(section, num_classes, in_channels)


def run_class_names_and_shape(run_dir: Path, cfg: Config) -> tuple[list[str], list[int]]:
    """A run's class names and image shape (C, H, W).

    From summary.json, else (an unfinished run) from the run's data set and split.
    """
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        summary = {}
    if isinstance(summary, dict) and "class_names" in summary and "image_shape" in summary:
        return list(summary["class_names"]), list(summary["image_shape"])
    log.info("%s has no summary.json with the image shape: reading its data set", run_dir)
    from semisup.data.build import build_data

    data = build_data(cfg.data, cfg.split_seed)
    return list(data.class_names), list(data.images.shape[1:])


def read_image_file(path: str | Path, size: int, channels: int) -> np.ndarray:
    """Decodes an image file to uint8 (channels, size, size) like a folder data set's images.

    Raises:
        UserError: naming the file, when it is missing, unreadable, not an image or corrupt.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory") from None
    except OSError as e:
        raise UserError(f"{path}: cannot be read ({e.strerror or e})") from e
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module="PIL")
            return decode_image(data, size, channels)
    except UnidentifiedImageError:
        raise UserError(f"{path}: not an image file (Pillow cannot identify its format)") from None
    except Exception as e:  # any decoder failure means a corrupt or truncated file
        raise UserError(f"{path}: corrupt or truncated image ({type(e).__name__}: {e})") from e


def prepare_image(image: ImageLike, size: int, channels: int) -> np.ndarray:
    """One image (path, PIL image, uint8 (H, W) or (H, W, C)) as uint8 (channels, size, size).

    PIL images and arrays take the same conversion and resizing as files (see
    `data.folder.decode`); a PIL image is copied, never changed.

    Raises:
        UserError: for an unreadable file or an array of another dtype or shape.
    """
    if isinstance(image, (str, Path)):
        return read_image_file(image, size, channels)
    if isinstance(image, Image.Image):
        return _decode_opened(image.copy(), size, channels)
    if isinstance(image, (np.ndarray, Tensor)):
        array = _as_uint8_array(image)
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[:, :, 0]
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
            raise UserError(
                f"an image array must be (H, W) or (H, W, C) with C in 1, 3, 4 (or a batch "
                f"(N, C, H, W)), got shape {tuple(array.shape)}"
            )
        return _decode_opened(Image.fromarray(np.ascontiguousarray(array)), size, channels)
    raise UserError(
        f"cannot classify a {type(image).__name__}: give file paths, PIL images or uint8 arrays"
    )


def _as_uint8_array(images: np.ndarray | Tensor) -> np.ndarray:
    is_tensor = isinstance(images, Tensor)
    if images.dtype != (torch.uint8 if is_tensor else np.uint8):
        raise UserError(
            f"image arrays must be uint8 with values 0..255, got {images.dtype}; convert them "
            "first, e.g. (x * 255).round().astype(np.uint8) for floats in [0, 1]"
        )
    return images.detach().cpu().numpy() if is_tensor else images
