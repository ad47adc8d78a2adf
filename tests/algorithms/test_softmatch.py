import math

import pytest
import torch
import torch.nn.functional as F

from semisup.algorithms.softmatch import SoftMatch

from .helpers import LogitsAsImages, as_images, assert_resumes_exactly, info


class USBDistAlignEMA:
    """USB `semilearn/algorithms/hooks/dist_align.py` `DistAlignEMAHook`, one process."""

    def __init__(self, num_classes, m, p_target_type):
        self.m = m
        self.update_p_target = p_target_type == "model"
        self.p_target = torch.ones((num_classes,)) / num_classes
        self.p_model = None

    def dist_align(self, probs_x_ulb, probs_x_lb=None):
        if self.p_model is None:
            self.p_model = torch.mean(probs_x_ulb, dim=0)
        else:
            self.p_model = self.p_model * self.m + torch.mean(probs_x_ulb, dim=0) * (1 - self.m)
        if self.update_p_target:
            self.p_target = self.p_target * self.m + torch.mean(probs_x_lb, dim=0) * (1 - self.m)
        aligned = probs_x_ulb * (self.p_target + 1e-6) / (self.p_model + 1e-6)
        return aligned / aligned.sum(dim=-1, keepdim=True)


class USBSoftMatch:
    """SoftMatch's step as USB writes it, transcribed for comparison.

    microsoft/Semi-supervised-learning `semilearn/algorithms/softmatch/softmatch.py`
    (`train_step`) and `softmatch/utils.py` (`SoftMatchWeightingHook`, per_class=False), hard
    labels, one process.
    """

    def __init__(self, num_classes, m, n_sigma, dist_uniform):
        self.align = USBDistAlignEMA(num_classes, m, "uniform" if dist_uniform else "model")
        self.m, self.n_sigma = m, n_sigma
        self.prob_max_mu_t = torch.tensor(1.0 / num_classes)
        self.prob_max_var_t = torch.tensor(1.0)

    def masking(self, probs_x_ulb):
        max_probs, _ = probs_x_ulb.max(dim=-1)
        prob_max_mu_t = torch.mean(max_probs)
        prob_max_var_t = torch.var(max_probs, unbiased=True)
        self.prob_max_mu_t = self.m * self.prob_max_mu_t + (1 - self.m) * prob_max_mu_t.item()
        self.prob_max_var_t = self.m * self.prob_max_var_t + (1 - self.m) * prob_max_var_t.item()
        mu, var = self.prob_max_mu_t, self.prob_max_var_t
        below = torch.clamp(max_probs - mu, max=0.0)
        return torch.exp(-((below**2) / (2 * var / (self.n_sigma**2))))

    def step(self, logits_x_lb, y_lb, logits_x_ulb_w, logits_x_ulb_s, lambda_u):
        sup_loss = F.cross_entropy(logits_x_lb, y_lb)
        probs_x_lb = torch.softmax(logits_x_lb.detach(), dim=-1)
        probs_x_ulb_w = torch.softmax(logits_x_ulb_w.detach(), dim=-1)
        probs_x_ulb_w = self.align.dist_align(probs_x_ulb_w, probs_x_lb)
        mask = self.masking(probs_x_ulb_w)
        pseudo_label = torch.argmax(logits_x_ulb_w.detach(), dim=-1)  # un-aligned
        unsup_loss = (F.cross_entropy(logits_x_ulb_s, pseudo_label, reduction="none") * mask).mean()
        return sup_loss + lambda_u * unsup_loss, unsup_loss, mask


def _random_steps(count, seed):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(count):
        yield {
            "x": 2 * torch.randn(2, 3, 1, 1, generator=generator),
            "y": torch.randint(0, 3, (2,), generator=generator),
            "u_w": 2 * torch.randn(6, 3, 1, 1, generator=generator),
            "u_s": 2 * torch.randn(6, 3, 1, 1, generator=generator),
        }


