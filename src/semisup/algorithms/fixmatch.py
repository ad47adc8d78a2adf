"""FixMatch (Sohn et al., NeurIPS 2020, https://arxiv.org/abs/2001.07685).

A confident prediction on the weak view becomes a hard label for the strong view. Follows
google-research/fixmatch `fixmatch.py` (algorithms.md §4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semisup import pseudo
from semisup.algorithms.base import Algorithm, TaskInfo
from semisup.algorithms.registry import ALGORITHMS


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
        # The strong view is CTAugment followed by a full-size cutout (algorithms.md §3).
        self.views = {"x": "weak", "u_w": "weak", "u_s": "strong_cutout"}

    def forward(self, batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        x, u_w, u_s = batch["x"], batch["u_w"], batch["u_s"]
        logits = self.model(torch.cat([x, u_w, u_s]))
        logits_x, logits_u_w, logits_u_s = logits.split([len(x), len(u_w), len(u_s)])

        # Labeled cross-entropy, eq. (2).
        loss_x = F.cross_entropy(logits_x, batch["y"])

        # Pseudo-labels from the weak view, no gradient, eq. (3).
        probs_u_w = (logits_u_w.detach().float() / self.temperature).softmax(dim=-1)
        mask = pseudo.confidence_mask(probs_u_w, self.threshold)
        pseudo_u = probs_u_w.argmax(dim=-1)

        # Mean over ALL μB unlabeled images (masked ones count as zero), as in the code.
        loss_u = (F.cross_entropy(logits_u_s, pseudo_u, reduction="none") * mask).mean()

        out = {
            "loss": loss_x + self.lambda_u * loss_u,
            "loss_x": loss_x.detach(),
            "loss_u": loss_u.detach(),
            "mask_rate": mask.mean(),
            "unlabeled_distribution": probs_u_w.mean(dim=0),
        }
        if "u_y" in batch:
            out["pseudo_label_accuracy"] = pseudo.pseudo_label_accuracy(
                pseudo_u, batch["u_y"], mask
            )
        return out
