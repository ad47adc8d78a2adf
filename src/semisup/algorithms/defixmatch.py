"""DeFixMatch (Schmutz, Humbert & Mattei, ICLR 2023, https://arxiv.org/abs/2203.07512).

Debiased FixMatch: the FixMatch unlabeled loss minus the same loss computed on the labeled
images, whose pseudo-labels come from their weak views and are compared with their strong
views, so that the unlabeled term's bias on the risk estimate cancels in expectation. Follows
USB, microsoft/Semi-supervised-learning `semilearn/algorithms/defixmatch/defixmatch.py`
(docs/algorithms.md#defixmatch):

- one call over concat(x_w, x_s, u_w, u_s), the labeled images with a weak and a strong view;
- L_s = ½·(CE(x_w, y) + CE(x_s, y));
- L_u = FixMatch's masked hard-label loss on (u_w, u_s) and L_anti the same on (x_w, x_s):
  pseudo-label argmax p(x_w) (not the true label), mask 1[max p(x_w) ≥ τ], averaged over B;
- L = L_s + λ·(L_u − L_anti), λ = 0.5 (USB's CIFAR-10 configs, `ulb_loss_ratio: 0.5`);
- FixMatch's pipeline otherwise: τ = 0.95, μ = 7, SGD 0.03 Nesterov with the 7π/16 cosine,
  wd 5e-4, 2^20 steps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semisup.algorithms.base import Algorithm, TaskInfo
from semisup.algorithms.registry import ALGORITHMS
from semisup.math import losses, pseudo


@ALGORITHMS.register("defixmatch")
class DeFixMatch(Algorithm):
    """DeFixMatch (Schmutz, Humbert & Mattei, ICLR 2023): FixMatch with a debiasing term.

    L = ½(CE(x_w, y) + CE(x_s, y)) + λ·(L_u(u_w, u_s) − L_u(x_w, x_s)), each L_u FixMatch's
    masked hard-label loss (pseudo-labels from the weak view, no gradient). Stateless.

    Args:
        model: the classifier.
        info: data/run facts.
        threshold: τ (≥), for both the unlabeled and the labeled pseudo-labels.
        lambda_u: λ, weight of the debiased unlabeled term.
        mu: μ, unlabeled images per labeled image.
    """

    def __init__(
        self,
        model: nn.Module,
        info: TaskInfo,
        threshold: float = 0.95,
        lambda_u: float = 0.5,
        mu: int = 7,
    ) -> None:
        super().__init__(model, info)
        self.threshold, self.lambda_u, self.mu = threshold, lambda_u, mu
        self.views = {"x": "weak", "x_s": "strong_cutout", "u_w": "weak", "u_s": "strong_cutout"}

    def forward(self, batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        views = [batch["x"], batch["x_s"], batch["u_w"], batch["u_s"]]
        logits = self.model(torch.cat(views)).float()
        logits_x, logits_x_s, logits_u_w, logits_u_s = logits.split([len(v) for v in views])
        y = batch["y"]
        loss_x = (F.cross_entropy(logits_x, y) + F.cross_entropy(logits_x_s, y)) / 2

        probs_u_w = logits_u_w.detach().softmax(dim=-1)
        probs_x = logits_x.detach().softmax(dim=-1)
        loss_u, mask, pseudo_u = losses.hard_label_loss(logits_u_s, probs_u_w, self.threshold)
        loss_anti, mask_x, _ = losses.hard_label_loss(logits_x_s, probs_x, self.threshold)
        return {
            "loss": loss_x + self.lambda_u * (loss_u - loss_anti),
            "loss_x": loss_x.detach(),
            "loss_u": loss_u.detach(),
            "loss_anti": loss_anti.detach(),
            "mask_rate_labeled": mask_x.mean(),
            **pseudo.monitors(probs_u_w, pseudo_u, mask, batch.get("u_y")),
        }