@pytest.mark.parametrize("uniform", [True, False])
def test_steps_match_the_usb_transcription(uniform):
    # Momentum 0.5 so that the Gaussian narrows within a few steps and weights fall below 1.
    algorithm = SoftMatch(
        LogitsAsImages(), info(), lambda_u=2.0, momentum=0.5, uniform_alignment=uniform
    )
    reference = USBSoftMatch(3, m=0.5, n_sigma=2, dist_uniform=uniform)
    for step, batch in enumerate(_random_steps(5, seed=11)):
        out = algorithm(batch, step)
        loss, loss_u, weight = reference.step(
            batch["x"].flatten(1),
            batch["y"],
            batch["u_w"].flatten(1),
            batch["u_s"].flatten(1),
            lambda_u=2.0,
        )
        assert out["loss"].item() == pytest.approx(loss.item(), abs=1e-6)
        assert out["loss_u"].item() == pytest.approx(loss_u.item(), abs=1e-6)
        assert out["mask_rate"].item() == pytest.approx(weight.mean().item(), abs=1e-6)
        algorithm.on_step_end(batch, out, step)
        assert torch.allclose(algorithm.alignment.p_model, reference.align.p_model, atol=1e-7)
        assert torch.allclose(algorithm.alignment.p_target, reference.align.p_target, atol=1e-7)
        assert algorithm.gaussian_mean.item() == pytest.approx(reference.prob_max_mu_t.item())
        assert algorithm.gaussian_var.item() == pytest.approx(reference.prob_max_var_t.item())
    assert out["mask_rate"].item() < 0.99  # some weights fell below 1


def test_weights_by_hand_at_the_first_step():
    # docs/algorithms.md#numeric-checks SM2.
    # Weak views (ln 4, 0, 0) and (0, 0, 0): p = (2/3, 1/6, 1/6) and uniform. The first batch
    # mean is p̂ = (1/2, 1/4, 1/4); alignment to uniform gives (1/2, 1/4, 1/4) and (1/5, 2/5, 2/5)
    # (ε aside), top confidences 1/2 and 2/5.
    # μ = 0.999/3 + 0.001·0.45, σ² = 0.999 + 0.001·0.005 (unbiased variance of {0.5, 0.4}).
    algorithm = SoftMatch(LogitsAsImages(), info())
    batch = {
        "x": as_images([[1.0, 0.0, 0.0]]),
        "y": torch.tensor([0]),
        "u_w": as_images([[math.log(4), 0.0, 0.0], [0.0, 0.0, 0.0]]),
        "u_s": as_images([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]),
    }
    out = algorithm(batch, step=0)
    mean = 0.999 / 3 + 0.001 * 0.45
    var = 0.999 + 0.001 * 0.005
    assert out["gaussian_mean"].item() == pytest.approx(mean, abs=1e-6)
    assert out["gaussian_std"].item() == pytest.approx(math.sqrt(var), abs=1e-6)
    # Both confidences exceed μ ≈ 0.3335: weight 1, the plain CE of the uniform strong views.
    assert out["mask_rate"].item() == pytest.approx(1.0)
    assert out["loss_u"].item() == pytest.approx(math.log(3), abs=1e-6)
    # A narrow Gaussian above both: weights exp(−(c − μ)²·n² / (2σ²)).
    algorithm.gaussian_mean.fill_(0.9)
    algorithm.gaussian_var.fill_(0.01)
    weights = algorithm(batch, step=0)["mask_rate"].item()
    mean, var = 0.999 * 0.9 + 0.001 * 0.45, 0.999 * 0.01 + 0.001 * 0.005
    expected = [math.exp(-((c - mean) ** 2) * 4 / (2 * var)) for c in (0.5, 0.4)]
    assert weights == pytest.approx(sum(expected) / 2, rel=1e-4)


def test_no_gradient_through_the_weak_view():
    algorithm = SoftMatch(LogitsAsImages(), info())
    batch = next(_random_steps(1, seed=2))
    batch["u_w"].requires_grad_(True)
    batch["u_s"].requires_grad_(True)
    out = algorithm(batch, step=0)
    (out["loss"] - out["loss_x"]).backward()
    assert batch["u_w"].grad is None or not batch["u_w"].grad.any()
    assert batch["u_s"].grad.abs().sum() > 0
    assert all(not v.requires_grad for k, v in out.items() if k not in ("loss", "state"))


def test_resume_restores_the_alignment_and_the_gaussian_exactly(tmp_path):
    first = assert_resumes_exactly(tmp_path, {"algorithm.name": "softmatch"})
    assert bool(first.algorithm.alignment.started)  # the state was written
    assert first.algorithm.gaussian_var.item() < 1.0
