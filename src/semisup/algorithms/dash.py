"""Dash (Xu et al., ICML 2021, https://arxiv.org/abs/2109.00650).

FixMatch with a dynamic threshold on the *loss* instead of a fixed one on the confidence: an
unlabeled image is used while the loss of its weak view against its own pseudo-label is at most
ρ_t, and ρ_t decays geometrically from the labeled loss ρ̂ measured after a supervised warm-up.
The authors' code is not public; this follows the paper's Algorithm 1 and, for what the paper
leaves open, USB (microsoft/Semi-supervised-learning `algorithms/dash`):

- warm-up: labeled data only for the first 2048 of 2^20 steps (USB `num_wu_iter`); ρ̂ is the mean
  labeled cross-entropy over the warm-up's last pass through the labeled set (the paper: the
  labeled loss of the warmed-up model; USB uses the loss on its evaluation set);
- ρ_t = max(C·γ^(−k)·ρ̂, ρ_min) with k the number of completed periods of 10 of FixMatch's 1024
  "epochs" since the warm-up (USB updates ρ every 10 epochs); C = 1.0001, γ = 1.27,
  ρ_min = 0.05 (paper and USB);
- pseudo-labels softmax(z_w / T), T = 0.5, while ρ_t > ρ_min, hard argmax once ρ_t = ρ_min
  (then the rule is max p ≥ exp(−0.05) ≈ 0.95, FixMatch's);
- FixMatch's pipeline otherwise: one forward call over concat(x, u_w, u_s), loss averaged over
  all μB images, μ = 7, λ_u = 1, SGD + Nesterov 0.03 with cosine decay, L2 5e-4.

The warm-up and the period are fractions of the run (2048 and 10240 of 2^20 steps by default), so
that short runs anneal too.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semisup.algorithms.base import Algorithm, TaskInfo
from semisup.algorithms.registry import ALGORITHMS
from semisup.math import losses, pseudo


def dash_threshold(
    rho_hat: Tensor, periods_done: int, c: float, gamma: float, rho_min: float
) -> Tensor:
    """ρ = max(C·γ^(−k)·ρ̂, ρ_min), Dash's Algorithm 1 with USB's floor.

    Args:
        rho_hat: ρ̂, the labeled loss after warm-up (scalar tensor).
        periods_done: k, update periods completed since the warm-up (0 right after it).
        c: C > 1.
        gamma: γ > 1, the decay per period.
        rho_min: the floor ρ_min.
    """
    return (c * gamma ** (-periods_done) * rho_hat).clamp(min=rho_min)


@ALGORITHMS.register("dash")
class Dash(Algorithm):
    """Dash (Xu et al., ICML 2021): FixMatch with a loss threshold that decays from ρ̂.

    Algorithm 1 of the paper with FixMatch as the SSL method:

    L = CE(x, y) + λ_u·(1/μB) Σ 1[H(q_b, p(u_w,b)) ≤ ρ_t]·H(q_b, p(u_s,b)), q_b the pseudo-label
    (no gradient). The warm-up steps return the labeled loss only.

    Args:
        model: the classifier.
        info: data/run facts.
        lambda_u: λ_u, weight of the unlabeled loss.
        mu: μ, unlabeled images per labeled image in a batch.
        temperature: T of the soft pseudo-labels used while ρ_t > ρ_min.
        c: C, the threshold's initial multiplier of ρ̂.
        gamma: γ, the threshold's decay per period.
        rho_min: ρ_min, the floor of the threshold (hard pseudo-labels once reached).
        warmup_fraction: fraction of training on labeled data only (at least one step).
        period_fraction: fraction of training between two decays of the threshold.
    """

    def __init__(
        self,
        model: nn.Module,
        info: TaskInfo,
        lambda_u: float = 1.0,
        mu: int = 7,
        temperature: float = 0.5,
        c: float = 1.0001,
        gamma: float = 1.27,
        rho_min: float = 0.05,
        warmup_fraction: float = 2048 / 2**20,
        period_fraction: float = 10 / 1024,
    ) -> None:
        super().__init__(model, info)
        self.lambda_u = lambda_u
        self.mu = mu
        self.temperature = temperature
        self.c, self.gamma, self.rho_min = c, gamma, rho_min
        self.warmup_steps = max(1, round(warmup_fraction * info.total_steps))
        self.period_steps = max(1, round(period_fraction * info.total_steps))
        self.views = {"x": "weak", "u_w": "weak", "u_s": "strong_cutout"}
        # Sum and count of the labeled losses that make ρ̂ (the last labeled pass of the warm-up).
        self.register_buffer("rho_hat_sum", torch.zeros(()))
        self.register_buffer("rho_hat_count", torch.zeros(()))

    def threshold(self, step: int) -> Tensor:
        """ρ_t at `step` (after the warm-up)."""
        rho_hat = self.rho_hat_sum / self.rho_hat_count
        periods_done = (step - self.warmup_steps) // self.period_steps
        return dash_threshold(rho_hat, periods_done, self.c, self.gamma, self.rho_min)

    def forward(self, batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        if step < self.warmup_steps:
            loss_x = F.cross_entropy(self.model(batch["x"]), batch["y"])
            return {"loss": loss_x, "loss_x": loss_x.detach()}

        x, u_w, u_s = batch["x"], batch["u_w"], batch["u_s"]
        logits = self.model(torch.cat([x, u_w, u_s]))
        logits_x, logits_u_w, logits_u_s = logits.split([len(x), len(u_w), len(u_s)])
        loss_x = F.cross_entropy(logits_x, batch["y"])

        # Pseudo-labels: soft (temperature T) until ρ_t reaches ρ_min, then hard; no gradient.
        rho = self.threshold(step)
        logits_u_w = logits_u_w.detach().float()
        probs_u_w = logits_u_w.softmax(dim=-1)
        pseudo_u = probs_u_w.argmax(dim=-1)
        hard = F.one_hot(pseudo_u, self.num_classes).float()
        soft = (logits_u_w / self.temperature).softmax(dim=-1)
        targets_u = torch.where(rho <= self.rho_min, hard, soft)

        # Keep the images whose weak-view loss is at most ρ_t; mean over all μB images.
        mask = (losses.soft_cross_entropy(logits_u_w, targets_u) <= rho).float()
        loss_u = (losses.soft_cross_entropy(logits_u_s, targets_u) * mask).mean()

        return {
            **pseudo.loss_outputs(loss_x, loss_u, self.lambda_u),
            "threshold": rho,
            **pseudo.monitors(probs_u_w, pseudo_u, mask, batch.get("u_y")),
        }

    @torch.no_grad()
    def on_step_end(self, batch: dict[str, Tensor], out: dict[str, Tensor], step: int) -> None:
        """Accumulates ρ̂ over the last pass through the labeled set before the warm-up ends."""
        last_pass = math.ceil(self.info.num_labeled / len(batch["y"]))
        if self.warmup_steps - last_pass <= step < self.warmup_steps:
            self.rho_hat_sum += out["loss_x"].float()
            self.rho_hat_count += 1
