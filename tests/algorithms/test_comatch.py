import math

import pytest
import torch
from torch import nn

from semisup.algorithms.comatch import (
    CoMatch,
    graph_contrastive_loss,
    memory_smoothing,
    pseudo_label_graph,
)
from semisup.augment.simclr import SimCLRAugment
from semisup.config import build_config
from semisup.engine.checkpoint import load_checkpoint
from semisup.errors import UserError
from semisup.experiment import build_trainer
from semisup.modules.memory import EmbeddingQueue

from .helpers import info
from .test_simmatch import FeaturesAsImages, NoBatchNormNet

E1, E2 = [1.0, 0.0], [0.0, 1.0]
SIM_SELF = 0.9933071490757152  # softmax([1, 0] / 0.2)[0]: a unit embedding against e1, e2
SIM_OTHER = 0.0066928509242848554
CONFIDENT = [0.9, 0.05, 0.05]


def test_pseudo_label_graph_keeps_similar_pairs_and_self_loops():
    probs = torch.tensor([CONFIDENT, CONFIDENT, [0.0, 1.0, 0.0]])
    graph = pseudo_label_graph(probs, threshold=0.8)
    # q0·q1 = 0.815 ≥ 0.8 makes an edge, q0·q2 = 0.05 does not; rows are normalised.
    edge = 0.815 / 1.815
    expected = torch.tensor([[1 - edge, edge, 0.0], [edge, 1 - edge, 0.0], [0.0, 0.0, 1.0]])
    assert torch.allclose(graph, expected, atol=1e-6)
    # At 1 only the self-loops remain (q_i·q_j < 1 unless both are the same one-hot).
    assert torch.equal(pseudo_label_graph(probs, threshold=1.0), torch.eye(3))


def test_a_graph_threshold_above_one_is_refused():
    with pytest.raises(UserError, match="contrast_threshold"):
        CoMatch(FeaturesAsImages(), info(3, 4), contrast_threshold=1.5)


def test_memory_smoothing_by_hand():
    smoothed = memory_smoothing(
        torch.tensor([[0.5, 0.3, 0.2]]),
        torch.tensor([E1]),
        torch.tensor([E1, E2]),
        torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
        alpha=0.9,
        temperature=0.2,
    )
    # a = softmax([5, 0]); q = 0.9 p + 0.1 a·Q_probs.
    expected = [0.45 + 0.1 * SIM_SELF, 0.27 + 0.1 * SIM_OTHER, 0.18]
    assert torch.allclose(smoothed, torch.tensor([expected]), atol=1e-6)
    assert smoothed.sum().item() == pytest.approx(1.0)


def test_contrastive_loss_with_self_loops_only_is_instance_discrimination():
    torch.manual_seed(0)
    z_a = nn.functional.normalize(torch.randn(5, 4), dim=-1)
    z_b = nn.functional.normalize(torch.randn(5, 4), dim=-1)
    loss = graph_contrastive_loss(z_a, z_b, torch.eye(5), temperature=0.2)
    info_nce = -((z_a @ z_b.T / 0.2).softmax(dim=-1).diagonal() + 1e-7).log()
    assert torch.allclose(loss, info_nce)


