"""The in-memory image data set every loader returns, and the data set registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from semisup.registry import Registry

UNKNOWN = -1  # target of an unlabeled image whose class is not known


@dataclass(frozen=True)
class ImageDataset:
    """A labeled image classification data set as uint8 tensors (in memory, or memory-mapped).

    Attributes:
        train_images: uint8 tensor (N, C, H, W) of training images that carry labels. For
            research data sets the SSL split later hides most of these labels.
        train_targets: int64 tensor (N,) with class ids in [0, num_classes).
        test_images: uint8 tensor (M, C, H, W), or None when the data set has no test split.
        test_targets: int64 tensor (M,), or None.
        class_names: one name per class id.
        hflip: whether a horizontal flip preserves the label (False for digits and SVHN).
        unlabeled_images: uint8 tensor (U, C, H, W) of extra images that never had labels
            (STL-10's unlabeled split, a folder's `unlabeled/`), or None.
        all_labeled: True when every training image is meant to be labeled (a folder's
            `labeled/` directory): the split then keeps all of them unless `num_labels` is set.
        label_folds: official predefined labeled index sets into the training images, e.g.
            STL-10's 10 folds of 1000 (int64 tensors), or None.
        skipped_files: paths of image files that could not be decoded and were left out
            (corrupt or truncated files of a user's folder).
    """

    train_images: Tensor
    train_targets: Tensor
    test_images: Tensor | None
    test_targets: Tensor | None
    class_names: tuple[str, ...]
    hflip: bool = True
    unlabeled_images: Tensor | None = None
    all_labeled: bool = False
    label_folds: tuple[Tensor, ...] | None = None
    skipped_files: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("train_images", "test_images", "unlabeled_images"):
            images = getattr(self, name)
            if images is not None and (images.dtype != torch.uint8 or images.dim() != 4):
                raise ValueError(f"{name} must be a uint8 (N, C, H, W) tensor")
        if len(self.train_images) != len(self.train_targets):
            raise ValueError("train_images and train_targets differ in length")

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image."""
        c, h, w = self.train_images.shape[1:]
        return int(c), int(h), int(w)


# A loader takes the data directory (None for built-in data) and keyword options, and returns
# an ImageDataset. Options come from the `data.*` config section.
DatasetLoader = Callable[..., ImageDataset]
DATASETS: Registry[DatasetLoader] = Registry("dataset")


def resolve_dir(data_dir: str | Path, name: str) -> Path:
    """Where data set `name` lives under `data_dir`: `data_dir/name` if it exists, else `data_dir`.

    This accepts both `--data-dir ~/data` (holding `mnist/`, `cifar10/`, ...) and
    `--data-dir ~/data/mnist` (holding the files themselves).
    """
    root = Path(data_dir).expanduser()
    return root / name if (root / name).is_dir() else root
