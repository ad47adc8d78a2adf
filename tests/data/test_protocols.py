import dataclasses

import numpy as np
import pytest
import torch

from semisup.config import build_config, config_from_dict
from semisup.data.base import UNKNOWN, ImageDataset
from semisup.data.protocols import (
    MISMATCH_PRESETS,
    ClassMismatch,
    LongTail,
    build_protocol,
    long_tail_counts,
)
from semisup.data.ssl import build_ssl_data
from semisup.errors import UserError
from semisup.experiment import build_trainer

CIFAR10_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


def synthetic(per_class: int, num_classes: int = 10, names=None, test_per_class: int = 3):
    """A data set with `per_class` 1x1 images per class (only targets matter here)."""
    targets = torch.arange(num_classes).repeat_interleave(per_class)
    test_targets = torch.arange(num_classes).repeat_interleave(test_per_class)
    return ImageDataset(
        train_images=torch.arange(len(targets), dtype=torch.uint8).reshape(-1, 1, 1, 1),
        train_targets=targets,
        test_images=torch.zeros(len(test_targets), 1, 1, 1, dtype=torch.uint8),
        test_targets=test_targets,
        class_names=names or tuple(str(c) for c in range(num_classes)),
    )


# ---------------------------------------------------------------- long tail
@pytest.mark.parametrize(
    ("gamma", "expected", "labels"),
    [
        (100, [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50], 1244),
        (50, [5000, 3237, 2096, 1357, 878, 568, 368, 238, 154, 100], 1402),
        (200, [5000, 2775, 1540, 854, 474, 263, 146, 81, 45, 25], 1125),
    ],
)
def test_cifar10_lt_counts_cr1(gamma, expected, labels):
    split = LongTail(gamma, 0.1).split(
        synthetic(5000), None, seed=1, unlabeled_includes_labeled=True
    )
    targets = split.dataset.train_targets.numpy()
    assert np.bincount(targets[split.unlabeled]).tolist() == expected
    assert len(split.labeled) == labels
    if gamma == 100:
        assert np.bincount(targets[split.labeled]).tolist() == [
            500,
            300,
            180,
            108,
            65,
            39,
            24,
            14,
            9,
            5,
        ]
    assert set(split.labeled) <= set(split.unlabeled)


def test_cifar100_lt_counts_cr1():
    counts = long_tail_counts(500, 100, 100)
    assert counts[:5].tolist() == [500, 477, 455, 434, 415]
    assert counts[-5:].tolist() == [6, 5, 5, 5, 5]
    assert counts.sum() == 10847
    split = LongTail(100, 0.1).split(synthetic(500, 100), None, 0, True)
    assert len(split.labeled) == 1128


def test_long_tail_without_labeled_images_in_unlabeled_set():
    data = synthetic(100)
    split = LongTail(10, 0.2).split(data, None, seed=3, unlabeled_includes_labeled=False)
    targets = data.train_targets.numpy()
    kept = long_tail_counts(100, 10, 10)
    assert not set(split.labeled) & set(split.unlabeled)
    counts = np.bincount(targets[split.labeled], minlength=10) + np.bincount(
        targets[split.unlabeled], minlength=10
    )
    assert counts.tolist() == kept.tolist()


def test_long_tail_reversed_and_uniform_unlabeled_profiles():
    data = synthetic(100)
    targets = data.train_targets.numpy()
    kept = long_tail_counts(100, 10, 10)
    labeled = np.ceil(0.2 * kept).astype(int)
    rest = kept - labeled
    for profile, expected in (("reversed", rest[::-1]), ("uniform", [rest[0]] * 10)):
        split = LongTail(10, 0.2, profile).split(data, None, 0, unlabeled_includes_labeled=False)
        assert np.bincount(targets[split.labeled]).tolist() == labeled.tolist()
        assert np.bincount(targets[split.unlabeled]).tolist() == list(expected)
        assert not set(split.labeled) & set(split.unlabeled)


