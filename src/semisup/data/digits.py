"""scikit-learn's bundled 8x8 handwritten digits: the built-in, offline default data set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from semisup.data.base import DATASETS, ImageDataset

TEST_FRACTION = 0.25
SPLIT_SEED = 0  # fixed: the test split never depends on the run seed


@DATASETS.register("digits")
def load_digits(data_dir: str | Path | None = None) -> ImageDataset:
    """The 1,797 UCI digits shipped with scikit-learn, as (N, 1, 8, 8) uint8 images.

    The data set has no official test split, so a fixed, class-stratified 25 % of each class
    (drawn with seed 0, independent of the run seed) is the test set: 1,347 training and 450
    test images. Pixel values 0..16 are scaled to 0..255. `data_dir` is ignored (the data ships
    with scikit-learn, so this works offline).
    """
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # (N, 1, 8, 8)
    targets = bunch.target.astype(np.int64)
    rng = np.random.default_rng(SPLIT_SEED)
    test_mask = np.zeros(len(targets), dtype=bool)
    for c in range(10):
        members = rng.permutation(np.flatnonzero(targets == c))
        test_mask[members[: round(len(members) * TEST_FRACTION)]] = True
    return ImageDataset(
        train_images=torch.from_numpy(images[~test_mask]),
        train_targets=torch.from_numpy(targets[~test_mask]),
        test_images=torch.from_numpy(images[test_mask]),
        test_targets=torch.from_numpy(targets[test_mask]),
        class_names=tuple(str(c) for c in range(10)),
        hflip=False,
    )
