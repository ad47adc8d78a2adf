"""UDAL: Unifying Distribution Alignment as a Loss (Lazarow et al.; docs/algorithms.md#udal).

Progressive distribution alignment moved into the losses as logit adjustment: the supervised
logits are shifted by log(p_data / π_t) and the strong-view logits by log(p̂ / π_t), with
π_t = Normalize(p_data^α_t) moving from p_data towards uniform as α_t falls to α_min.

No official code exists. This follows the paper's Algorithm 1 and the reconstruction in
docs/algorithms.md#udal:
p_data is the exact labeled class histogram (`TaskInfo.labeled_class_counts`), p̂ a moving
average of the mean weak-view softmax updated after each step (so a step's loss uses the
estimate from before its batch), and t/T counts optimizer steps (Algorithm 1 counts epochs;
with 1,024-step epochs the two differ by under one epoch).

p̂'s estimator is not stated; the paper says it is a moving average "as in Berthelot et al.
(2020)" and that it runs on the CReST code base, whose estimator (libml / crest
`PMovingAverage`, also ReMixMatch's) is the mean of the last 128 batch means, starting uniform.
That window is the default (`p_model_estimator="window"`), as for `fixmatch_da` and CReST+
here; the EMA (0.999, from uniform) of the public re-implementations (ADELLO, a semilearn
fork) is `p_model_estimator="ema"`.

Rows of the paper's Table 1 (CIFAR-10-LT, β = 10 %) and how to run them here:

| Table 1 row | algorithm | read |
|---|---|---|
| FixMatch | `fixmatch` | test_accuracy |
| w/ DA (α_min = 0.5) | `fixmatch_da` | test_accuracy |
| w/ DA (α_min = 0.5) + LA (Sup) | `fixmatch_da`, `algorithm.la_supervised=true` | test_accuracy |
| w/ LA (Inf) | `fixmatch_da`, `algorithm.distribution_alignment=false` | test_accuracy_la |
| w/ UDAL | `udal` | test_accuracy |
| w/ UDAL & LA (Inf) | `udal` | test_accuracy_la |
| MixMatch w/ UDAL | `udal_mixmatch` | test_accuracy |

"LA (Inf)" is post-hoc logit adjustment, argmax(f(x) − log p_data), as the CReST code (UDAL's
code base) evaluates it; every algorithm here reports it next to the plain accuracy.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semisup.algorithms.base import Algorithm, PriorTracking, TaskInfo
from semisup.algorithms.mixmatch import MixMatch
from semisup.algorithms.presets import MIXMATCH_ADAM
from semisup.algorithms.registry import ALGORITHMS
from semisup.math import losses, prior, pseudo
from semisup.math.schedules import linear_rampup
from semisup.models import forward
from semisup.modules import alignment

PModelEstimator = Literal["window", "ema"]


def p_model_estimate(
    num_classes: int, estimator: PModelEstimator, window: int, momentum: float
) -> nn.Module:
    """p̂: the mean of the last `window` batch means (CReST/ReMixMatch code) or an EMA."""
    if estimator == "window":
        return alignment.WindowMean(num_classes, window)
    return alignment.EMADistribution(num_classes, momentum)


@ALGORITHMS.register("udal")
class UDAL(PriorTracking, Algorithm):
    """UDAL (Lazarow, Sohn, Lee, Li, Zhang & Pfister, WACV 2023) on FixMatch: §3.1, eq. (10).

    L_s = CE(y, f(x) + log(p_data / π_t)); L_u = Σ 1[max q ≥ τ] CE(ŷ, f(u_s) + log(p̂ / π_t)) / μB
    with q = softmax(f(u_w)) un-adjusted, ŷ = argmax q (the pseudo-labels are not aligned).
    One forward over concat(x, u_w, u_s) as FixMatch. The shifts are constants (no gradient).

    Args:
        model: the classifier.
        info: data/run facts (labeled class counts give p_data, total steps give T).
        threshold: τ (≥).
        lambda_u: λ_u.
        mu: μ.
        alpha_min: α at the end of training (0.1 on FixMatch).
        k: schedule rate (2).
        p_model_estimator: "window" (the CReST code base's 128-batch mean, default) or "ema".
        window: batches in p̂'s window (128).
        p_model_momentum: momentum of p̂'s EMA (0.999).
        supervised_adjustment: shift the supervised logits (ablation switch).
        unlabeled_adjustment: shift the strong-view logits (ablation switch).
        la_inference: report post-hoc logit-adjusted accuracy (−log p_data) too.
    """

    def __init__(
        self,
        model: nn.Module,
        info: TaskInfo,
        threshold: float = 0.95,
        lambda_u: float = 1.0,
        mu: int = 7,
        alpha_min: float = 0.1,
        k: float = 2.0,
        p_model_estimator: PModelEstimator = "window",
        window: int = 128,
        p_model_momentum: float = 0.999,
        supervised_adjustment: bool = True,
        unlabeled_adjustment: bool = True,
        la_inference: bool = True,
    ) -> None:
        super().__init__(model, info)
        self.threshold, self.lambda_u, self.mu = threshold, lambda_u, mu
        self.alpha_min, self.k = alpha_min, k
        self.supervised_adjustment = supervised_adjustment
        self.unlabeled_adjustment = unlabeled_adjustment
        self.views = {"x": "weak", "u_w": "weak", "u_s": "strong"}
        p_model = p_model_estimate(info.num_classes, p_model_estimator, window, p_model_momentum)
        self.track_priors(info, p_model, la_inference)

    def shifts(self, step: int) -> tuple[Tensor, Tensor, float]:
        """(supervised shift, unlabeled shift, α_t) for this step; zero shifts when switched off."""
        alpha = prior.alpha_schedule(step / self.info.total_steps, self.alpha_min, self.k)
        target = prior.progressive_target(self.p_data, alpha)
        zero = torch.zeros_like(target)
        shift_x = prior.logit_shift(self.p_data, target) if self.supervised_adjustment else zero
        shift_u = prior.logit_shift(self.p_model(), target) if self.unlabeled_adjustment else zero
        return shift_x, shift_u, alpha

    def forward(self, batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        logits_x, logits_u_w, logits_u_s = forward.forward_three_views(self.model, batch)
        shift_x, shift_u, alpha = self.shifts(step)

        # Supervised CE on logits aligned from p_data to π_t, eq. (6).
        loss_x = F.cross_entropy(logits_x + shift_x, batch["y"])

        # FixMatch pseudo-labels from the plain weak view; CE on shifted strong logits, eq. (9).
        probs_u_w = logits_u_w.detach().softmax(dim=-1)
        loss_u, mask, pseudo_u = losses.hard_label_loss(
            logits_u_s + shift_u, probs_u_w, self.threshold
        )
        return {
            **pseudo.loss_outputs(loss_x, loss_u, self.lambda_u),
            **pseudo.monitors(probs_u_w, pseudo_u, mask, batch.get("u_y")),
            "alpha": torch.tensor(alpha),
        }


@ALGORITHMS.register("udal_mixmatch")
class UDALMixMatch(PriorTracking, MixMatch):
    """UDAL (Lazarow, Sohn, Lee, Li, Zhang & Pfister, WACV 2023) on MixMatch: the same shifts.

    The first B mixed items (the labeled part, L_X) get log(p_data / π_t), the K·B mixed
    unlabeled items (the squared error L_U on softmax of the shifted logits) get log(p̂ / π_t);
    p̂ tracks the averaged guess before sharpening. α_min = 0.5 and 128 epochs, as the paper
    uses for MixMatch. Everything else is `mixmatch`.

    Args:
        model: the classifier.
        info: data/run facts.
        k: K weak views per unlabeled image.
        temperature: T, sharpening.
        beta: MixUp β.
        lambda_u: λ_U.
        rampup_steps: λ_U warm-up steps.
        alpha_min: final α (0.5 for MixMatch).
        schedule_k: the α schedule's rate k (2; `k` is MixMatch's view count).
        p_model_estimator: "window" (default) or "ema", as `udal`.
        window: batches in p̂'s window (128).
        p_model_momentum: momentum of p̂'s EMA (0.999).
        la_inference: report post-hoc logit-adjusted accuracy too.
    """

    optim_defaults: ClassVar[dict[str, Any]] = MIXMATCH_ADAM

    def __init__(
        self,
        model: nn.Module,
        info: TaskInfo,
        k: int = 2,
        temperature: float = 0.5,
        beta: float = 0.75,
        lambda_u: float = 75.0,
        rampup_steps: int = 16384,
        alpha_min: float = 0.5,
        schedule_k: float = 2.0,
        p_model_estimator: PModelEstimator = "window",
        window: int = 128,
        p_model_momentum: float = 0.999,
        la_inference: bool = True,
    ) -> None:
        super().__init__(model, info, k, temperature, beta, lambda_u, rampup_steps)
        self.alpha_min, self.schedule_k = alpha_min, schedule_k
        p_model = p_model_estimate(info.num_classes, p_model_estimator, window, p_model_momentum)
        self.track_priors(info, p_model, la_inference)

    def forward(self, batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        probs_u, targets_u, logits, targets = self.guess_and_mix(batch)
        alpha = prior.alpha_schedule(step / self.info.total_steps, self.alpha_min, self.schedule_k)
        target = prior.progressive_target(self.p_data, alpha)
        n = len(batch["x"])
        shift_x = prior.logit_shift(self.p_data, target)
        shift_u = prior.logit_shift(self.p_model(), target)
        loss_x = losses.soft_cross_entropy(logits[:n] + shift_x, targets[:n]).mean()
        loss_u = losses.probability_mse(logits[n:] + shift_u, targets[n:]).mean()
        lambda_u = self.lambda_u * linear_rampup(step, self.rampup_steps)
        return {
            **pseudo.loss_outputs(loss_x, loss_u, lambda_u),
            **pseudo.monitors(probs_u, targets_u.argmax(dim=-1), None, batch.get("u_y")),
            "alpha": torch.tensor(alpha),
        }
