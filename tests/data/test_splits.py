import hashlib

import numpy as np
import pytest
import torch

from semisup.data.base import UNKNOWN, ImageDataset
from semisup.data.digits import load_digits
from semisup.data.sampler import EpochSampler
from semisup.data.splits import labels_per_class, split_labeled
from semisup.data.ssl import build_ssl_data
from semisup.errors import UserError


def test_greedy_labels_per_class_matches_google_create_split():
    # docs/algorithms.md#numeric-checks E2 / E3.
    assert labels_per_class(np.array([10] * 10), 40).tolist() == [4] * 10
    assert labels_per_class(np.array([100, 50, 50]), 8).tolist() == [4, 2, 2]
    svhn = np.array([13861, 10585, 8497, 7458, 6882, 5727, 5595, 5045, 4659, 4948])
    assert labels_per_class(svhn, 250).tolist() == [47, 36, 29, 25, 24, 20, 19, 17, 16, 17]
    assert labels_per_class(svhn, 40).tolist() == [7, 6, 4, 4, 4, 3, 3, 3, 3, 3]


def test_uneven_label_count_goes_round_robin():
    assert labels_per_class(np.array([50] * 4), 6).tolist() == [2, 2, 1, 1]


def test_split_is_balanced_reproducible_and_seed_dependent():
    targets = np.repeat(np.arange(10), 100)
    a = split_labeled(targets, 40, seed=1)
    assert np.bincount(targets[a]).tolist() == [4] * 10
    assert np.array_equal(a, split_labeled(targets, 40, seed=1))
    assert not np.array_equal(a, split_labeled(targets, 40, seed=2))
    assert len(np.unique(a)) == 40


@pytest.mark.parametrize(
    ("num_labels", "message"),
    [(5, "less than the number of classes"), (1001, "more than the 1000 training images")],
)
def test_split_rejects_impossible_label_counts(num_labels, message):
    targets = np.repeat(np.arange(10), 100)
    with pytest.raises(UserError, match=message):
        split_labeled(targets, num_labels, seed=0)


def test_greedy_never_asks_more_labels_than_a_class_has():
    rng = np.random.default_rng(0)
    for _ in range(2000):
        counts = rng.integers(1, 12, size=rng.integers(2, 6))
        num_labels = int(rng.integers(len(counts), counts.sum() + 1))
        given = labels_per_class(counts, num_labels)
        assert given.sum() == num_labels
        assert (given <= counts).all() and (given >= 1).all()


def _hashes(images: torch.Tensor) -> list[str]:
    return [hashlib.sha1(img.numpy().tobytes()).hexdigest() for img in images]


def test_digits_split_keeps_test_images_out_of_training():
    dataset = load_digits()
    assert dataset.train_images.shape == (1347, 1, 8, 8)
    assert dataset.test_images.shape == (450, 1, 8, 8)
    assert torch.bincount(dataset.test_targets).tolist() == [44, 46, 44, 46, 45, 46, 45, 45, 44, 45]
    data = build_ssl_data(dataset, 40, seed=0)
    pool = _hashes(data.images)
    # The pool is exactly the training images (as a multiset), never a test image that is
    # not also, independently, a training image (8x8 digits have a few natural duplicates).
    assert sorted(pool) == sorted(_hashes(dataset.train_images))
    train_hashes = set(_hashes(dataset.train_images))
    assert all(h in train_hashes for h in _hashes(data.images[data.unlabeled_idx]))
    assert set(data.labeled_idx.tolist()) <= set(data.unlabeled_idx.tolist())
    # The test split is fixed: it does not depend on the run's seed.
    assert torch.equal(load_digits().test_images, dataset.test_images)


def test_mnist_test_images_never_enter_the_pool(shared_datasets):
    from semisup.data.standard import load_mnist

    dataset = load_mnist(shared_datasets, download=False)
    data = build_ssl_data(dataset, 40, seed=3)
    test = set(_hashes(dataset.test_images))
    train = set(_hashes(dataset.train_images))
    natural_overlap = test & train  # identical images that exist in both official splits
    leaked = {h for h in _hashes(data.images) if h in test} - natural_overlap
    assert not leaked
    assert len(data.images) == 60000


def test_unlabeled_set_can_exclude_labeled_and_extra_images_join_it():
    dataset = ImageDataset(
        train_images=torch.zeros(20, 1, 4, 4, dtype=torch.uint8),
        train_targets=torch.arange(20) % 2,
        test_images=None,
        test_targets=None,
        class_names=("a", "b"),
        unlabeled_images=torch.ones(5, 1, 4, 4, dtype=torch.uint8),
    )
    data = build_ssl_data(dataset, 4, seed=0, unlabeled_includes_labeled=False)
    assert len(data.unlabeled_idx) == 16 + 5
    assert not set(data.labeled_idx.tolist()) & set(data.unlabeled_idx.tolist())
    assert (data.targets[20:] == UNKNOWN).all()
    assert data.labeled_class_counts() == (2, 2)


def test_all_labeled_folder_keeps_every_label_by_default():
    dataset = ImageDataset(
        train_images=torch.zeros(6, 1, 4, 4, dtype=torch.uint8),
        train_targets=torch.tensor([0, 0, 1, 1, 2, 2]),
        test_images=None,
        test_targets=None,
        class_names=("a", "b", "c"),
        all_labeled=True,
    )
    assert len(build_ssl_data(dataset, None, seed=0).labeled_idx) == 6
    assert len(build_ssl_data(dataset, 3, seed=0).labeled_idx) == 3


def test_sampler_draws_every_item_once_per_epoch_and_resumes_exactly():
    sampler = EpochSampler(torch.arange(10), seed=0)
    first = torch.cat([sampler.next(4) for _ in range(5)])  # 2 epochs
    assert sorted(first[:10].tolist()) == list(range(10))
    assert sorted(first[10:].tolist()) == list(range(10))
    state = sampler.state_dict()
    expected = [sampler.next(3) for _ in range(7)]
    resumed = EpochSampler(torch.arange(10), seed=99)
    resumed.load_state_dict(state)
    assert all(torch.equal(a, resumed.next(3)) for a in expected)


def test_official_folds_are_used_when_the_label_count_matches():
    folds = (torch.tensor([3, 1, 5, 7]), torch.tensor([0, 2, 4, 6]))
    dataset = ImageDataset(
        train_images=torch.zeros(8, 1, 4, 4, dtype=torch.uint8),
        train_targets=torch.tensor([0, 1] * 4),
        test_images=None,
        test_targets=None,
        class_names=("a", "b"),
        label_folds=folds,
    )
    assert build_ssl_data(dataset, None, seed=0).labeled_idx.tolist() == [1, 3, 5, 7]
    assert build_ssl_data(dataset, 4, seed=1).labeled_idx.tolist() == [0, 2, 4, 6]
    assert len(build_ssl_data(dataset, 2, seed=1).labeled_idx) == 2  # another count: a new split
