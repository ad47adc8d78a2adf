import math

import pytest
import torch
import torch.nn.functional as F

from semisup.algorithms.freematch import FreeMatch
from semisup.math import losses

from .helpers import LogitsAsImages, assert_resumes_exactly, info


class USBFreeMatch:
    """FreeMatch's step as USB writes it, transcribed for comparison.

    microsoft/Semi-supervised-learning `semilearn/algorithms/freematch/utils.py`
    (`FreeMatchThresholingHook.update` then `.masking`) and `freematch/freematch.py`
    (`train_step`, `entropy_loss`), hard labels, one process.
    """

    def __init__(self, num_classes, m, use_quantile=False, clip_thresh=False):
        self.p_model = torch.ones((num_classes,)) / num_classes
        self.label_hist = torch.ones((num_classes,)) / num_classes
        self.time_p = self.p_model.mean()
        self.m, self.use_quantile, self.clip_thresh = m, use_quantile, clip_thresh

    def update(self, probs_x_ulb):
        max_probs, max_idx = torch.max(probs_x_ulb, dim=-1, keepdim=True)
        if self.use_quantile:
            self.time_p = self.time_p * self.m + (1 - self.m) * torch.quantile(max_probs, 0.8)
        else:
            self.time_p = self.time_p * self.m + (1 - self.m) * max_probs.mean()
        if self.clip_thresh:
            self.time_p = torch.clip(self.time_p, 0.0, 0.95)
        self.p_model = self.p_model * self.m + (1 - self.m) * probs_x_ulb.mean(dim=0)
        hist = torch.bincount(max_idx.reshape(-1), minlength=self.p_model.shape[0])
        hist = hist.to(self.p_model.dtype)
        self.label_hist = self.label_hist * self.m + (1 - self.m) * (hist / hist.sum())

    def masking(self, logits_x_ulb):
        probs_x_ulb = torch.softmax(logits_x_ulb.detach(), dim=-1)
        self.update(probs_x_ulb)
        max_probs, max_idx = probs_x_ulb.max(dim=-1)
        mod = self.p_model / torch.max(self.p_model, dim=-1)[0]
        return max_probs.ge(self.time_p * mod[max_idx]).to(max_probs.dtype)

    @staticmethod
    def entropy_loss(mask, logits_s, prob_model, label_hist):
        logits_s = logits_s[mask.bool()]
        prob_s = logits_s.softmax(dim=-1)
        _, pred_label_s = torch.max(prob_s, dim=-1)
        hist_s = torch.bincount(pred_label_s, minlength=logits_s.shape[1]).to(logits_s.dtype)
        hist_s = hist_s / hist_s.sum()
        inverse_label_hist = 1 / label_hist.reshape(1, -1)
        inverse_label_hist[inverse_label_hist == float("inf")] = 0.0
        mod_prob_model = prob_model.reshape(1, -1) * inverse_label_hist
        mod_prob_model = mod_prob_model / mod_prob_model.sum(dim=-1, keepdim=True)
        inverse_hist_s = 1 / hist_s
        inverse_hist_s[inverse_hist_s == float("inf")] = 0.0
        mod_mean_prob_s = prob_s.mean(dim=0, keepdim=True) * inverse_hist_s
        mod_mean_prob_s = mod_mean_prob_s / mod_mean_prob_s.sum(dim=-1, keepdim=True)
        return (mod_prob_model * torch.log(mod_mean_prob_s + 1e-12)).sum(dim=1).mean()

    def step(self, logits_x_lb, y_lb, logits_x_ulb_w, logits_x_ulb_s, lambda_u, lambda_e):
        sup_loss = F.cross_entropy(logits_x_lb, y_lb)
        mask = self.masking(logits_x_ulb_w)
        pseudo_label = torch.argmax(logits_x_ulb_w.detach(), dim=-1)
        unsup_loss = (F.cross_entropy(logits_x_ulb_s, pseudo_label, reduction="none") * mask).mean()
        ent_loss = 0.0
        if mask.sum() > 0:
            ent_loss = self.entropy_loss(mask, logits_x_ulb_s, self.p_model, self.label_hist)
        return sup_loss + lambda_u * unsup_loss + lambda_e * ent_loss, unsup_loss, mask


def _random_steps(count, seed, scale=3.0):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(count):
        yield {
            "x": scale * torch.randn(2, 3, 1, 1, generator=generator),
            "y": torch.randint(0, 3, (2,), generator=generator),
            "u_w": scale * torch.randn(6, 3, 1, 1, generator=generator),
            "u_s": scale * torch.randn(6, 3, 1, 1, generator=generator),
        }


