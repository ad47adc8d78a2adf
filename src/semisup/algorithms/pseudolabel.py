"""Pseudo-Label (Lee, ICML 2013 Workshop on Challenges in Representation Learning).

The model's own most likely class on an unlabeled image is its label, when the model is
confident enough. Follows google-research/fixmatch `pseudo_label.py` (the MixMatch/FixMatch
baseline, itself following Oliver et al. 2018's realistic evaluation), which adds a confidence
threshold to the paper's method and differs from it in:

- the confidence threshold 0.95 (strictly greater, `tf.greater`), where the paper used every
  unlabeled image;
- the unlabeled weight 1 ramped up linearly over the first 40 % of training (the paper's
  α(t) rose from 0 to 3 between epochs 100 and 600);
- the pseudo-label and its loss come from the same weakly augmented view; the loss is averaged
  over all unlabeled images (masked ones count as zero), as the code says, for consistency with
  the realistic-evaluation codebase;
- only the labeled forward call updates BatchNorm running statistics; SGD + Nesterov 0.03, cosine
  decay, L2 5e-4; μ = 1 (the mixmatch repo's copy used Adam 0.002, decoupled decay 0.02).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from semisup.algorithms.base import Algorithm, TaskInfo
from semisup.algorithms.registry import ALGORITHMS
from semisup.math import pseudo
from semisup.math.schedules import linear_rampup
from semisup.models.bn import frozen_running_stats


@ALGORITHMS.register("pseudolabel")
class PseudoLabel(Algorithm):
    """Pseudo-Label (Lee, 2013): CE + α(t)·CE on the confident argmax pseudo-labels.

    The paper's overall loss with the code's mask: L = CE(x, y) + α(t)·mean_u 1[max p > τ]·CE(u, ŷ).

    ŷ = argmax p(u) carries no gradient; the gradient of the unlabeled term flows through the
    logits of u (the same view that made ŷ).

    Args:
        model: the classifier.
        info: data/run facts.
        threshold: τ, confidence above which a pseudo-label is used (strict >, as in the code).
        lambda_u: the unlabeled weight after ramp-up (`consistency_weight`).
        rampup_fraction: fraction of training over which α(t) rises linearly from 0 to `lambda_u`.
        mu: μ, unlabeled images per labeled image in a batch.
    """

    def __init__(
        self,
        model: nn.Module,
        info: TaskInfo,
        threshold: float = 0.95,
        lambda_u: float = 1.0,
        rampup_fraction: float = 0.4,
        mu: int = 1,
    ) -> None:
        super().__init__(model, info)
        self.threshold = threshold
        self.lambda_u = lambda_u
        self.rampup_steps = round(rampup_fraction * info.total_steps)
        self.mu = mu
        self.views = {"x": "weak", "u_w": "weak"}

    def forward(self, batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        logits_x = self.model(batch["x"])  # the only call that updates BN running statistics
        with frozen_running_stats(self.model):
            logits_u = self.model(batch["u_w"])
        loss_x = F.cross_entropy(logits_x, batch["y"])

        probs_u = logits_u.detach().float().softmax(dim=-1)
        pseudo_u = probs_u.argmax(dim=-1)
        mask = (probs_u.amax(dim=-1) > self.threshold).float()
        loss_u = (F.cross_entropy(logits_u, pseudo_u, reduction="none") * mask).mean()

        weight = self.lambda_u * linear_rampup(step, self.rampup_steps)
        return {
            **pseudo.loss_outputs(loss_x, loss_u, weight),
            **pseudo.monitors(probs_u, pseudo_u, mask, batch.get("u_y")),
        }
