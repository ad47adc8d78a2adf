import math

import pytest
import torch
import torch.nn.functional as F

from semisup.algorithms.adamatch import AdaMatch

from .helpers import LogitsAsImages, as_images, assert_resumes_exactly, info
from .test_softmatch import USBDistAlignEMA


class USBAdaMatch:
    """AdaMatch's step as USB writes it, transcribed for comparison.

    microsoft/Semi-supervised-learning `semilearn/algorithms/adamatch/adamatch.py`
    (`train_step`, `DistAlignEMAHook` with p_target_type='model') and `adamatch/utils.py`
    (`AdaMatchThresholdingHook`), hard labels, one process.
    """

    def __init__(self, num_classes, m, p_cutoff):
        self.align = USBDistAlignEMA(num_classes, m, "model")
        self.p_cutoff = p_cutoff

    def step(self, logits_x_lb, y_lb, logits_x_ulb_w, logits_x_ulb_s, lambda_u):
        sup_loss = F.cross_entropy(logits_x_lb, y_lb)
        probs_x_lb = torch.softmax(logits_x_lb.detach(), dim=-1)
        probs_x_ulb_w = torch.softmax(logits_x_ulb_w.detach(), dim=-1)
        probs_x_ulb_w = self.align.dist_align(probs_x_ulb_w, probs_x_lb)
        max_probs, _ = probs_x_lb.max(dim=-1)
        p_cutoff = max_probs.mean() * self.p_cutoff
        max_probs, _ = probs_x_ulb_w.max(dim=-1)
        mask = max_probs.ge(p_cutoff).to(max_probs.dtype)
        pseudo_label = torch.argmax(probs_x_ulb_w, dim=-1)  # of the aligned probabilities
        unsup_loss = (F.cross_entropy(logits_x_ulb_s, pseudo_label, reduction="none") * mask).mean()
        return sup_loss + lambda_u * unsup_loss, unsup_loss, mask


def _random_steps(count, seed):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(count):
        yield {
            "x": 2 * torch.randn(3, 3, 1, 1, generator=generator),
            "y": torch.randint(0, 3, (3,), generator=generator),
            "u_w": 3 * torch.randn(6, 3, 1, 1, generator=generator),
            "u_s": 3 * torch.randn(6, 3, 1, 1, generator=generator),
        }


def test_steps_match_the_usb_transcription():
    algorithm = AdaMatch(LogitsAsImages(), info(), lambda_u=2.0, momentum=0.5)
    reference = USBAdaMatch(3, m=0.5, p_cutoff=0.95)
    masks = []
    for step, batch in enumerate(_random_steps(5, seed=7)):
        out = algorithm(batch, step)
        loss, loss_u, mask = reference.step(
            batch["x"].flatten(1),
            batch["y"],
            batch["u_w"].flatten(1),
            batch["u_s"].flatten(1),
            lambda_u=2.0,
        )
        assert out["loss"].item() == pytest.approx(loss.item(), abs=1e-6)
        assert out["loss_u"].item() == pytest.approx(loss_u.item(), abs=1e-6)
        assert out["mask_rate"].item() == pytest.approx(mask.mean().item())
        algorithm.on_step_end(batch, out, step)
        assert torch.allclose(algorithm.alignment.p_model, reference.align.p_model, atol=1e-7)
        assert torch.allclose(algorithm.alignment.p_target, reference.align.p_target, atol=1e-7)
        masks.append(mask.mean().item())
    assert any(0 < rate < 1 for rate in masks)  # the relative threshold did select


def test_relative_threshold_and_aligned_pseudo_labels_by_hand():
    # docs/algorithms.md#numeric-checks AM1.
    # Labeled logits (ln 9, 0) and (0, 0): max p = 0.9 and 0.5, threshold 0.95·0.7 = 0.665.
    # First step: p_model = the unlabeled batch mean; p_target = 0.999·uniform + 0.001·(0.7, 0.3).
    algorithm = AdaMatch(LogitsAsImages(), info(num_classes=2, num_labeled=2))
    batch = {
        "x": as_images([[math.log(9), 0.0], [0.0, 0.0]]),
        "y": torch.tensor([0, 1]),
        "u_w": as_images([[math.log(3), 0.0], [math.log(3), 0.0]]),  # p = (0.75, 0.25) twice
        "u_s": as_images([[0.0, 0.0], [0.0, 0.0]]),
    }
    out = algorithm(batch, step=0)
    assert out["threshold"].item() == pytest.approx(0.665)
    # Aligned: p·p_target/p_model ∝ p_target, so max q̃ = 0.5002 < 0.665: nothing is used.
    assert out["mask_rate"].item() == 0.0
    target = out["state"]["p_target"]
    assert torch.allclose(target, torch.tensor([0.999 / 2 + 0.0007, 0.999 / 2 + 0.0003]))


def test_no_gradient_through_the_weak_view():
    algorithm = AdaMatch(LogitsAsImages(), info(), threshold=0.0)
    batch = next(_random_steps(1, seed=2))
    batch["u_w"].requires_grad_(True)
    batch["u_s"].requires_grad_(True)
    out = algorithm(batch, step=0)
    (out["loss"] - out["loss_x"]).backward()
    assert batch["u_w"].grad is None or not batch["u_w"].grad.any()
    assert batch["u_s"].grad.abs().sum() > 0
    assert all(not v.requires_grad for k, v in out.items() if k not in ("loss", "state"))


def test_resume_restores_the_alignment_exactly(tmp_path):
    first = assert_resumes_exactly(tmp_path, {"algorithm.name": "adamatch"})
    assert bool(first.algorithm.alignment.started)  # the state was written