@pytest.mark.parametrize(
    "options", [{}, {"use_quantile": True}, {"use_quantile": True, "clip_threshold": True}]
)
def test_steps_match_the_usb_transcription(options):
    # Momentum 0.5 so that the thresholds move within a few steps; large λ_f to weigh L_f.
    algorithm = FreeMatch(
        LogitsAsImages(), info(), lambda_u=2.0, lambda_f=0.5, momentum=0.5, **options
    )
    reference = USBFreeMatch(
        3,
        m=0.5,
        use_quantile=options.get("use_quantile", False),
        clip_thresh=options.get("clip_threshold", False),
    )
    masks = []
    for step, batch in enumerate(_random_steps(6, seed=5)):
        out = algorithm(batch, step)
        loss, loss_u, mask = reference.step(
            batch["x"].flatten(1),
            batch["y"],
            batch["u_w"].flatten(1),
            batch["u_s"].flatten(1),
            lambda_u=2.0,
            lambda_e=0.5,
        )
        assert out["loss"].item() == pytest.approx(loss.item(), abs=1e-5)
        assert out["loss_u"].item() == pytest.approx(loss_u.item(), abs=1e-6)
        assert out["mask_rate"].item() == pytest.approx(mask.mean().item())
        algorithm.on_step_end(batch, out, step)
        assert torch.allclose(algorithm.time_p, reference.time_p, atol=1e-7)
        assert torch.allclose(algorithm.p_model, reference.p_model, atol=1e-7)
        assert torch.allclose(algorithm.label_hist, reference.label_hist, atol=1e-7)
        masks.append(mask.mean().item())
    assert any(0 < rate < 1 for rate in masks)  # the thresholds did select


def test_no_image_above_the_threshold_means_no_fairness_term():
    # A confident history (τ_t = 0.9) and near-uniform weak views (max p ≈ 0.4): none passes.
    algorithm = FreeMatch(LogitsAsImages(), info())
    algorithm.time_p.fill_(0.9)
    batch = next(_random_steps(1, seed=0, scale=0.1))
    out = algorithm(batch, step=0)
    assert out["mask_rate"].item() == 0.0
    assert out["loss_f"].item() == 0.0 and out["loss_u"].item() == 0.0
    assert out["loss"].item() == pytest.approx(out["loss_x"].item())


def test_fairness_loss_by_hand():
    # docs/algorithms.md#numeric-checks FR1.
    # Two images predicting (1/2, 1/4, 1/4) and (1/4, 1/2, 1/4): h̄ = (1/2, 1/2, 0), so the
    # histogram-normalised mean is (1/2, 1/2, 0). p̃/h̃ = (0.5/0.5, 0.3/0.25, 0.2/0.25) = (1, 1.2,
    # 0.8), normalised (1/3, 0.4, 4/15). L_f = (1/3 + 0.4)·ln(1/2) + 4/15·ln(1e-12).
    logits = torch.tensor([[math.log(2), 0.0, 0.0], [0.0, math.log(2), 0.0]], requires_grad=True)
    loss = losses.fairness_loss(
        logits, torch.tensor([0.5, 0.3, 0.2]), torch.tensor([0.5, 0.25, 0.25])
    )
    expected = (1 / 3 + 0.4) * math.log(0.5) + 4 / 15 * math.log(1e-12)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert logits.grad.abs().sum() > 0


def test_no_gradient_through_the_weak_view():
    algorithm = FreeMatch(LogitsAsImages(), info(), lambda_f=1.0)
    batch = next(_random_steps(1, seed=2))
    batch["u_w"].requires_grad_(True)
    batch["u_s"].requires_grad_(True)
    out = algorithm(batch, step=0)
    (out["loss"] - out["loss_x"]).backward()
    assert out["mask_rate"].item() > 0
    assert batch["u_w"].grad is None or not batch["u_w"].grad.any()
    assert batch["u_s"].grad.abs().sum() > 0
    assert all(not v.requires_grad for k, v in out.items() if k not in ("loss", "state"))


def test_resume_restores_the_thresholds_exactly(tmp_path):
    first = assert_resumes_exactly(tmp_path, {"algorithm.name": "freematch"})
    assert first.algorithm.time_p.item() != pytest.approx(1 / 10)  # the EMAs were written
