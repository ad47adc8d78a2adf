import pytest
import torch

from semisup.math import pseudo
from semisup.modules.alignment import (
    DistributionAlignment,
    EMAAlignment,
    EMADistribution,
    WindowMean,
    align,
)


def test_r1_alignment_then_sharpening():
    p = torch.tensor([[0.6, 0.3, 0.1]])
    aligned = align(p, torch.full((3,), 1 / 3), torch.tensor([0.5, 0.3, 0.2]))
    assert torch.allclose(aligned, torch.tensor([[0.44444491, 0.37037027, 0.18518482]]), atol=1e-6)
    exact = align(p, torch.full((3,), 1 / 3), torch.tensor([0.5, 0.3, 0.2]), eps=0.0)
    assert torch.allclose(exact, torch.tensor([[4 / 9, 10 / 27, 5 / 27]]), atol=1e-7)
    target = pseudo.sharpen(aligned, 0.5)
    assert torch.allclose(target, torch.tensor([[0.53531681, 0.37174680, 0.09293639]]), atol=1e-6)


def test_r2_window_mean_after_one_update():
    window = WindowMean(3, window=128)
    assert torch.allclose(window(), torch.full((3,), 1 / 3))
    window.update(torch.tensor([[0.7, 0.2, 0.1], [0.5, 0.4, 0.1]]))  # batch mean [0.6, 0.3, 0.1]
    expected = torch.tensor([0.33541667, 0.33307292, 0.33151042])
    assert torch.allclose(window(), expected, atol=1e-7)


def test_window_forgets_batches_older_than_the_window():
    window = WindowMean(2, window=3)
    for mean in ([1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]):
        window.update(torch.tensor(mean))
    assert torch.allclose(window(), torch.tensor([0.0, 1.0]))  # the [1, 0] batch has left
    zeros = WindowMean(2, window=4, fill=0.0)  # SimMatch's zero-initialised queue
    zeros.update(torch.tensor([0.8, 0.2]))
    assert torch.allclose(zeros(), torch.tensor([0.8, 0.2]))


def test_r3_data_ema_from_one_hot_labels():
    p_data = EMADistribution(3, momentum=0.999)
    p_data.update(torch.nn.functional.one_hot(torch.tensor([0, 0, 1, 2]), 3).float())
    assert torch.allclose(p_data(), torch.tensor([0.3335, 0.33325, 0.33325]), atol=1e-7)


def test_ema_starts_from_a_prior_and_rejects_bad_ones():
    assert torch.allclose(EMADistribution(2, initial=[3, 1])(), torch.tensor([0.75, 0.25]))
    with pytest.raises(ValueError, match="initial must be 2 non-negative weights"):
        EMADistribution(2, initial=[1.0, -1.0])
    with pytest.raises(ValueError, match="window must be at least 1"):
        WindowMean(2, window=0)


def test_alignment_reads_old_state_and_updates_after_the_step():
    da = DistributionAlignment(3)
    probs = torch.tensor([[0.6, 0.3, 0.1], [0.6, 0.3, 0.1]])
    assert torch.allclose(da(probs), probs, atol=1e-6)  # uniform p_data and p_model: identity
    assert torch.allclose(da.p_model(), torch.full((3,), 1 / 3))  # forward changed nothing
    da.update(probs, torch.tensor([0, 0, 1, 2]))
    assert torch.allclose(da.p_model(), torch.tensor([0.33541667, 0.33307292, 0.33151042]))
    assert torch.allclose(da.p_data(), torch.tensor([0.3335, 0.33325, 0.33325]))
    expected = align(probs, da.p_data(), da.p_model())
    assert torch.allclose(da(probs), expected)
    assert set(da.state_dict()) == {"p_model.history", "p_data.distribution"}


def test_alignment_with_a_fixed_prior_pulls_predictions_towards_it():
    da = DistributionAlignment(2, prior=[0.9, 0.1])
    da.update(torch.tensor([[0.5, 0.5]]), torch.tensor([1, 1, 1]))  # labels ignored
    assert torch.allclose(da.p_data(), torch.tensor([0.9, 0.1]))
    aligned = da(torch.tensor([[0.5, 0.5]]))
    assert aligned[0, 0] > 0.85  # p_model is ~uniform, so the ratio is ~p_data / (1/2)


def test_state_round_trips_through_state_dict():
    da = DistributionAlignment(4, window=8)
    for _ in range(3):
        da.update(torch.softmax(torch.randn(5, 4), dim=1), torch.randint(0, 4, (5,)))
    restored = DistributionAlignment(4, window=8)
    restored.load_state_dict(da.state_dict())
    probs = torch.softmax(torch.randn(6, 4), dim=1)
    assert torch.equal(restored(probs), da(probs))


def test_ema_alignment_starts_at_the_first_batch_mean_and_stores_only_when_told():
    da = EMAAlignment(3, momentum=0.9)
    probs = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.3, 0.5]])
    p_model, p_target = da.estimates(probs)
    assert torch.allclose(p_model, torch.tensor([0.4, 0.3, 0.3]))  # no EMA at the first batch
    assert torch.allclose(p_target, torch.full((3,), 1 / 3))
    assert not da.started and torch.allclose(da.p_model, torch.full((3,), 1 / 3))
    expected = align(probs, p_target, p_model, eps=1e-6)
    assert torch.allclose(da(probs, p_model, p_target), expected)
    da.store(p_model, p_target)
    later, _ = da.estimates(torch.tensor([[1.0, 0.0, 0.0]]))
    assert torch.allclose(later, torch.tensor([0.46, 0.27, 0.27]))  # 0.9·old + 0.1·new


def test_ema_alignment_can_learn_its_target_from_the_labeled_predictions():
    da = EMAAlignment(2, momentum=0.9, learn_target=True)
    probs_x = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    _, p_target = da.estimates(torch.tensor([[0.5, 0.5]]), probs_x)
    assert torch.allclose(p_target, torch.tensor([0.55, 0.45]))  # from uniform, not the batch
    with pytest.raises(ValueError, match="labeled predictions"):
        da.estimates(torch.tensor([[0.5, 0.5]]))
    assert set(da.state_dict()) == {"p_model", "p_target", "started"}
