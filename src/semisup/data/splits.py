"""Labeled/unlabeled splits: pure functions of (targets, num_labels, seed)."""

from __future__ import annotations

import numpy as np

from semisup.errors import UserError


def labels_per_class(class_counts: np.ndarray, num_labels: int) -> np.ndarray:
    """How many labels each class gets, by the greedy rule of the Google `create_split.py`.

    At each step the class c maximising `stats_c − n_c / max(max(n), 1)` receives the next label,
    where `stats = counts / max(counts)` and `n` counts the labels given so far. For balanced
    classes this is round-robin (exactly `num_labels / C` each, the first `num_labels % C` classes
    one more); for unbalanced training sets (SVHN) it follows the class frequencies.

    Args:
        class_counts: (C,) number of training images per class.
        num_labels: total number of labels to hand out.

    Returns:
        (C,) int64 labels per class, summing to `num_labels`.
    """
    stats = class_counts / class_counts.max()
    given = np.zeros(len(class_counts), dtype=np.int64)
    for _ in range(num_labels):
        c = int(np.argmax(stats - given / max(given.max(), 1)))
        given[c] += 1
    return given


def split_labeled(targets: np.ndarray, num_labels: int, seed: int) -> np.ndarray:
    """Chooses the labeled subset: `labels_per_class` images of each class, at random by `seed`.

    A pure function: the same (targets, num_labels, seed) always gives the same indices, and
    different seeds give different subsets. (The Google code shuffles with `np.random.seed`,
    we with `np.random.default_rng`, so index sets differ from theirs for equal seed numbers.)

    Args:
        targets: (N,) class ids of the training images.
        num_labels: total labeled images.
        seed: split seed.

    Returns:
        Sorted int64 indices into `targets`.

    Raises:
        UserError: if `num_labels` is below the number of classes or above what the data holds.
    """
    num_classes = int(targets.max()) + 1
    counts = np.bincount(targets, minlength=num_classes)
    present = int((counts > 0).sum())
    if num_labels < present:
        raise UserError(
            f"num_labels={num_labels} is less than the number of classes ({present}): every "
            f"class needs at least one label; use --num-labels {present} or more"
        )
    if num_labels > len(targets):
        raise UserError(
            f"num_labels={num_labels} is more than the {len(targets)} training images; "
            f"use --num-labels {len(targets)} or fewer"
        )
    per_class = labels_per_class(counts, num_labels)  # never more than a class holds
    rng = np.random.default_rng(seed)
    chosen = [
        rng.permutation(np.flatnonzero(targets == c))[: per_class[c]] for c in range(num_classes)
    ]
    return np.sort(np.concatenate(chosen)).astype(np.int64)
