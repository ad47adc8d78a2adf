"""Π-model (Laine & Aila, ICLR 2017, https://arxiv.org/abs/1610.02242).

Two stochastic (augmented) views of each unlabeled image should get the same prediction: the
squared difference of their softmax outputs joins the labeled cross-entropy with a weight that
ramps up. Follows google-research/fixmatch `pi_model.py`, the reimplementation behind the
MixMatch/FixMatch baseline tables, where it differs from the paper's own setup:

- ramp-up: linear over the first 40 % of training (`warmup_pos`), not the paper's Gaussian
  exp(−5(1 − t)²) over 80 epochs; weight 10 (`consistency_weight`), not 100;
- three forward calls (labeled, teacher view, student view), each normalised with its own batch
  statistics; only the labeled call updates the BatchNorm running statistics;
- SGD + Nesterov 0.03 with FixMatch's cosine decay, L2 5e-4 on kernels; μ = 1. (The mixmatch
  repo's copy, behind MixMatch's tables, used Adam 0.002, constant, decoupled decay 0.02: set
  `optim.*` to run that one.)

Mean Teacher subclasses it and only changes where the target comes from (`consistency_target`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semisup.algorithms.base import Algorithm, TaskInfo
from semisup.algorithms.registry import ALGORITHMS
from semisup.math import losses, pseudo
from semisup.math.schedules import linear_rampup
from semisup.models.bn import frozen_running_stats


def consistency_outputs(
    logits_x: Tensor, y: Tensor, logits_u: Tensor, probs_target: Tensor, weight: float
) -> dict[str, Tensor]:
    """Labeled cross-entropy plus `weight` × the mean squared error of the probabilities.

    Args:
        logits_x: (B, C) labeled logits.
        y: (B,) labels.
        logits_u: (N, C) student logits on the unlabeled images.
        probs_target: (N, C) target probabilities, without gradient.
        weight: the ramped consistency weight w(t).

    Returns:
        The algorithm outputs: loss, loss_x, loss_u, consistency_weight, unlabeled_distribution.
    """
    loss_x = F.cross_entropy(logits_x, y)
    loss_u = losses.probability_mse(logits_u, probs_target).mean()
    return {
        **pseudo.loss_outputs(loss_x, loss_u, weight),
        "consistency_weight": torch.tensor(weight),
        "unlabeled_distribution": probs_target.mean(dim=0),
    }


@ALGORITHMS.register("pimodel")
class PiModel(Algorithm):
    """Π-model (Laine & Aila, ICLR 2017): CE + w(t)·MSE between the softmax outputs of two views.

    The loss of the paper's Algorithm 1: CE(x, y) + w(t)·(1/C)‖f(ũ₁) − f(ũ₂)‖².

    The first view's prediction is the target (no gradient, as `tf.stop_gradient` in the code);
    the second view is the student.

    Args:
        model: the classifier.
        info: data/run facts.
        lambda_u: w_max, the consistency weight after ramp-up (`consistency_weight`).
        rampup_fraction: fraction of training over which w(t) rises linearly from 0 to w_max.
        mu: μ, unlabeled images per labeled image in a batch.
    """

    def __init__(
        self,
        model: nn.Module,
        info: TaskInfo,
        lambda_u: float = 10.0,
        rampup_fraction: float = 0.4,
        mu: int = 1,
    ) -> None:
        super().__init__(model, info)
        self.lambda_u = lambda_u
        self.rampup_steps = round(rampup_fraction * info.total_steps)
        self.mu = mu
        self.views = {"x": "weak", "u_w0": "weak", "u_w1": "weak"}

    def forward(self, batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        logits_x = self.model(batch["x"])  # the only call that updates BN running statistics
        with frozen_running_stats(self.model):
            probs_target = self.consistency_target(batch["u_w0"])
            logits_u = self.model(batch["u_w1"])
        weight = self.lambda_u * linear_rampup(step, self.rampup_steps)
        return consistency_outputs(logits_x, batch["y"], logits_u, probs_target, weight)

    @torch.no_grad()
    def consistency_target(self, u: Tensor) -> Tensor:
        """Softmax of the first view, no gradient: the model's own (Mean Teacher: its teacher's)."""
        return self.model(u).float().softmax(dim=-1)
