import pytest
import torch
from torch import nn

from semisup.math import mixing
from semisup.models import forward


def test_forward_three_views_splits_one_call_over_the_concatenated_views():
    model = nn.Linear(2, 3)
    batch = {"x": torch.randn(2, 2), "u_w": torch.randn(3, 2), "u_s": torch.randn(3, 2)}
    logits_x, logits_u_w, logits_u_s = forward.forward_three_views(model, batch)
    assert (logits_x.shape, logits_u_w.shape, logits_u_s.shape) == ((2, 3), (3, 3), (3, 3))
    assert torch.allclose(logits_u_s, model(batch["u_s"]))


class _Recorder(nn.Module):
    """BatchNorm model that logs each call's input rows and whether running stats moved."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(2, momentum=0.5)
        self.calls: list[tuple[list[int], bool]] = []

    def forward(self, x):
        before = self.bn.running_mean.clone()
        out = self.bn(x)
        self.calls.append((x[:, 0].long().tolist(), not torch.equal(before, self.bn.running_mean)))
        return out


@pytest.mark.parametrize(("update_call", "expected"), [(0, 0), (-1, 2), (1, 1)])
def test_interleaved_forward_runs_mixed_batches_and_updates_bn_once(update_call, expected):
    model = _Recorder().train()
    ids = torch.arange(18, dtype=torch.float32)
    inputs = torch.stack([ids, torch.randn(18)], dim=1)  # column 0 identifies the row
    logits = forward.interleaved_forward(model, inputs, 6, update_call)
    assert [rows for rows, _ in model.calls] == [
        [0, 1, 8, 9, 16, 17],
        [6, 7, 2, 3, 10, 11],
        [12, 13, 14, 15, 4, 5],
    ]
    assert [moved for _, moved in model.calls] == [i == expected for i in range(3)]
    # Logits come back in pool order, each normalised with its own call's batch statistics.
    chunks = mixing.interleave(inputs, 6).split(6)
    reference = torch.cat(
        [
            nn.functional.batch_norm(c, None, None, model.bn.weight, model.bn.bias, True, 0, 1e-5)
            for c in chunks
        ]
    )
    assert torch.allclose(logits, mixing.interleave(reference, 6), atol=1e-6)


def test_mix_and_forward_returns_pool_order_logits_and_mixed_targets(monkeypatch):
    lam, perm = torch.full((6,), 0.8), torch.tensor([1, 0, 3, 2, 5, 4])
    monkeypatch.setattr(mixing, "mixup_draws", lambda n, beta, device, generator: (lam, perm))
    model = nn.Linear(2, 2)
    x, u = torch.randn(3, 2), torch.randn(3, 2)
    tx, tu = torch.eye(2)[[0, 1, 0]], torch.full((3, 2), 0.5)
    logits, targets = forward.mix_and_forward(model, [x, u], [tx, tu], 0.75, 0)
    mixed_inputs, mixed_targets = mixing.mix(torch.cat([x, u]), torch.cat([tx, tu]), lam, perm)
    assert torch.allclose(logits, model(mixed_inputs), atol=1e-6)
    assert torch.equal(targets, mixed_targets)
