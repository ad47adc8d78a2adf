import math

import pytest
import torch
from torch import nn

from semisup.algorithms.base import TaskInfo
from semisup.algorithms.darp import DARP, distribution_matching, remove_noisy_entries
from semisup.config import build_config
from semisup.engine.checkpoint import load_checkpoint
from semisup.errors import UserError
from semisup.experiment import build_trainer

from .helpers import LogitsAsImages, as_images


def darp_info(num_unlabeled: int = 6, total_steps: int = 100) -> TaskInfo:
    return TaskInfo(
        num_classes=3,
        num_labeled=6,
        labeled_class_counts=(3, 2, 1),
        total_steps=total_steps,
        num_unlabeled=num_unlabeled,
    )


def test_uniform_predictions_are_refined_to_the_target_ratio():
    # Equal rows have equal entropies, so by symmetry every refined row is target / N.
    refined = distribution_matching(torch.full((4, 2), 0.5), torch.tensor([3.0, 1.0]))
    assert torch.allclose(refined, torch.tensor([[0.75, 0.25]] * 4), atol=1e-6)


def test_refined_rows_sum_to_one_and_columns_to_the_target():
    torch.manual_seed(0)
    probs = (2 * torch.randn(300, 4)).softmax(dim=-1)
    target = torch.tensor([120.0, 90.0, 60.0, 30.0])
    refined = distribution_matching(probs, target)
    assert torch.allclose(refined.sum(dim=1), torch.ones(300), atol=1e-6)
    assert torch.allclose(refined.sum(dim=0), target, rtol=1e-3)
    assert (refined >= 0).all()
    # Confident rows move less than unsure ones (weights 1 / entropy).
    entropy = -(probs * probs.log()).sum(dim=1)
    change = (refined - probs).abs().sum(dim=1)
    confident, unsure = entropy < entropy.quantile(0.2), entropy > entropy.quantile(0.8)
    assert change[confident].mean() < change[unsure].mean()


def test_predictions_that_already_match_the_target_are_unchanged():
    torch.manual_seed(1)
    probs = (2 * torch.randn(50, 3)).softmax(dim=-1)
    assert torch.allclose(distribution_matching(probs, probs.sum(dim=0)), probs, atol=1e-5)
    # With α large enough to keep every entry, the noisy-entry removal changes nothing either.
    cleaned = remove_noisy_entries(probs, probs.sum(dim=0), alpha=100.0)
    assert torch.allclose(cleaned, probs, atol=1e-5)


def test_noisy_entry_removal_by_hand():
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
    # α = 1, N̂ = [1, 2]: class 0 keeps its top 1 entry (row 0), class 1 its top 2 (rows 2, 3);
    # row 1 keeps nothing and becomes uniform (its 1e-6 entries), the others one-hot.
    cleaned = remove_noisy_entries(probs, torch.tensor([1.0, 2.0]), alpha=1.0)
    expected = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0], [0.0, 1.0]])
    assert torch.allclose(cleaned, expected, atol=1e-5)


def _batch(u_w_logits, u_idx, strong_logits=None):
    n = len(u_w_logits)
    strong = as_images(strong_logits or [[0.0, 0.0, 0.0]] * n)
    return {
        "x": as_images([[0.0, 0.0, 0.0]]),
        "y": torch.tensor([0]),
        "u_w": as_images(u_w_logits),
        "u_s0": strong,
        "u_s1": strong,
        "u_idx": torch.tensor(u_idx),
        "u_y": torch.tensor([0] * n),
    }


def test_warm_up_is_fixmatch_with_two_strong_views():
    algorithm = DARP(LogitsAsImages(), darp_info(), warmup_fraction=0.5)
    out = algorithm(_batch([[10.0, 0.0, 0.0], [0.0, 0.0, 0.0]], [0, 1]), step=49)
    # Mask [1, 0] repeated over two strong views of zero logits: (2 ln 3) / 4.
    assert out["loss_u"].item() == pytest.approx(math.log(3) / 2, abs=1e-6)
    assert out["loss_x"].item() == pytest.approx(math.log(3), abs=1e-6)
    assert out["mask_rate"].item() == 0.5 and "refined_table" not in out["state"]