def test_long_tail_is_reproducible_per_seed():
    data = synthetic(200)
    a = LongTail(10, 0.1).split(data, None, 1, True)
    b = LongTail(10, 0.1).split(data, None, 1, True)
    c = LongTail(10, 0.1).split(data, None, 2, True)
    assert np.array_equal(a.labeled, b.labeled) and np.array_equal(a.unlabeled, b.unlabeled)
    assert not np.array_equal(a.labeled, c.labeled)


def test_long_tail_with_num_labels_follows_the_class_frequencies():
    split = LongTail(100, None).split(synthetic(5000), 124, 0, True)
    counts = np.bincount(synthetic(5000).train_targets.numpy()[split.labeled])
    assert counts.sum() == 124 and counts[0] > counts[5] > 0


@pytest.mark.parametrize(
    ("protocol", "num_labels", "includes", "message"),
    [
        (LongTail(100, 0.1, "reversed"), None, True, "unlabeled_includes_labeled=false"),
        (LongTail(10, 0.1), 40, True, "disagrees with data.labeled_fraction=0.1, which labels 23"),
        (LongTail(100, 0.1), None, True, "leaves the rarest classes no image"),
        (LongTail(0.5, 0.1), None, True, "imbalance_ratio must be at least 1"),
        (LongTail(10, 1.5), None, True, "labeled_fraction must be in (0, 1]"),
    ],
)
def test_long_tail_errors(protocol, num_labels, includes, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        protocol.split(synthetic(50), num_labels, 0, includes)


# ---------------------------------------------------------------- DARP protocol
def darp_make_imb_data(max_num, class_num, gamma):
    """bbuing9/DARP common.py `make_imb_data`, transcribed."""
    mu = np.power(1 / gamma, 1 / (class_num - 1))
    return [
        int(max_num / gamma) if i == class_num - 1 else int(max_num * np.power(mu, i))
        for i in range(class_num)
    ]


def darp_train_split(labels, n_labeled_per_class, n_unlabeled_per_class, fix):
    """bbuing9/DARP dataset/all_cifar10.py `train_split`, transcribed."""
    labels = np.array(labels)
    labeled, unlabeled = [], []
    for i in range(10):
        idxs = np.where(labels == i)[0]
        labeled.extend(idxs[: n_labeled_per_class[i]])
        start = 0 if fix else n_labeled_per_class[i]
        unlabeled.extend(idxs[start : n_labeled_per_class[i] + n_unlabeled_per_class[i]])
    return sorted(labeled), sorted(unlabeled)


def shuffled(per_class: int, seed: int = 0):
    """`synthetic` with the classes interleaved at random, so "first" depends on the order."""
    data = synthetic(per_class)
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(data.train_targets)))
    return dataclasses.replace(data, train_targets=data.train_targets[order])


@pytest.mark.parametrize("gamma", [50, 100, 150])
def test_darp_head_counts_are_make_imb_data(gamma):
    for head in (1500, 3000):
        assert long_tail_counts(head, 10, gamma).tolist() == darp_make_imb_data(head, 10, gamma)
    assert darp_make_imb_data(1500, 10, 100) == [1500, 899, 539, 323, 193, 116, 69, 41, 25, 15]
    assert darp_make_imb_data(3000, 10, 100) == [3000, 1798, 1078, 646, 387, 232, 139, 83, 50, 30]


@pytest.mark.parametrize(("profile", "gamma_u"), [("same", 100), ("uniform", 1)])
@pytest.mark.parametrize("fix", [True, False])
def test_darp_split_equals_the_darp_code(profile, gamma_u, fix):
    data = shuffled(5000)
    targets = data.train_targets.numpy()
    darp = LongTail(100, None, profile, labeled_head=1500, unlabeled_head=3000, order="first")
    split = darp.split(data, None, seed=1, unlabeled_includes_labeled=fix)
    n = darp_make_imb_data(1500, 10, 100)
    u = darp_make_imb_data(3000, 10, gamma_u)  # Table 2: --imb_ratio_u 1
    labeled, unlabeled = darp_train_split(targets, n, u, fix)
    assert split.labeled.tolist() == labeled and split.unlabeled.tolist() == unlabeled
    assert len(split.labeled) == 3720
    # the first images of each class: the same split for every seed
    again = darp.split(data, None, seed=7, unlabeled_includes_labeled=fix)
    assert np.array_equal(again.labeled, split.labeled)
    assert np.array_equal(again.unlabeled, split.unlabeled)


