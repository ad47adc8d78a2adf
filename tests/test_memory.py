import pytest
import torch
import torch.nn.functional as F

from semisup.modules.memory import LabeledMemoryBank, last_writes, momentum_update


def test_s4_momentum_update():
    new = momentum_update(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), 0.7)
    assert torch.allclose(new, torch.tensor([[0.91914503, 0.39391930]]), atol=1e-6)
    assert torch.equal(
        momentum_update(torch.eye(2), torch.eye(2).flip(0), 0.0), torch.eye(2).flip(0)
    )


def test_bank_starts_with_random_unit_vectors_and_is_in_the_state_dict():
    bank = LabeledMemoryBank(5, 3, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(bank.embeddings.norm(dim=1), torch.ones(5))
    assert bank.labels.tolist() == [0] * 5
    assert set(bank.state_dict()) == {"embeddings", "labels"}


def test_update_with_momentum_and_overwrite_at_labeled_indices():
    bank = LabeledMemoryBank(4, 2)
    bank.embeddings.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]))
    e2 = torch.tensor([[0.0, 1.0]])
    bank.update(torch.tensor([0]), e2, torch.tensor([3]), momentum=0.7)
    assert torch.allclose(bank.embeddings[0], torch.tensor([0.91914503, 0.39391930]), atol=1e-6)
    bank.update(torch.tensor([2]), e2, torch.tensor([1]), momentum=0.0)
    assert bank.embeddings[2].tolist() == [0.0, 1.0]
    assert bank.labels.tolist() == [3, 0, 1, 0]
    assert bank.embeddings[1].tolist() == [0.0, 1.0]  # untouched slot


def test_code_normalisation_is_per_feature_dimension_across_the_batch():
    rows = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    # m·old + (1 − m)·new = rows; column 0 (0.6, 0) → (1, 0), column 1 (0.8, 1) / √1.64
    code = momentum_update(rows, rows, 0.7, normalization="code")
    expected = torch.tensor([[1.0, 0.62469505], [0.0, 0.78086881]])
    assert torch.allclose(code, expected, atol=1e-7)
    assert torch.allclose(momentum_update(rows, rows, 0.7, normalization="paper"), rows)


def usb_update_bank(mem_bank, k, index, ema_bank):
    """Transcription of USB `SimMatch.update_bank` (CIFAR branch): mem_bank is (D, K)."""
    mem_bank = mem_bank.clone()
    mem_bank[:, index] = F.normalize(ema_bank * mem_bank[:, index] + (1 - ema_bank) * k.t())
    return mem_bank


@pytest.mark.parametrize("momentum", [0.7, 0.0])
def test_code_normalised_bank_write_equals_the_usb_transcription(momentum):
    generator = torch.Generator().manual_seed(0)
    bank = LabeledMemoryBank(100, 128, generator=generator, normalization="code")
    before = bank.embeddings.clone()
    z = F.normalize(torch.randn(64, 128, generator=generator), dim=1)
    index = torch.randperm(100, generator=generator)[:64]
    bank.update(index, z, torch.zeros(64, dtype=torch.int64), momentum=momentum)
    reference = usb_update_bank(before.T, z, index, momentum).T
    assert torch.allclose(bank.embeddings, reference, atol=1e-6)
    written = bank.embeddings[index]
    # every feature dimension has unit norm over the 64 items: Σ ||row||² = D, rows ≈ √2 long
    assert (written**2).sum().item() == pytest.approx(128.0, rel=1e-5)
    assert 1.2 < written.norm(dim=1).mean().item() < 1.6
    untouched = torch.ones(100, dtype=torch.bool)
    untouched[index] = False
    assert torch.equal(bank.embeddings[untouched], before[untouched])


def test_bank_rejects_an_unknown_normalisation():
    with pytest.raises(ValueError, match="'code' or 'paper'"):
        LabeledMemoryBank(4, 2, normalization="dimension")  # type: ignore[arg-type]


def test_last_writes_keeps_the_last_row_of_each_repeated_slot():
    index = torch.tensor([3, 1, 3, 0, 1, 3])
    rows = torch.arange(6.0)[:, None].expand(6, 2)
    slots, kept = last_writes(index, rows)
    assert slots.tolist() == [0, 1, 3]
    assert kept[:, 0].tolist() == [3.0, 4.0, 5.0]  # positions of the last 0, 1 and 3


def test_repeated_labeled_indices_write_the_last_occurrence_once():
    """A labeled batch larger than the labeled set repeats indices: the rule is explicit."""
    bank = LabeledMemoryBank(3, 2)
    start = bank.embeddings.clone()
    index = torch.tensor([2, 0, 2, 2])
    new = torch.nn.functional.normalize(torch.randn(4, 2), dim=-1)
    labels = torch.tensor([5, 6, 7, 8])
    bank.update(index, new, labels, momentum=0.7)
    assert torch.equal(bank.embeddings[2], momentum_update(start[2:3], new[3:4], 0.7)[0])
    assert torch.equal(bank.embeddings[0], momentum_update(start[0:1], new[1:2], 0.7)[0])
    assert torch.equal(bank.embeddings[1], start[1])
    assert bank.labels.tolist() == [6, 0, 8]


def test_bank_update_does_not_depend_on_the_thread_count():
    index = torch.randint(0, 40, (4096,), generator=torch.Generator().manual_seed(0))
    new = torch.nn.functional.normalize(torch.randn(4096, 128), dim=-1)
    banks = []
    threads = torch.get_num_threads()
    try:
        for count in (1, 4):
            torch.set_num_threads(count)
            bank = LabeledMemoryBank(40, 128, generator=torch.Generator().manual_seed(1))
            bank.update(index, new, index % 10, momentum=0.0)
            banks.append(bank.embeddings)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(banks[0], banks[1])
    last = {int(i): p for p, i in enumerate(index)}
    assert all(torch.equal(banks[0][i], new[p]) for i, p in last.items())