def test_refinement_uses_the_table_with_this_step_and_is_stored_after_the_step():
    algorithm = DARP(LogitsAsImages(), darp_info(), warmup_fraction=0.5, period=10)
    with torch.no_grad():
        algorithm.predictions.copy_(
            (3 * torch.randn(6, 3, generator=torch.Generator().manual_seed(0))).softmax(-1)
        )
    batch = _batch([[10.0, 0.0, 0.0], [0.0, 5.0, 0.0]], [2, 4])
    out = algorithm(batch, step=50)  # after warm-up, a refinement step
    table = algorithm.predictions.clone()
    table[[2, 4]] = batch["u_w"].flatten(1).softmax(dim=-1)
    target = torch.tensor([3.0, 2.0, 1.0])  # labeled ratio 3:2:1 of 6 unlabeled images
    expected = distribution_matching(remove_noisy_entries(table, target, 2.0), target)
    assert torch.allclose(algorithm.target, target)
    assert torch.allclose(out["state"]["refined_table"], expected)
    assert out["mask_rate"].item() == (expected[[2, 4]].amax(dim=1) >= 0.95).float().mean().item()
    algorithm.on_step_end(batch, out, step=50)
    assert torch.allclose(algorithm.predictions, table)
    assert torch.equal(algorithm.refined, out["state"]["refined_table"])

    # Between refinements the targets are the stored refined rows, whatever the prediction.
    with torch.no_grad():
        algorithm.refined[[2, 4]] = torch.tensor([[0.0, 0.0, 1.0], [0.5, 0.5, 0.0]])
    later = algorithm(batch, step=51)
    assert "refined_table" not in later["state"] and later["mask_rate"].item() == 0.5
    assert later["pseudo_label_accuracy"].item() == 0.0  # class 2, true class 0


def test_threshold_one_and_lambda():
    batch = _batch([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0]], [0, 1], [[0.0, 1.0, 0.0]] * 2)
    assert DARP(LogitsAsImages(), darp_info(), threshold=1.0)(batch, 0)["loss_u"] == 0
    out = DARP(LogitsAsImages(), darp_info(), threshold=0.5, lambda_u=3.0)(batch, 0)
    assert out["loss"].item() == pytest.approx((out["loss_x"] + 3 * out["loss_u"]).item())


def test_gradients_flow_only_through_the_strong_views():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    views = {k: torch.randn(4, 1, 8, 8, requires_grad=True) for k in ("u_w", "u_s0", "u_s1")}
    batch = {"x": torch.randn(2, 1, 8, 8), "y": torch.tensor([0, 1]), "u_idx": torch.arange(4)}
    algorithm = DARP(model, darp_info(), threshold=0.0)
    out = algorithm({**batch, **views}, step=0)
    assert {"loss", "loss_x", "loss_u", "mask_rate", "unlabeled_distribution"} <= set(out)
    assert all(torch.isfinite(v).all() for k, v in out.items() if k != "state")
    (out["loss"] - out["loss_x"]).backward()
    assert views["u_w"].grad is None
    assert views["u_s0"].grad.abs().sum() > 0 and views["u_s1"].grad.abs().sum() > 0


def test_darp_needs_unlabeled_data_and_sane_settings():
    with pytest.raises(UserError, match="unlabeled"):
        DARP(LogitsAsImages(), darp_info(num_unlabeled=0))
    with pytest.raises(UserError, match="period"):
        DARP(LogitsAsImages(), darp_info(), period=0)


def _digits_config(steps: int, **extra):
    overrides = {
        "algorithm.name": "darp",
        "algorithm.mu": 2,
        "train.steps": steps,
        "train.eval_every": steps,
        "train.batch_size": 16,
        "train.progress": False,
        "data.imbalance_ratio": 10,
        "data.labeled_fraction": 0.2,
        "augment.strong": "randaugment",
    }
    return build_config(None, {**overrides, **extra})


def test_refinement_runs_inside_training_and_is_checkpointed(tmp_path):
    cfg = _digits_config(12, **{"algorithm.warmup_fraction": 0.5, "algorithm.period": 5})
    trainer = build_trainer(cfg, tmp_path)
    trainer.fit()  # refinements at steps 6 and 10 (0-based)
    algorithm = trainer.algorithm
    assert algorithm.start_step == 6
    assert not torch.allclose(algorithm.refined, torch.full_like(algorithm.refined, 0.1))
    assert torch.allclose(algorithm.refined.sum(dim=1), torch.ones(len(algorithm.refined)))
    state = load_checkpoint(tmp_path / "checkpoint.pt")["algorithm"]
    assert torch.equal(state["refined"], algorithm.refined)
    assert torch.equal(state["predictions"], algorithm.predictions)


@pytest.mark.slow
def test_short_long_tailed_digits_run_beats_chance():
    summary = build_trainer(_digits_config(200), None).fit()
    assert summary["test_accuracy_raw"] > 0.5  # chance: 0.1 (balanced test set)