def test_head_sizes_with_random_order_follow_the_seed():
    data = shuffled(600)
    usb = LongTail(10, None, labeled_head=150, unlabeled_head=300)
    a, b = usb.split(data, None, 1, False), usb.split(data, None, 2, False)
    targets = data.train_targets.numpy()
    assert np.bincount(targets[a.labeled]).tolist() == long_tail_counts(150, 10, 10).tolist()
    assert np.bincount(targets[a.unlabeled]).tolist() == long_tail_counts(300, 10, 10).tolist()
    assert not set(a.labeled) & set(a.unlabeled)
    assert not np.array_equal(a.labeled, b.labeled)


@pytest.mark.parametrize(
    ("protocol", "num_labels", "message"),
    [
        (LongTail(100, None, labeled_head=1500), None, "go together"),
        (LongTail(100, 0.1, labeled_head=15, unlabeled_head=30), None, "replace"),
        (LongTail(10, None, labeled_head=15, unlabeled_head=30), 40, "disagrees"),
        (LongTail(100, None, labeled_head=50, unlabeled_head=30), None, "rarest class no label"),
        (LongTail(10, None, labeled_head=30, unlabeled_head=30), None, "fewer than the 30"),
    ],
)
def test_head_size_errors(protocol, num_labels, message):
    with pytest.raises(UserError, match=message):
        protocol.split(synthetic(50), num_labels, 0, False)


# ---------------------------------------------------------------- class mismatch
@pytest.mark.parametrize(
    ("percent", "classes"),
    [
        (0, {4, 5, 6, 7}),
        (25, {0, 5, 6, 7}),
        (50, {0, 1, 6, 7}),
        (75, {0, 1, 8, 7}),
        (100, {0, 1, 8, 9}),
    ],
)
def test_cifar10_animal_preset_matches_realmix(percent, classes):
    data = synthetic(50, names=CIFAR10_NAMES)
    split = ClassMismatch(percent).split(data, 60, seed=0, unlabeled_includes_labeled=False)
    original = data.train_targets.numpy()
    assert set(original[split.unlabeled]) == classes
    assert np.bincount(original[split.labeled], minlength=10).tolist() == [0, 0] + [10] * 6 + [0, 0]
    assert not set(split.labeled) & set(split.unlabeled)
    # 6-way labels: bird..horse → 0..5, other classes unknown.
    new = split.dataset.train_targets.numpy()
    assert new[split.labeled].tolist() == (original[split.labeled] - 2).tolist()
    assert set(new[original < 2]) == {UNKNOWN}
    assert split.dataset.class_names == MISMATCH_PRESETS["animals"].labeled


def test_mismatch_test_set_holds_only_labeled_classes_renumbered():
    split = ClassMismatch(50).split(synthetic(20, names=CIFAR10_NAMES), None, 0, True)
    assert split.dataset.test_targets.tolist() == [
        0,
        0,
        0,
        1,
        1,
        1,
        2,
        2,
        2,
        3,
        3,
        3,
        4,
        4,
        4,
        5,
        5,
        5,
    ]
    assert len(split.dataset.test_images) == 18
    assert len(split.labeled) == 24  # default: 4 per labeled class
    assert set(split.labeled) & set(split.unlabeled)  # in-classes 6, 7 keep their labeled images


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (tuple(str(d) for d in range(10)), "digits"),
        (("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
          "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"), "clothing"),
        (CIFAR10_NAMES, "animals"),
    ],
)  # fmt: skip
def test_auto_preset_follows_class_names(names, expected):
    split = ClassMismatch(0).split(synthetic(10, names=names), None, 0, True)
    assert split.dataset.class_names == MISMATCH_PRESETS[expected].labeled


