"""Training data given from Python: a data set of (image, label) items or a pair of arrays.

Labels are class ids 0..K−1, or −1 (`data.base.UNKNOWN`) for an unlabeled image. The images are
read once into memory as uint8 (see `api.images`) and become an `SSLData` split: the labeled
set is the images with a class id, the unlabeled set every image (FixMatch's protocol, the
default of `data.unlabeled_includes_labeled`) or only the unlabeled ones. Random horizontal flips
are off unless `augment.hflip` is set: a mirrored digit or letter can change class.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from semisup.api.images import ImageFormat, Images, prepare_images
from semisup.data.base import UNKNOWN
from semisup.data.ssl import SSLData
from semisup.errors import UserError

# A data set with __len__ and __getitem__ (a torch Dataset, a list of pairs) giving (image,
# label) items, or a tuple (images, labels).
LabeledImages = Any


def read_pairs(data: LabeledImages, what: str) -> tuple[Images, np.ndarray]:
    """The images and int64 labels of a tuple (images, labels) or of a data set of pairs.

    Args:
        data: a tuple (images, labels), or a sequence-like data set whose items are (image,
            label) pairs (a `torch.utils.data.Dataset`, a list).
        what: the argument's name, for messages.

    Raises:
        UserError: for another kind of object, items that are not pairs, non-integer labels,
            or images and labels of different lengths.
    """
    if isinstance(data, tuple):
        if len(data) != 2:
            raise UserError(f"{what} must be a pair (images, labels), got a tuple of {len(data)}")
        images, labels = data
    elif hasattr(data, "__len__") and hasattr(data, "__getitem__"):
        images, labels = _unzip(data, what)
    else:
        raise UserError(
            f"{what} must be a data set of (image, label) items or a tuple (images, labels), "
            f"got a value of type {type(data).__name__}"
        )
    label_array = _as_label_array(labels, what)
    if len(label_array) != len(images):
        raise UserError(f"{what} has {len(images)} images but {len(label_array)} labels")
    return images, label_array


def _unzip(dataset: Any, what: str) -> tuple[list[Any], list[Any]]:
    images, labels = [], []
    for index in range(len(dataset)):
        item = dataset[index]
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise UserError(
                f"item {index} of {what} is a {type(item).__name__}, not an (image, label) pair"
            )
        images.append(item[0])
        labels.append(item[1])
    return images, labels


def _as_label_array(labels: Any, what: str) -> np.ndarray:
    if isinstance(labels, Tensor):
        labels = labels.detach().cpu().numpy()
    elif isinstance(labels, Sequence) and not isinstance(labels, (str, bytes)):
        labels = [int(v) if isinstance(v, Tensor) and v.numel() == 1 else v for v in labels]
    array = np.asarray(labels)
    if array.ndim != 1 or not (array.size == 0 or _all_integers(array)):
        raise UserError(
            f"the labels of {what} must be one integer class id per image (-1: unlabeled), got "
            f"{array.dtype} values of shape {array.shape}"
        )
    return array.astype(np.int64)


def _all_integers(array: np.ndarray) -> bool:
    if array.dtype.kind in "iu":
        return True
    if array.dtype.kind == "f":
        return bool(np.isfinite(array).all() and (array == np.round(array)).all())
    return array.dtype == object and all(isinstance(v, numbers.Integral) for v in array)


def class_names_for(labels: np.ndarray, class_names: Sequence[str] | None) -> tuple[str, ...]:
    """The given class names, or "0".."K−1" for K = the largest label + 1."""
    if class_names is not None:
        return tuple(str(name) for name in class_names)
    return tuple(str(c) for c in range(int(labels.max(initial=UNKNOWN)) + 1))


def check_labels(labels: np.ndarray, class_names: tuple[str, ...], what: str) -> None:
    """Every label is −1 or a class id, two classes at least, each with a labeled image.

    Raises:
        UserError: saying which label or class is wrong.
    """
    num_classes = len(class_names)
    wrong = labels[(labels < UNKNOWN) | (labels >= num_classes)]
    if wrong.size:
        raise UserError(
            f"{what} has the label {wrong[0]}: labels must be class ids 0..{num_classes - 1} "
            f"({num_classes} class names) or -1 for unlabeled images"
        )
    counts = np.bincount(labels[labels != UNKNOWN], minlength=num_classes)
    if not counts.any():
        raise UserError(f"{what} has no labeled image (every label is -1); label some images")
    if num_classes < 2:
        raise UserError(f"{what} has a single class: a classifier needs two classes at least")
    if not counts.all():
        missing = class_names[int(np.flatnonzero(counts == 0)[0])]
        raise UserError(
            f"class {missing!r} has no labeled image in {what}: label one at least, or leave "
            "the class out of class_names"
        )


def build_split(
    images: Tensor,
    labels: np.ndarray,
    class_names: tuple[str, ...],
    unlabeled_includes_labeled: bool,
    test: tuple[Tensor, np.ndarray] | None = None,
) -> SSLData:
    """The `SSLData` of checked labels (see `check_labels`) and uint8 images.

    Args:
        images: uint8 (N, C, S, S).
        labels: int64 (N,): class ids, −1 for unlabeled images.
        class_names: one per class.
        unlabeled_includes_labeled: the unlabeled set is every image (FixMatch's protocol),
            else only the unlabeled ones.
        test: uint8 test images and their class ids, or None (then no test accuracy).
    """
    targets = torch.from_numpy(labels)
    labeled = targets != UNKNOWN
    unlabeled = torch.ones_like(labeled) if unlabeled_includes_labeled else ~labeled
    return SSLData(
        images=images,
        targets=targets,
        labeled_idx=labeled.nonzero()[:, 0],
        unlabeled_idx=unlabeled.nonzero()[:, 0],
        test_images=None if test is None else test[0],
        test_targets=None if test is None else torch.from_numpy(test[1]),
        class_names=class_names,
        hflip=False,
    )


def read_test_set(
    data: LabeledImages, image_format: ImageFormat, class_names: tuple[str, ...]
) -> tuple[Tensor, np.ndarray]:
    """Test images in the run's format and their class ids (no −1 allowed).

    Raises:
        UserError: for an unlabeled test image or a label that is not a class id.
    """
    images, labels = read_pairs(data, "test_data")
    wrong = labels[(labels < 0) | (labels >= len(class_names))]
    if wrong.size:
        raise UserError(
            f"test_data has the label {wrong[0]}: every test image needs a class id "
            f"0..{len(class_names) - 1}"
        )
    return prepare_images(images, image_format)[0], labels
