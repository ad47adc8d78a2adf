"""Adaptive thresholds and weights (FlexMatch, FreeMatch, SoftMatch, AdaMatch), by hand."""

import math

import pytest
import torch

from semisup.math import thresholds


def test_learning_effects_with_and_without_the_warmup():
    # docs/algorithms.md#numeric-checks FL1
    # Three unused images (−1), two of class 0, one of class 1, none of class 2.
    selected = torch.tensor([-1, -1, -1, 0, 0, 1])
    warm = thresholds.learning_effects(selected, num_classes=3, warmup=True)
    assert torch.allclose(warm, torch.tensor([2 / 3, 1 / 3, 0.0]))  # normaliser: the 3 unused
    cold = thresholds.learning_effects(selected, num_classes=3, warmup=False)
    assert torch.allclose(cold, torch.tensor([1.0, 0.5, 0.0]))  # normaliser: class 0's 2
    # Once some class outnumbers the unused images the two agree.
    busy = torch.tensor([0, 0, 0, 1, -1])
    assert torch.allclose(thresholds.learning_effects(busy, 3, True), torch.tensor([1, 1 / 3, 0]))


def test_learning_effects_are_left_alone_while_every_entry_is_the_same():
    assert thresholds.learning_effects(torch.full((5,), -1), 3, warmup=True) is None
    assert thresholds.learning_effects(torch.full((5,), 2), 3, warmup=False) is None


def test_convex_mapping_and_the_flexmatch_threshold():
    beta = torch.tensor([0.0, 0.5, 2 / 3, 1.0])
    mapped = thresholds.convex_mapping(beta)
    assert torch.allclose(mapped, torch.tensor([0.0, 1 / 3, 0.5, 1.0]))
    assert (0.95 * mapped[2]).item() == pytest.approx(0.475)


def test_class_normalised_thresholds():
    # docs/algorithms.md#numeric-checks FR2
    out = thresholds.class_normalised_thresholds(torch.tensor(0.8), torch.tensor([0.2, 0.5, 0.3]))
    assert torch.allclose(out, torch.tensor([0.32, 0.8, 0.48]))


def test_truncated_gaussian_weight():
    # docs/algorithms.md#numeric-checks SM1.
    # μ = 0.7, σ² = 0.04 (σ = 0.2), n = 2: one σ below the mean weighs exp(−n²/2) = exp(−2).
    confidence = torch.tensor([0.9, 0.7, 0.5, 0.6])
    weight = thresholds.truncated_gaussian_weight(
        confidence, torch.tensor(0.7), torch.tensor(0.04), n_sigma=2.0
    )
    expected = [1.0, 1.0, math.exp(-2.0), math.exp(-0.5)]
    assert torch.allclose(weight, torch.tensor(expected))


def test_relative_threshold_scales_the_labeled_mean_confidence():
    probs_x = torch.tensor([[0.8, 0.2], [0.4, 0.6]])
    assert thresholds.relative_threshold(probs_x, 0.95).item() == pytest.approx(0.95 * 0.7)


def test_moving_average():
    value = thresholds.moving_average(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), 0.999)
    assert torch.allclose(value, torch.tensor([0.999, 0.001]))