def test_mismatch_errors():
    data = synthetic(10, names=CIFAR10_NAMES)
    with pytest.raises(UserError, match="Valid presets: auto, animals, clothing, digits"):
        ClassMismatch(50, "vehicles").split(data, None, 0, True)
    with pytest.raises(UserError, match="must be one of 0, 25, 50, 75, 100"):
        ClassMismatch(30).split(data, None, 0, True)
    with pytest.raises(UserError, match="needs classes this data set lacks"):
        ClassMismatch(0, "digits").split(data, None, 0, True)
    with pytest.raises(UserError, match="no class-mismatch preset fits"):
        ClassMismatch(0).split(synthetic(10, names=tuple("abcdefghij")), None, 0, True)


def test_build_protocol_choices_and_conflicts():
    assert build_protocol(None, None, "same", None, "auto") is None
    assert isinstance(build_protocol(100.0, 0.1, "same", None, "auto"), LongTail)
    assert isinstance(build_protocol(None, None, "same", 50, "auto"), ClassMismatch)
    with pytest.raises(UserError, match="choose one protocol"):
        build_protocol(100.0, 0.1, "same", 50, "auto")
    with pytest.raises(UserError, match="needs a long-tailed split"):
        build_protocol(None, None, "reversed", None, "auto")
    with pytest.raises(UserError, match="needs data.mismatch"):
        build_protocol(None, None, "same", None, "animals")
    darp = build_protocol(100.0, None, "same", None, "auto", 1500, 3000, "first")
    assert darp == LongTail(100.0, None, "same", 1500, 3000, "first")
    with pytest.raises(UserError, match="split_order=first needs a long-tailed split"):
        build_protocol(None, None, "same", None, "auto", split_order="first")


def test_ssl_data_of_a_mismatch_split_has_six_classes():
    data = build_ssl_data(synthetic(20, names=CIFAR10_NAMES), 12, 0, False, ClassMismatch(100))
    assert data.num_classes == 6
    assert data.labeled_class_counts() == (2,) * 6
    assert set(data.targets[data.unlabeled_idx].tolist()) == {UNKNOWN}


def test_experiment_builds_protocols_from_config_keys():
    base = {"train.steps": 2, "train.progress": False, "train.eval_every": 2}
    cfg = build_config(None, {**base, "data.mismatch": 50, "data.num_labels": 30})
    trainer = build_trainer(cfg, None)
    algorithm = trainer.algorithm
    assert algorithm.info.num_classes == 6 and algorithm.model.fc.out_features == 6
    assert algorithm.info.num_unlabeled == len(trainer.data.unlabeled_idx)
    summary = trainer.fit()
    assert summary["test_accuracy"] is not None
    lt = build_config(None, {**base, "data.imbalance_ratio": 10, "data.labeled_fraction": 0.1})
    first = build_trainer(lt, None)
    counts = first.algorithm.info.labeled_class_counts
    assert counts[0] > counts[-1] >= 1
    # The resolved config (as written to config.yaml, used by --resume) rebuilds the same split.
    again = build_trainer(config_from_dict(lt.to_dict()), None)
    assert torch.equal(again.data.labeled_idx, first.data.labeled_idx)
    heads = {"data.imbalance_ratio": 4, "data.labeled_head": 20, "data.unlabeled_head": 40}
    darp_cfg = build_config(None, {**base, **heads, "data.split_order": "first"})
    darp = build_trainer(darp_cfg, None)
    assert darp.algorithm.info.labeled_class_counts == tuple(long_tail_counts(20, 10, 4).tolist())
    resumed = build_trainer(config_from_dict(darp_cfg.to_dict()), None)
    assert torch.equal(resumed.data.labeled_idx, darp.data.labeled_idx)
    assert torch.equal(resumed.data.unlabeled_idx, darp.data.unlabeled_idx)
