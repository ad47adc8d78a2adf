"""Realistic evaluation protocols: long-tailed classes and class mismatch.

Each protocol is a pure function of (data set, num_labels, seed): it decides which training
images are labeled and which are unlabeled, and may relabel classes (class mismatch keeps only
the labeled classes, renumbered). `build_ssl_data` applies it before assembling the pool.

* `LongTail` (CIFAR-10-LT of Cui et al. 2019, used by CReST and UDAL; docs/algorithms.md#long-tail):
  class k keeps N_k = int(N_1 · γ^(−k/(C−1))) random images, ceil(β · N_k) of them labeled;
  or, with separate head sizes (DARP, Kim et al. 2020, bbuing9/DARP `train.py`), class k has
  int(N_1 · γ^(−k/(C−1))) labeled and int(M_1 · γ^(−k/(C−1))) unlabeled images, the first
  ones of the class in the data set's order.
* `ClassMismatch` (Oliver et al. 2018, used by RealMix; docs/algorithms.md#class-mismatch): 6
  labeled classes; the unlabeled set holds 4 classes, of which `percent` % are classes with no
  labels at all.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import torch

from semisup.data.base import UNKNOWN, ImageDataset
from semisup.data.splits import labels_per_class, split_labeled
from semisup.errors import UserError


@dataclass(frozen=True)
class ProtocolSplit:
    """A protocol's view of the data set and its split.

    Attributes:
        dataset: the data set as the run sees it (classes may be renumbered, test set reduced).
        labeled: int64 indices into `dataset.train_images` of the labeled images.
        unlabeled: int64 indices into `dataset.train_images` of the unlabeled images.
    """

    dataset: ImageDataset
    labeled: np.ndarray
    unlabeled: np.ndarray


class SplitProtocol(Protocol):
    """Anything that splits a data set into labeled and unlabeled images."""

    def split(
        self,
        dataset: ImageDataset,
        num_labels: int | None,
        seed: int,
        unlabeled_includes_labeled: bool,
    ) -> ProtocolSplit: ...


def long_tail_counts(max_count: int, num_classes: int, imbalance_ratio: float) -> np.ndarray:
    """Images per class of a long-tailed set: N_k = int(N_1 · (1/γ)^(k/(C−1))), k = 0..C−1.

    The exact expression of Cui et al.'s `generate_cifar_tfrecords_im.py` (CReST's data), so
    CIFAR-10 with γ=100 gives [5000, 2997, ..., 83, 50] (docs/algorithms.md#numeric-checks CR1).
    """
    exponents = np.arange(num_classes) / max(num_classes - 1.0, 1.0)
    return np.array([int(max_count * (1.0 / imbalance_ratio) ** e) for e in exponents])


def fraction_of(counts: np.ndarray, fraction: float) -> np.ndarray:
    """ceil(fraction · N_k) per class (CReST's labeled part), robust to float round-off."""
    return np.array([math.ceil(round(fraction * int(n), 9)) for n in counts], dtype=np.int64)


@dataclass(frozen=True)
class LongTail:
    """Long-tailed labeled and unlabeled sets with a balanced test set (CReST / UDAL protocol).

    Class k (class 0 is the head) keeps N_k = int(N_1 · γ^(−k/(C−1))) training images chosen at
    random by the split seed, where N_1 is the smallest class count of the data set (5000 on
    CIFAR-10, so N is exactly CIFAR-10-LT's). Of those, ceil(`labeled_fraction` · N_k) are
    labeled, or, with `num_labels` instead, `labels_per_class` (frequency-following) of them.

    The unlabeled set:
        - "same" (CReST, UDAL): the other N_k − L_k images of the long-tailed set; with
          `unlabeled_includes_labeled` (the default) all N_k, because the CReST code (on which
          UDAL is built) streams the whole training set, labeled images included, as unlabeled
          data (docs/algorithms.md#crest, step 1). The profile is the same either way up to the
          labels.
        - "reversed" (DARP / USB protocol): class k gets as many unlabeled images as the
          "same" rule gives class C−1−k, drawn from class k's images outside the labeled set.
        - "uniform": every class gets as many as the "same" rule gives the head class.
        Reversed and uniform profiles are drawn apart from the labeled images: adding the
        labeled images would undo the profile, so `unlabeled_includes_labeled` must be False.

    With head sizes (the DARP protocol, bbuing9/DARP `train.py` `make_imb_data` and
    `dataset/all_cifar10.py` `train_split`; also USB's CIFAR-10-LT) class k has
    L_k = int(`labeled_head` · γ^(−k/(C−1))) labeled images and U_k = int(`unlabeled_head` ·
    γ^(−k/(C−1))) unlabeled ones besides them, ordered as `unlabeled_imbalance` says (DARP's
    Table 2 "uniform" is U_1 for every class). The unlabeled set is those U_k images, plus the
    labeled ones with `unlabeled_includes_labeled`, which DARP's FixMatch does (its
    `train_split(..., fix=True)` takes the first L_k + U_k images of the class), for every
    profile. DARP: γ = 100, N_1 = 1500, M_1 = 3000 on CIFAR-10.

    `order` picks which images of a class are used: "random" (a draw by the split seed, as
    CReST's data and USB) or "first" (the first images of the class in the data set's stored
    order, as DARP: the split is then the same for every seed).

    Args:
        imbalance_ratio: γ = N_1 / N_C (≥ 1); None keeps the data set's own class counts.
        labeled_fraction: β, labeled fraction of each class; None: use `num_labels`.
        unlabeled_imbalance: class profile of the unlabeled set.
        labeled_head: N_1, labeled images of the head class (with `unlabeled_head`).
        unlabeled_head: M_1, unlabeled images of the head class (with `labeled_head`).
        order: "random" or "first" images of each class.
    """

    imbalance_ratio: float | None
    labeled_fraction: float | None
    unlabeled_imbalance: Literal["same", "reversed", "uniform"] = "same"
    labeled_head: int | None = None
    unlabeled_head: int | None = None
    order: Literal["random", "first"] = "random"

    def split(
        self,
        dataset: ImageDataset,
        num_labels: int | None,
        seed: int,
        unlabeled_includes_labeled: bool,
    ) -> ProtocolSplit:
        self._check(unlabeled_includes_labeled)
        _check_no_extra_unlabeled(dataset)
        targets = dataset.train_targets.numpy()
        if self.labeled_head is not None and self.unlabeled_head is not None:
            labeled_counts, rest = self._head_counts(dataset.num_classes, num_labels)
        else:
            labeled_counts, rest = self._fraction_counts(targets, dataset.num_classes, num_labels)
        unlabeled_counts = {
            "same": rest,
            "reversed": rest[::-1],
            "uniform": np.full_like(rest, rest.max()),
        }[self.unlabeled_imbalance]

        rng = np.random.default_rng(seed)
        labeled, unlabeled = [], []
        for c in range(dataset.num_classes):
            members = np.flatnonzero(targets == c)
            order = rng.permutation(members) if self.order == "random" else members
            n_labeled, n_unlabeled = int(labeled_counts[c]), int(unlabeled_counts[c])
            if n_labeled + n_unlabeled > len(order):
                fix = (
                    "lower data.labeled_head/unlabeled_head"
                    if self.labeled_head is not None
                    else f"set data.imbalance_ratio (profile {self.unlabeled_imbalance})"
                )
                raise UserError(
                    f"class {dataset.class_names[c]} has {len(order)} images, fewer than the "
                    f"{n_labeled} labeled + {n_unlabeled} unlabeled the split asks for; {fix}"
                )
            labeled.append(order[:n_labeled])
            start = 0 if unlabeled_includes_labeled else n_labeled
            unlabeled.append(order[start : n_labeled + n_unlabeled])
        return ProtocolSplit(dataset, _sorted(labeled), _sorted(unlabeled))

    def _head_counts(
        self, num_classes: int, num_labels: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(L_k, U_k) from the head sizes: DARP's `make_imb_data(N_1, C, γ)` and (M_1, C, γ)."""
        assert self.labeled_head is not None and self.unlabeled_head is not None
        gamma = 1.0 if self.imbalance_ratio is None else self.imbalance_ratio
        labeled_counts = long_tail_counts(self.labeled_head, num_classes, gamma)
        if labeled_counts.min() < 1:
            raise UserError(
                f"data.labeled_head={self.labeled_head} with data.imbalance_ratio={gamma} leaves "
                f"the rarest class no label; use a head of at least {math.ceil(gamma)}"
            )
        if num_labels is not None and num_labels != labeled_counts.sum():
            raise UserError(
                f"data.num_labels={num_labels} disagrees with data.labeled_head="
                f"{self.labeled_head}, which labels {labeled_counts.sum()} images; set only one "
                "of them"
            )
        return labeled_counts, long_tail_counts(self.unlabeled_head, num_classes, gamma)

    def _fraction_counts(
        self, targets: np.ndarray, num_classes: int, num_labels: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(L_k, N_k − L_k) of the CReST split: N_k long-tailed, L_k by fraction or num_labels."""
        available = np.bincount(targets, minlength=num_classes)
        if self.imbalance_ratio is None:
            kept = available
        else:
            kept = long_tail_counts(int(available.min()), num_classes, self.imbalance_ratio)
            if kept.min() < 1:
                raise UserError(
                    f"data.imbalance_ratio={self.imbalance_ratio} leaves the rarest classes no "
                    f"image (N_1 = {available.min()}); use a ratio of at most {available.min()}"
                )
        if self.labeled_fraction is not None:
            labeled_counts = fraction_of(kept, self.labeled_fraction)
            # A resolved config (config.yaml) records the resulting total as num_labels.
            if num_labels is not None and num_labels != labeled_counts.sum():
                raise UserError(
                    f"data.num_labels={num_labels} disagrees with data.labeled_fraction="
                    f"{self.labeled_fraction}, which labels {labeled_counts.sum()} images; "
                    "set only one of them"
                )
        else:
            labeled_counts = labels_per_class(kept, _check_num_labels(num_labels, kept))
        return labeled_counts, kept - labeled_counts

    def _check(self, unlabeled_includes_labeled: bool) -> None:
        if self.imbalance_ratio is not None and self.imbalance_ratio < 1:
            raise UserError(
                f"data.imbalance_ratio must be at least 1 (N_1 / N_C), got {self.imbalance_ratio}"
            )
        if self.labeled_fraction is not None and not 0 < self.labeled_fraction <= 1:
            raise UserError(f"data.labeled_fraction must be in (0, 1], got {self.labeled_fraction}")
        heads = (self.labeled_head, self.unlabeled_head)
        if (heads[0] is None) != (heads[1] is None):
            raise UserError(
                "data.labeled_head and data.unlabeled_head go together (DARP: 1500 and 3000); "
                f"got {heads[0]} and {heads[1]}"
            )
        if heads[0] is not None and (min(heads) < 1 or self.labeled_fraction is not None):
            raise UserError(
                f"data.labeled_head/unlabeled_head must be positive and replace "
                f"data.labeled_fraction; got {heads[0]}, {heads[1]} and {self.labeled_fraction}"
            )
        if self.unlabeled_imbalance != "same" and unlabeled_includes_labeled and heads[0] is None:
            raise UserError(
                f"data.unlabeled_imbalance={self.unlabeled_imbalance} draws the unlabeled set "
                "apart from the labeled images (DARP protocol); add "
                "data.unlabeled_includes_labeled=false"
            )


@dataclass(frozen=True)
class MismatchPreset:
    """Which classes are labeled, and which 4 classes make up the unlabeled set.

    At m % mismatch the first m % of `unlabeled_in` are replaced, in order, by as many classes
    of `unlabeled_out` (classes that have no labels). Classes are named, so a preset applies to
    every data set with these class names (e.g. CIFAR-10 from its tarball or an image folder).
    """

    labeled: tuple[str, ...]
    unlabeled_in: tuple[str, ...]
    unlabeled_out: tuple[str, ...]

    def unlabeled_classes(self, percent: int) -> tuple[str, ...]:
        """The unlabeled classes at `percent` % mismatch."""
        replaced = percent * len(self.unlabeled_in) / 100
        if percent < 0 or percent > 100 or replaced != int(replaced):
            steps = ", ".join(str(100 * i // len(self.unlabeled_in)) for i in range(5))
            raise UserError(f"data.mismatch must be one of {steps} (percent), got {percent}")
        k = int(replaced)
        return self.unlabeled_out[:k] + self.unlabeled_in[k:]


MISMATCH_PRESETS: dict[str, MismatchPreset] = {
    # RealMix Fig. 2 / Oliver et al.: 6 animals labeled; 0 % {deer, dog, frog, horse},
    # 25 % {airplane, dog, frog, horse}, ..., 100 % {airplane, automobile, ship, truck}.
    "animals": MismatchPreset(
        labeled=("bird", "cat", "deer", "dog", "frog", "horse"),
        unlabeled_in=("deer", "dog", "frog", "horse"),
        unlabeled_out=("airplane", "automobile", "ship", "truck"),
    ),
    # Fashion-MNIST analogue: 6 garments labeled, out-of-distribution = shoes and bags.
    "clothing": MismatchPreset(
        labeled=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Shirt"),
        unlabeled_in=("Pullover", "Dress", "Coat", "Shirt"),
        unlabeled_out=("Sandal", "Sneaker", "Bag", "Ankle boot"),
    ),
    # MNIST (and the built-in digits): digits 0-5 labeled, 6-9 out of distribution.
    "digits": MismatchPreset(
        labeled=("0", "1", "2", "3", "4", "5"),
        unlabeled_in=("2", "3", "4", "5"),
        unlabeled_out=("6", "7", "8", "9"),
    ),
}


def find_mismatch_preset(name: str, class_names: tuple[str, ...]) -> MismatchPreset:
    """The preset called `name`, or for "auto" the first one whose classes the data set has."""
    presets = ", ".join(["auto", *MISMATCH_PRESETS])
    if name == "auto":
        for preset in MISMATCH_PRESETS.values():
            if set(preset.labeled + preset.unlabeled_out) <= set(class_names):
                return preset
        raise UserError(
            f"no class-mismatch preset fits the classes {', '.join(class_names)}; "
            f"presets: {presets}"
        )
    if name not in MISMATCH_PRESETS:
        raise UserError(f"unknown data.mismatch_preset '{name}'. Valid presets: {presets}")
    preset = MISMATCH_PRESETS[name]
    missing = sorted(set(preset.labeled + preset.unlabeled_out) - set(class_names))
    if missing:
        raise UserError(
            f"data.mismatch_preset={name} needs classes this data set lacks: {', '.join(missing)}"
        )
    return preset


@dataclass(frozen=True)
class ClassMismatch:
    """Oliver et al.'s class-mismatch protocol (RealMix §4.2.2): unlabeled data from other classes.

    Labeled: `num_labels` images of the preset's 6 labeled classes, class-balanced (RealMix:
    2400 = 400 per class on CIFAR-10). Unlabeled: every training image of the 4 unlabeled
    classes at `percent` % mismatch, minus the labeled ones unless `unlabeled_includes_labeled`
    (RealMix/MixMatch use False). Test: the test images of the labeled classes only.

    The labeled classes are renumbered 0..5 in preset order, so the model has a 6-way head and
    accuracy, balanced accuracy and logit adjustment concern the 6 classes only. (Oliver et al.
    keep a 10-way head whose 4 extra outputs never see a label; a 6-way head is the cleaner
    equivalent.) Unlabeled images of the other classes get the target −1 (unknown), so
    pseudo-label accuracy is measured on the in-distribution unlabeled images.

    Args:
        percent: 0, 25, 50, 75 or 100: share of the 4 unlabeled classes that have no labels.
        preset: a name in `MISMATCH_PRESETS`, or "auto" (chosen by the data set's class names).
    """

    percent: int
    preset: str = "auto"

    def split(
        self,
        dataset: ImageDataset,
        num_labels: int | None,
        seed: int,
        unlabeled_includes_labeled: bool,
    ) -> ProtocolSplit:
        _check_no_extra_unlabeled(dataset)
        preset = find_mismatch_preset(self.preset, dataset.class_names)
        ids = {name: i for i, name in enumerate(dataset.class_names)}
        unlabeled_ids = [ids[name] for name in preset.unlabeled_classes(self.percent)]
        old_to_new = np.full(dataset.num_classes, UNKNOWN, dtype=np.int64)
        old_to_new[[ids[name] for name in preset.labeled]] = np.arange(len(preset.labeled))

        targets = old_to_new[dataset.train_targets.numpy()]
        candidates = np.flatnonzero(targets != UNKNOWN)
        num_labels = num_labels or 4 * len(preset.labeled)
        labeled = candidates[split_labeled(targets[candidates], num_labels, seed)]
        in_unlabeled = np.isin(dataset.train_targets.numpy(), unlabeled_ids)
        if not unlabeled_includes_labeled:
            in_unlabeled[labeled] = False

        test_images, test_targets = dataset.test_images, dataset.test_targets
        if test_images is not None and test_targets is not None:
            test_new = old_to_new[test_targets.numpy()]
            keep = torch.from_numpy(test_new != UNKNOWN)
            test_images, test_targets = test_images[keep], torch.from_numpy(test_new)[keep]
        relabeled = dataclasses.replace(
            dataset,
            train_targets=torch.from_numpy(targets),
            test_images=test_images,
            test_targets=test_targets,
            class_names=preset.labeled,
            label_folds=None,
        )
        return ProtocolSplit(relabeled, labeled, np.flatnonzero(in_unlabeled))


def build_protocol(
    imbalance_ratio: float | None,
    labeled_fraction: float | None,
    unlabeled_imbalance: Literal["same", "reversed", "uniform"],
    mismatch: int | None,
    mismatch_preset: str,
    labeled_head: int | None = None,
    unlabeled_head: int | None = None,
    split_order: Literal["random", "first"] = "random",
) -> SplitProtocol | None:
    """The protocol the `data.*` options ask for, or None for the plain class-balanced split."""
    long_tail = any(
        v is not None for v in (imbalance_ratio, labeled_fraction, labeled_head, unlabeled_head)
    )
    if long_tail and mismatch is not None:
        raise UserError(
            "data.mismatch cannot be combined with data.imbalance_ratio/labeled_fraction; "
            "choose one protocol"
        )
    if mismatch is not None:
        return ClassMismatch(mismatch, mismatch_preset)
    if mismatch_preset != "auto":
        raise UserError(
            f"data.mismatch_preset={mismatch_preset} needs data.mismatch (0, 25, 50, 75 or 100)"
        )
    if long_tail:
        return LongTail(
            imbalance_ratio,
            labeled_fraction,
            unlabeled_imbalance,
            labeled_head,
            unlabeled_head,
            split_order,
        )
    if split_order != "random":
        raise UserError(
            "data.split_order=first needs a long-tailed split: set data.imbalance_ratio (and "
            "data.labeled_fraction or data.labeled_head/unlabeled_head)"
        )
    if unlabeled_imbalance != "same":
        raise UserError(
            "data.unlabeled_imbalance needs a long-tailed split: set data.imbalance_ratio "
            "(and data.labeled_fraction)"
        )
    return None


def _check_num_labels(num_labels: int | None, class_counts: np.ndarray) -> int:
    num_labels = num_labels or 4 * len(class_counts)
    if not len(class_counts) <= num_labels <= class_counts.sum():
        raise UserError(
            f"num_labels={num_labels} must be between the number of classes "
            f"({len(class_counts)}) and the {class_counts.sum()} long-tailed training images"
        )
    return num_labels


def _check_no_extra_unlabeled(dataset: ImageDataset) -> None:
    if dataset.unlabeled_images is not None:
        raise UserError(
            "the long-tail and class-mismatch protocols need a data set whose unlabeled images "
            "have known classes; this one has extra unlabeled images of unknown class"
        )


def _sorted(parts: list[np.ndarray]) -> np.ndarray:
    return np.sort(np.concatenate(parts)).astype(np.int64)
