import math

import pytest
import torch
import torch.nn.functional as F

from semisup.algorithms.defixmatch import DeFixMatch

from .helpers import LogitsAsImages, as_images, assert_resumes_exactly, info


def usb_defixmatch_step(logits_x_lb, logits_x_lb_s, y_lb, logits_x_ulb_w, logits_x_ulb_s, cfg):
    """DeFixMatch's step as USB writes it, transcribed for comparison.

    microsoft/Semi-supervised-learning `semilearn/algorithms/defixmatch/defixmatch.py`
    (`train_step` with `FixedThresholdingHook` masks and hard `PseudoLabelingHook` labels).
    """
    sup_loss = (1 / 2) * (F.cross_entropy(logits_x_lb, y_lb) + F.cross_entropy(logits_x_lb_s, y_lb))
    probs_x_ulb_w = torch.softmax(logits_x_ulb_w.detach(), dim=-1)
    probs_x_lb = torch.softmax(logits_x_lb.detach(), dim=-1)
    mask = probs_x_ulb_w.max(dim=-1)[0].ge(cfg["p_cutoff"]).float()
    mask_lb = probs_x_lb.max(dim=-1)[0].ge(cfg["p_cutoff"]).float()
    pseudo_label = torch.argmax(probs_x_ulb_w, dim=-1)
    unsup = (F.cross_entropy(logits_x_ulb_s, pseudo_label, reduction="none") * mask).mean()
    anti_pseudo_label = torch.argmax(probs_x_lb, dim=-1)
    anti = (F.cross_entropy(logits_x_lb_s, anti_pseudo_label, reduction="none") * mask_lb).mean()
    return sup_loss + cfg["lambda_u"] * (unsup - anti), unsup, anti, mask, mask_lb


def _random_batch(seed):
    generator = torch.Generator().manual_seed(seed)
    return {
        "x": 3 * torch.randn(4, 3, 1, 1, generator=generator),
        "x_s": 3 * torch.randn(4, 3, 1, 1, generator=generator),
        "y": torch.randint(0, 3, (4,), generator=generator),
        "u_w": 3 * torch.randn(8, 3, 1, 1, generator=generator),
        "u_s": 3 * torch.randn(8, 3, 1, 1, generator=generator),
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_step_matches_the_usb_transcription(seed):
    algorithm = DeFixMatch(LogitsAsImages(), info(), threshold=0.8)
    batch = _random_batch(seed)
    out = algorithm(batch, step=0)
    flat = {k: batch[k].flatten(1) for k in ("x", "x_s", "u_w", "u_s")}
    loss, unsup, anti, mask, mask_lb = usb_defixmatch_step(
        flat["x"],
        flat["x_s"],
        batch["y"],
        flat["u_w"],
        flat["u_s"],
        {"p_cutoff": 0.8, "lambda_u": 0.5},
    )
    assert out["loss"].item() == pytest.approx(loss.item(), abs=1e-6)
    assert out["loss_u"].item() == pytest.approx(unsup.item(), abs=1e-6)
    assert out["loss_anti"].item() == pytest.approx(anti.item(), abs=1e-6)
    assert out["mask_rate"].item() == mask.mean().item()
    assert out["mask_rate_labeled"].item() == mask_lb.mean().item()
    assert 0 < mask_lb.mean() < 1 or 0 < mask.mean() < 1


def test_the_debiasing_term_uses_the_labeled_pseudo_label_not_the_label():
    # docs/algorithms.md#numeric-checks DF1.
    # Labeled weak view (ln 99, 0, 0): p = 0.98 ≥ 0.95, pseudo-label 0 although y = 1. Its strong
    # view is uniform: L_anti = ln 3 (over B = 1). No unlabeled image passes: L_u = 0.
    algorithm = DeFixMatch(LogitsAsImages(), info(), lambda_u=1.0)
    batch = {
        "x": as_images([[math.log(99), 0.0, 0.0]]),
        "x_s": as_images([[0.0, 0.0, 0.0]]),
        "y": torch.tensor([1]),
        "u_w": as_images([[0.0, 0.0, 0.0]] * 2),
        "u_s": as_images([[0.0, 0.0, 0.0]] * 2),
    }
    out = algorithm(batch, step=0)
    assert out["loss_anti"].item() == pytest.approx(math.log(3), abs=1e-6)
    assert out["loss_u"].item() == 0.0
    loss_x = (math.log(1 + 1 + 99) + math.log(3)) / 2  # CE(y=1) of the weak and strong views
    assert out["loss_x"].item() == pytest.approx(loss_x, abs=1e-6)
    assert out["loss"].item() == pytest.approx(loss_x - math.log(3), abs=1e-6)


def test_gradients_reach_both_strong_views_and_not_the_weak_unlabeled_one():
    algorithm = DeFixMatch(LogitsAsImages(), info(), threshold=0.0)
    batch = _random_batch(3)
    for key in ("x_s", "u_w", "u_s"):
        batch[key].requires_grad_(True)
    out = algorithm(batch, step=0)
    out["loss"].backward()
    assert batch["u_w"].grad is None or not batch["u_w"].grad.any()
    assert batch["u_s"].grad.abs().sum() > 0 and batch["x_s"].grad.abs().sum() > 0
    assert all(not v.requires_grad for k, v in out.items() if k != "loss")


def test_resume_gives_the_same_next_step(tmp_path):
    assert_resumes_exactly(tmp_path, {"algorithm.name": "defixmatch"})
