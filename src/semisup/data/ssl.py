"""The semi-supervised view of a data set: one image pool, labeled and unlabeled index sets."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from semisup.data.base import UNKNOWN, ImageDataset
from semisup.data.splits import split_labeled

if TYPE_CHECKING:
    from semisup.data.protocols import SplitProtocol


@dataclass(frozen=True)
class SSLData:
    """Training pool plus split.

    Attributes:
        images: uint8 (P, C, H, W): the training images, then any extra unlabeled images.
        targets: int64 (P,): class ids, UNKNOWN (-1) for extra unlabeled images. Unlabeled
            images keep their true class here so the trainer can report pseudo-label accuracy;
            algorithms only ever see them as `u_y` monitoring values.
        labeled_idx: int64 (L,) indices into the pool of the labeled images.
        unlabeled_idx: int64 (U,) indices into the pool of the unlabeled images.
        test_images: uint8 (M, C, H, W) or None.
        test_targets: int64 (M,) or None.
        class_names: one per class.
        hflip: whether horizontal flips preserve labels.
        skipped_files: image files of the data set that could not be decoded and were left out.
    """

    images: Tensor
    targets: Tensor
    labeled_idx: Tensor
    unlabeled_idx: Tensor
    test_images: Tensor | None
    test_targets: Tensor | None
    class_names: tuple[str, ...]
    hflip: bool
    skipped_files: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    def labeled_class_counts(self) -> tuple[int, ...]:
        """Number of labeled images per class."""
        counts = torch.bincount(self.targets[self.labeled_idx], minlength=self.num_classes)
        return tuple(int(c) for c in counts)


def build_ssl_data(
    dataset: ImageDataset,
    num_labels: int | None,
    seed: int,
    unlabeled_includes_labeled: bool = True,
    protocol: SplitProtocol | None = None,
) -> SSLData:
    """Splits a data set into labeled and unlabeled sets.

    Args:
        dataset: the full data set.
        num_labels: total labeled images, chosen class-balanced by `split_labeled`. None keeps
            every training image labeled when the data set says so (`all_labeled`), uses the
            official folds when the data set has them (STL-10), else 4 per class (the papers'
            40-label CIFAR-10 setting). A count equal to the folds' size also uses them.
        seed: split seed.
        unlabeled_includes_labeled: as in ReMixMatch/FixMatch (and USB), the unlabeled set is the
            whole training set, labeled images included; False gives MixMatch's "training set
            minus labeled images".
        protocol: a realistic protocol (`data.protocols`: long tail, class mismatch) that
            chooses the split and may renumber classes; None: the class-balanced split above.

    Returns:
        The SSL split. Test images are never part of the pool.
    """
    targets, skipped = dataset.train_targets.numpy(), dataset.skipped_files
    if protocol is not None:
        split = protocol.split(dataset, num_labels, seed, unlabeled_includes_labeled)
        dataset, labeled, unlabeled_train = split.dataset, split.labeled, split.unlabeled
    else:
        folds = dataset.label_folds
        if num_labels is None and dataset.all_labeled:
            labeled = np.arange(len(targets), dtype=np.int64)
        elif folds and num_labels in (None, len(folds[0])):
            # The official labeled folds (STL-10: 10 x 1000), fold = seed as in the Google code.
            labeled = np.sort(folds[seed % len(folds)].numpy()).astype(np.int64)
        else:
            labeled = split_labeled(targets, num_labels or 4 * dataset.num_classes, seed)
        in_train = np.ones(len(targets), dtype=bool)
        if not unlabeled_includes_labeled:
            in_train[labeled] = False
        unlabeled_train = np.flatnonzero(in_train)
    images, pool_targets = dataset.train_images, dataset.train_targets
    if dataset.unlabeled_images is not None:
        images = join_images(images, dataset.unlabeled_images)
        extra = torch.full((len(dataset.unlabeled_images),), UNKNOWN, dtype=torch.int64)
        pool_targets = torch.cat([pool_targets, extra])
    unlabeled = np.concatenate([unlabeled_train, np.arange(len(targets), len(images))])
    return SSLData(
        images=images,
        targets=pool_targets,
        labeled_idx=torch.from_numpy(labeled),
        unlabeled_idx=torch.from_numpy(unlabeled.astype(np.int64)),
        test_images=dataset.test_images,
        test_targets=dataset.test_targets,
        class_names=dataset.class_names,
        hflip=dataset.hflip,
        skipped_files=skipped,
    )


def join_images(first: Tensor, second: Tensor) -> Tensor:
    """`first` then `second` as one tensor, like `torch.cat`.

    When `second` directly follows `first` in one storage (a folder's memory-mapped cache puts
    the unlabeled images right after the training images), the result is a view of that
    storage: a data set larger than memory is never copied into it.
    """
    adjacent = (
        first.is_contiguous()
        and second.is_contiguous()
        and first.shape[1:] == second.shape[1:]
        and first.dtype == second.dtype
        and first.device == second.device
        and first.untyped_storage().data_ptr() == second.untyped_storage().data_ptr()
        and second.storage_offset() == first.storage_offset() + first.numel()
    )
    if not adjacent:
        return torch.cat([first, second])
    shape = (len(first) + len(second), *first.shape[1:])
    stride = (math.prod(first.shape[1:]), *first.stride()[1:])
    return first.as_strided(shape, stride, first.storage_offset())
