import pytest
import torch
from torch import nn

from semisup.math import mixing
from semisup.models import bn


def test_m3_per_example_lambda_is_folded_to_at_least_a_half():
    inputs = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    targets = torch.tensor([[1.0, 0.0], [0.2, 0.8]])
    mixed_inputs, mixed_targets = mixing.mix(
        inputs, targets, torch.tensor([0.3, 0.9]), torch.tensor([1, 0])
    )
    assert torch.allclose(mixed_inputs[0], torch.tensor([0.7, 0.3]))  # λ = 0.3 → λ' = 0.7
    assert torch.allclose(mixed_targets[0], torch.tensor([0.76, 0.24]))
    assert torch.allclose(mixed_inputs[1], torch.tensor([0.1, 0.9]))  # λ' = 0.9, own item first
    assert torch.allclose(mixed_targets[1], torch.tensor([0.28, 0.72]))


def test_mix_broadcasts_per_example_weights_over_image_dimensions():
    images = torch.arange(3 * 2 * 2 * 2, dtype=torch.float32).reshape(3, 2, 2, 2)
    targets = torch.eye(3)
    lam, perm = torch.tensor([1.0, 0.5, 0.75]), torch.tensor([2, 0, 1])
    mixed, mixed_targets = mixing.mix(images, targets, lam, perm)
    for i in range(3):
        weight = max(lam[i].item(), 1 - lam[i].item())
        assert torch.allclose(mixed[i], weight * images[i] + (1 - weight) * images[perm[i]])
        assert torch.allclose(
            mixed_targets[i], weight * targets[i] + (1 - weight) * targets[perm[i]]
        )
    assert torch.allclose(mixed_targets.sum(dim=1), torch.ones(3))


def test_draws_are_reproducible_with_a_generator_and_follow_beta():
    def draw(seed):
        return mixing.mixup_draws(20_000, 0.75, generator=torch.Generator().manual_seed(seed))

    lam_a, perm_a = draw(1)
    lam_b, perm_b = draw(1)
    lam_c, _ = draw(2)
    assert torch.equal(lam_a, lam_b) and torch.equal(perm_a, perm_b)
    assert not torch.equal(lam_a, lam_c)
    assert torch.equal(perm_a.sort().values, torch.arange(20_000))  # one permutation
    assert ((lam_a > 0) & (lam_a < 1)).all()
    # Beta(0.75, 0.75): mean 1/2, variance αβ/((α+β)²(α+β+1)) = 0.1.
    assert lam_a.mean().item() == pytest.approx(0.5, abs=0.01)
    assert lam_a.var().item() == pytest.approx(0.1, abs=0.005)


def test_mixup_draws_then_mixes():
    inputs, targets = torch.randn(6, 3), torch.softmax(torch.randn(6, 4), dim=1)
    generator = torch.Generator().manual_seed(3)
    mixed = mixing.mixup(inputs, targets, 0.75, generator)
    lam, perm = mixing.mixup_draws(6, 0.75, generator=torch.Generator().manual_seed(3))
    expected = mixing.mix(inputs, targets, lam, perm)
    assert torch.equal(mixed[0], expected[0]) and torch.equal(mixed[1], expected[1])


def test_m5_interleave_offsets():
    assert mixing.interleave_offsets(64, 2) == [0, 21, 42, 64]
    assert mixing.interleave_offsets(64, 9) == [0, 6, 12, 18, 24, 30, 36, 43, 50, 57, 64]
    assert mixing.interleave_offsets(64, 3) == [0, 16, 32, 48, 64]


def test_m5_interleave_swaps_chunks_and_is_its_own_inverse():
    names = [f"{source}{i}" for source in "xab" for i in range(6)]
    rows = torch.arange(18)
    interleaved = mixing.interleave(rows, 6)
    batches = [[names[i] for i in interleaved[b * 6 : (b + 1) * 6]] for b in range(3)]
    assert batches == [
        ["x0", "x1", "a2", "a3", "b4", "b5"],
        ["a0", "a1", "x2", "x3", "a4", "a5"],
        ["b0", "b1", "b2", "b3", "x4", "x5"],
    ]
    assert torch.equal(mixing.interleave(interleaved, 6), rows)
    images = torch.randn(10 * 64, 3, 4, 4)
    assert torch.equal(mixing.interleave(mixing.interleave(images, 64), 64), images)


def test_interleave_rejects_ragged_pools():
    with pytest.raises(ValueError, match="cannot split 10 rows into batches of 4"):
        mixing.interleave(torch.zeros(10), 4)


def test_frozen_running_stats_normalises_with_the_batch_and_restores_tracking():
    layer = nn.BatchNorm2d(3, momentum=0.5).train()
    x = torch.randn(8, 3, 4, 4) * 3 + 1
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    with bn.frozen_running_stats(nn.Sequential(layer)):
        frozen_out = layer(x)
    assert all(torch.equal(state[k], v) for k, v in layer.state_dict().items())
    assert layer.track_running_stats
    assert torch.allclose(frozen_out, layer(x), atol=1e-6)  # same batch statistics
    assert not torch.equal(state["running_mean"], layer.running_mean)  # outside: updates again
    layer.eval()
    with bn.frozen_running_stats(layer):
        eval_out = layer(x)
    assert torch.allclose(eval_out, layer(x))  # evaluation still uses the running statistics
