import math
import typing

import pytest
import torch

from semisup.math import tsa


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ("linear", [0.1, 0.55, 1.0]),
        ("exp", [0.10606415, 0.17387650, 1.0]),
        ("log", [0.1, 0.92612350, 0.99393585]),
    ],
)
def test_rm1_thresholds_for_ten_classes(schedule, expected):
    got = [tsa.threshold(schedule, progress, num_classes=10) for progress in (0.0, 0.5, 1.0)]
    assert got == pytest.approx(expected, abs=1e-6)


def test_thresholds_rise_from_one_over_c_and_none_keeps_everything():
    for schedule in ("linear", "exp", "log"):
        values = [tsa.threshold(schedule, p / 10, num_classes=4) for p in range(11)]
        assert values == sorted(values) and values[0] >= 0.25 and values[-1] <= 1.0
    assert tsa.threshold("none", 0.0, num_classes=4) == 1.0
    assert tsa.threshold("linear", 1.5, num_classes=4) == 1.0  # capped, as the fixmatch repo
    probs = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    keep = tsa.hard_label_keep_mask(probs, torch.tensor([0, 1]), tsa.threshold("none", 0.0, 2))
    assert keep.tolist() == [1.0, 1.0]


def test_unknown_schedule_names_the_valid_ones():
    with pytest.raises(ValueError, match="unknown TSA schedule 'cosine'. Valid: none, linear"):
        tsa.threshold("cosine", 0.5, num_classes=10)
    assert tsa.SCHEDULES == typing.get_args(tsa.Schedule) == ("none", "linear", "log", "exp")


def test_keep_mask_drops_examples_whose_correct_class_is_above_the_threshold():
    probs = torch.tensor([[0.6, 0.4], [0.55, 0.45], [0.3, 0.7], [0.5, 0.5]], requires_grad=True)
    keep = tsa.hard_label_keep_mask(probs, torch.tensor([0, 0, 0, 1]), eta=0.55)
    assert keep.tolist() == [0.0, 1.0, 1.0, 1.0]  # p_correct = η is kept (UDA drops only >)
    assert not keep.requires_grad


def test_masked_mean_divides_by_the_kept_count_and_is_zero_when_none_is_kept():
    losses = torch.tensor([1.0, 2.0, 3.0])
    assert tsa.masked_mean(losses, torch.tensor([1.0, 0.0, 1.0])).item() == 2.0
    assert tsa.masked_mean(losses, torch.zeros(3)).item() == 0.0
    assert tsa.masked_mean(losses, torch.ones(3)).item() == pytest.approx(2.0)


def test_uda_hard_label_example_end_to_end():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    labels = torch.tensor([0, 1])
    eta = tsa.threshold("linear", 0.0, num_classes=3)  # 1/3: only the unsure example is kept
    keep = tsa.hard_label_keep_mask(logits.softmax(-1), labels, eta)
    loss = tsa.masked_mean(
        torch.nn.functional.cross_entropy(logits, labels, reduction="none"), keep
    )
    assert keep.tolist() == [0.0, 1.0]
    assert loss.item() == pytest.approx(math.log(3))
