"""MixMatch (Berthelot et al., NeurIPS 2019, https://arxiv.org/abs/1905.02249).

Guess a label for each unlabeled image by averaging the predictions on K weak augmentations and
sharpening them; MixUp labeled and unlabeled images (with their labels and guesses) in one pool;
train with cross-entropy on the mixed labeled part and a squared error on the mixed unlabeled
part. Follows google-research/mixmatch `mixmatch.py` (docs/algorithms.md#mixmatch).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semisup.algorithms.base import Algorithm, TaskInfo
from semisup.algorithms.presets import MIXMATCH_ADAM
from semisup.algorithms.registry import ALGORITHMS
from semisup.errors import UserError
from semisup.math import losses, pseudo
from semisup.math.schedules import linear_rampup
from semisup.models import bn, forward


def check_mixup_settings(k: int, temperature: float, beta: float, rampup_steps: int) -> None:
    """Raises a UserError for settings the MixMatch family cannot run with."""
    if k < 1:
        raise UserError(f"algorithm.k (augmentations per unlabeled image) must be ≥ 1, got {k}")
    if temperature <= 0:
        raise UserError(f"algorithm.temperature must be > 0 (0.5 in the papers), got {temperature}")
    if beta <= 0:
        raise UserError(
            f"algorithm.beta (MixUp Beta(β, β)) must be > 0 (0.75 in the papers), got {beta}"
        )
    if rampup_steps < 0:
        raise UserError(f"algorithm.rampup_steps must be ≥ 0, got {rampup_steps}")


@ALGORITHMS.register("mixmatch")
class MixMatch(Algorithm):
    """MixMatch (Berthelot et al., NeurIPS 2019), Algorithm 1 and eq. (2)-(5), as its code runs.

    Per step: K weak views of each unlabeled image are classified in K separate forward calls
    (no gradient; BatchNorm running statistics untouched) and their softmaxes averaged and
    sharpened (T = 0.5). The pool [x (one-hot labels), u_1 … u_K (guess)] is mixed with one
    permutation and per-example λ' = max(λ, 1 − λ), λ ~ Beta(β, β); the mixed pool runs in
    K + 1 interleaved calls of B images, of which only the first updates BatchNorm running
    statistics. L_X is the soft cross-entropy over the B mixed labeled items, L_U the squared
    error averaged over the K·B mixed unlabeled items *and* the classes (the code's
    `reduce_mean`), and loss = L_X + λ_U · min(1, step / rampup_steps) · L_U.

    `guess_targets` and `mixing.mix_and_forward` are the reusable pieces (RealMix builds on them).

    Args:
        model: the classifier.
        info: data/run facts.
        k: K, weak augmentations per unlabeled image (the code's `nu`).
        temperature: T, sharpening temperature.
        beta: β of the MixUp Beta distribution (0.75 in every run script; the flag default is 0.5).
        lambda_u: λ_U (`w_match`): 75 for CIFAR-10, 250 for SVHN, 50 for STL-10, 150 for
            CIFAR-100 (the run scripts; the flag default is 100).
        rampup_steps: steps of the linear warm-up of λ_U (1024 kimg = 16,384 at B = 64);
            shorten it for CPU-scale runs.
    """

    optim_defaults: ClassVar[dict[str, Any]] = MIXMATCH_ADAM
    step_hyperparameters: ClassVar[tuple[str, ...]] = ("rampup_steps",)

    def __init__(
        self,
        model: nn.Module,
        info: TaskInfo,
        k: int = 2,
        temperature: float = 0.5,
        beta: float = 0.75,
        lambda_u: float = 75.0,
        rampup_steps: int = 16384,
    ) -> None:
        super().__init__(model, info)
        check_mixup_settings(k, temperature, beta, rampup_steps)
        self.k = k
        self.temperature = temperature
        self.beta = beta
        self.lambda_u = lambda_u
        self.rampup_steps = rampup_steps
        self.mu = 1
        self.views = {"x": "weak", **{f"u_w{i}": "weak" for i in range(k)}}

    @torch.no_grad()
    def guess_targets(self, u_views: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Label guessing, eq. (6)-(7): one call per view, averaged softmax, then sharpened.

        Returns:
            (mean prediction (μB, C), sharpened targets (μB, C)); no gradient.
        """
        with bn.frozen_running_stats(self.model):
            probs = torch.stack([self.model(u).float().softmax(dim=-1) for u in u_views])
        probs_u = probs.mean(dim=0)
        return probs_u, pseudo.sharpen(probs_u, self.temperature)

    def guess_and_mix(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Label guessing, then MixUp of [x, u_1..u_K] and the interleaved forward (BN: call 0).

        Returns:
            (mean prediction (μB, C), sharpened guesses (μB, C), logits of the mixed pool
            ((K + 1)·B, C), its mixed targets); the first B rows are the labeled part.
        """
        u_views = [batch[f"u_w{i}"] for i in range(self.k)]
        probs_u, targets_u = self.guess_targets(u_views)
        targets_x = F.one_hot(batch["y"], self.num_classes).float()
        logits, targets = forward.mix_and_forward(
            self.model, [batch["x"], *u_views], [targets_x] + [targets_u] * self.k, self.beta, 0
        )
        return probs_u, targets_u, logits, targets

    def forward(self, batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        probs_u, targets_u, logits, targets = self.guess_and_mix(batch)
        n = len(batch["x"])
        loss_x = losses.soft_cross_entropy(logits[:n], targets[:n]).mean()
        loss_u = losses.probability_mse(logits[n:], targets[n:]).mean()
        lambda_u = self.lambda_u * linear_rampup(step, self.rampup_steps)
        return {
            **pseudo.loss_outputs(loss_x, loss_u, lambda_u),
            **pseudo.monitors(probs_u, targets_u.argmax(dim=-1), None, batch.get("u_y")),
        }