def test_embedding_queue_wraps_around_and_counts():
    queue = EmbeddingQueue(size=3, dim=1, num_classes=2)
    queue.push(torch.tensor([[1.0], [2.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    queue.push(torch.tensor([[3.0], [4.0]]), torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    assert queue.embeddings.flatten().tolist() == [4.0, 2.0, 3.0]  # 4 overwrote the oldest
    assert queue.probs[0].tolist() == [1.0, 0.0] and int(queue.count) == 4
    queue.push(torch.arange(5.0)[:, None] + 10, torch.zeros(5, 2))  # more than fits: last 3
    assert sorted(queue.embeddings.flatten().tolist()) == [12.0, 13.0, 14.0]
    assert int(queue.count) == 9


def _images(rows):
    return torch.tensor(rows).reshape(len(rows), 5, 1, 1)


def _hand_setup(threshold: float, **kwargs) -> tuple[CoMatch, dict]:
    algorithm = CoMatch(FeaturesAsImages(), info(3, 4), threshold=threshold, proj_dim=2, **kwargs)
    with torch.no_grad():  # embedding = the last two features (non-negative: LeakyReLU passes)
        algorithm.head[0].weight.copy_(torch.eye(5))
        algorithm.head[0].bias.zero_()
        algorithm.head[2].weight.copy_(torch.eye(5)[3:])
        algorithm.head[2].bias.zero_()
        # A DA window whose mean, after this batch's push, is uniform: DA changes nothing.
        algorithm.da_queue.history.copy_((32 / 3 - torch.tensor(CONFIDENT)) / 31)
    weak = [*torch.tensor(CONFIDENT).log().tolist()]
    batch = {
        "x": _images([[0.0, 0.0, 0.0, *E1]]),
        "y": torch.tensor([0]),
        "x_idx": torch.tensor([0]),
        "u_w": _images([[*weak, *E1], [*weak, *E2]]),  # both predict [0.9, 0.05, 0.05]
        "u_s0": _images([[0.0, 0.0, 0.0, *E1], [0.0, 0.0, 0.0, *E2]]),  # uniform predictions
        "u_s1": _images([[0.0, 0.0, 0.0, *E1], [0.0, 0.0, 0.0, *E2]]),
        "u_y": torch.tensor([0, 1]),
    }
    return algorithm, batch


def test_hand_computed_loss_on_a_fixed_batch():
    algorithm, batch = _hand_setup(threshold=0.85)
    out = algorithm(batch, step=0)
    # L_x = ln 3 (zero logits); L_u = H(q, uniform) = ln 3 for both (max q = 0.9 ≥ 0.85).
    assert out["loss_x"].item() == pytest.approx(math.log(3), abs=1e-6)
    assert out["loss_u"].item() == pytest.approx(math.log(3), abs=1e-6)
    # Graph rows [1, 0.815] / 1.815; embedding similarities softmax([5, 0]) (and mirrored).
    edge = 0.815 / 1.815
    loss_c = -((1 - edge) * math.log(SIM_SELF + 1e-7) + edge * math.log(SIM_OTHER + 1e-7))
    assert loss_c == pytest.approx(2.25188765, abs=1e-7)
    assert out["loss_c"].item() == pytest.approx(loss_c, abs=1e-5)
    assert out["loss"].item() == pytest.approx(2 * math.log(3) + loss_c, abs=1e-5)
    assert out["graph_edges"].item() == 2.0
    assert out["pseudo_label_accuracy"].item() == 0.5
    # τ = 0.95 masks both (max q = 0.9); λ_c scales the contrastive term.
    strict, batch = _hand_setup(threshold=0.95, lambda_c=2.0)
    out = strict(batch, step=0)
    assert out["loss_u"].item() == 0.0 and out["mask_rate"].item() == 0.0
    assert out["loss"].item() == pytest.approx(math.log(3) + 2 * loss_c, abs=1e-5)


def test_on_step_end_queues_weak_and_labeled_embeddings_and_the_batch_mean():
    algorithm, batch = _hand_setup(threshold=0.85)
    out = algorithm(batch, step=0)
    algorithm.on_step_end(batch, out, step=0)
    queue = algorithm.queue
    assert int(queue.count) == 3
    assert torch.allclose(queue.embeddings[:3], torch.tensor([E1, E2, E1]))
    expected_probs = torch.tensor([CONFIDENT, CONFIDENT, [1.0, 0.0, 0.0]])
    assert torch.allclose(queue.probs[:3], expected_probs, atol=1e-6)
    assert torch.allclose(algorithm.da_queue.history[-1], torch.tensor(CONFIDENT), atol=1e-6)
    state = algorithm.state_dict()
    assert {"queue.embeddings", "queue.probs", "queue.count", "da_queue.history"} <= set(state)


def test_memory_smoothing_starts_once_the_queue_has_filled():
    algorithm, batch = _hand_setup(threshold=0.0, queue_size=4)
    batch["u_s0"] = _images([[2.0, 0.0, 0.0, *E1], [2.0, 0.0, 0.0, *E2]])
    with torch.no_grad():  # a full queue: two "class 1" items near e1, two "class 2" near e2
        algorithm.queue.push(torch.tensor([E1, E1, E2, E2]), torch.eye(3)[[1, 1, 2, 2]])
    unsmoothed = algorithm(batch, step=0)["loss_u"]
    algorithm.queue.count += 1  # more than K items pushed: the code's `it > queue_batch`
    smoothed_out = algorithm(batch, step=0)
    targets = memory_smoothing(
        torch.tensor([CONFIDENT, CONFIDENT]),
        torch.tensor([E1, E2]),
        algorithm.queue.embeddings,
        algorithm.queue.probs,
        alpha=0.9,
        temperature=0.2,
    )
    log_probs = torch.tensor([2.0, 0.0, 0.0]).log_softmax(dim=-1)
    expected = -(targets * log_probs).sum(dim=1).mean()
    assert smoothed_out["loss_u"].item() == pytest.approx(expected.item(), abs=1e-6)
    assert smoothed_out["loss_u"].item() > unsmoothed.item()  # mass moved off class 0


def _random_batch() -> dict:
    torch.manual_seed(0)
    views = {k: torch.randn(8, 1, 8, 8, requires_grad=True) for k in ("u_w", "u_s0", "u_s1")}
    return {
        "x": torch.randn(4, 1, 8, 8),
        "y": torch.tensor([0, 1, 2, 0]),
        "x_idx": torch.arange(4),
        "u_y": torch.tensor([0, 1, 2, 0, 1, 2, -1, -1]),
        **views,
    }


@pytest.mark.parametrize("lambda_c", [1.0, 0.0])
def test_keys_finite_and_gradients_only_through_the_strong_views(lambda_c):
    batch = _random_batch()
    algorithm = CoMatch(NoBatchNormNet(), info(3, 4), threshold=0.0, lambda_c=lambda_c)
    out = algorithm(batch, step=0)
    keys = {"loss", "loss_x", "loss_u", "loss_c", "mask_rate", "pseudo_label_accuracy"}
    assert keys | {"unlabeled_distribution", "graph_edges", "state"} <= set(out)
    assert set(out["state"]) == {"queue_embeddings", "queue_probs"}
    logged = {k: v for k, v in out.items() if k != "state"}
    assert all(torch.isfinite(v).all() for v in [*logged.values(), *out["state"].values()])
    assert all(not v.requires_grad for k, v in logged.items() if k != "loss")
    out["loss"].backward()
    assert batch["u_w"].grad is None or not batch["u_w"].grad.any()
    assert batch["u_s0"].grad.abs().sum() > 0
    # u_s1 enters only the contrastive loss, and so does the projection head.
    assert (batch["u_s1"].grad.abs().sum() > 0) == (lambda_c > 0)
    head_grad = algorithm.head[0].weight.grad
    assert (head_grad is not None and head_grad.abs().sum() > 0) == (lambda_c > 0)


def _digits_config(steps: int):
    overrides = {
        "algorithm.name": "comatch",
        "algorithm.mu": 2,
        "algorithm.queue_size": 96,  # 2 steps of (1 + μ)·B: smoothing from step 3 on
        "train.steps": steps,
        "train.eval_every": steps,
        "train.batch_size": 16,
        "train.progress": False,
        "augment.strong": "randaugment",
    }
    return build_config(None, overrides)


def test_resume_restores_the_queue_and_da_window_exactly(tmp_path):
    first = build_trainer(_digits_config(4), tmp_path / "a")
    first.fit()
    resumed = build_trainer(_digits_config(4), tmp_path / "b")
    resumed.load_state_dict(load_checkpoint(tmp_path / "a" / "checkpoint.pt", resumed.device))
    a, b = first.algorithm, resumed.algorithm
    assert int(a.queue.count) == 4 * 48  # (1 + μ)·B per step
    for name in ("queue.embeddings", "queue.probs", "queue.count", "da_queue.history"):
        assert torch.equal(a.get_buffer(name), b.get_buffer(name)), name
    assert torch.equal(first.train_step()["loss"], resumed.train_step()["loss"])


def test_second_strong_view_is_simclrs_augmentation():
    # salesforce/CoMatch datasets/cifar.py: trans_strong1 is the SimCLR pipeline, not RandAugment
    trainer = build_trainer(_digits_config(4), None)
    assert trainer.algorithm.views["u_s1"] == "simclr"
    assert isinstance(trainer.batches.views.simclr, SimCLRAugment)
    assert trainer.batches.views.simclr.hflip is False  # digits are not flipped


@pytest.mark.slow
def test_short_digits_run_beats_chance():
    summary = build_trainer(_digits_config(150), None).fit()
    assert summary["test_accuracy_raw"] > 0.5  # chance: 0.1
