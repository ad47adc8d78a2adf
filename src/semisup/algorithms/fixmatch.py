"""FixMatch (Sohn et al., NeurIPS 2020, https://arxiv.org/abs/2001.07685).

A confident prediction on the weak view becomes a hard label for the strong view. Follows
google-research/fixmatch `fixmatch.py` (docs/algorithms.md#fixmatch).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from semisup.algorithms.base import Algorithm, TaskInfo
from semisup.algorithms.registry import ALGORITHMS
from semisup.math import losses, pseudo
from semisup.models import forward


@ALGORITHMS.register("fixmatch")
class FixMatch(Algorithm):
    """FixMatch (Sohn et al., NeurIPS 2020), eq. (2)-(4) of the paper.

    One forward pass over concat(x, u_w, u_s), so BatchNorm normalises all three parts with
    shared batch statistics and updates its running statistics once, as in the original.

    Args:
        model: the classifier.
        info: data/run facts.
        threshold: τ, confidence above which a pseudo-label is used (≥, as in the code).
        lambda_u: λ_u, weight of the unlabeled loss.
        mu: μ, unlabeled images per labeled image in a batch.
        temperature: softmax temperature of the weak-view prediction (1 in the paper).
    """

    def __init__(
        self,
        model: nn.Module,
        info: TaskInfo,
        threshold: float = 0.95,
        lambda_u: float = 1.0,
        mu: int = 7,
        temperature: float = 1.0,
    ) -> None:
        super().__init__(model, info)
        self.threshold = threshold
        self.lambda_u = lambda_u
        self.mu = mu
        self.temperature = temperature
        # The strong view is CTAugment followed by a full-size cutout
        # (docs/algorithms.md#ctaugment).
        self.views = {"x": "weak", "u_w": "weak", "u_s": "strong_cutout"}

    def forward(self, batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        logits_x, logits_u_w, logits_u_s = forward.forward_three_views(self.model, batch)
        loss_x = F.cross_entropy(logits_x, batch["y"])  # eq. (2)
        probs_u_w = (logits_u_w.detach() / self.temperature).softmax(dim=-1)
        loss_u, mask, pseudo_u = losses.hard_label_loss(logits_u_s, probs_u_w, self.threshold)
        return {
            **pseudo.loss_outputs(loss_x, loss_u, self.lambda_u),
            **pseudo.monitors(probs_u_w, pseudo_u, mask, batch.get("u_y")),
        }
