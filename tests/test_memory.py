import torch

from semisup.modules.memory import LabeledMemoryBank, momentum_update


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
