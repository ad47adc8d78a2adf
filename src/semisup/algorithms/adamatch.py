"""AdaMatch (Berthelot et al., ICLR 2022, https://arxiv.org/abs/2106.04732), as USB runs it for SSL.

Distribution alignment of the unlabeled predictions towards the labeled ones, and a relative
confidence threshold: τ times the mean top confidence on the labeled batch. Follows USB,
microsoft/Semi-supervised-learning `semilearn/algorithms/adamatch/adamatch.py`,
`adamatch/utils.py` (`AdaMatchThresholdingHook`) and `hooks/dist_align.py`
(`DistAlignEMAHook` with `p_target_type='model'`) (docs/algorithms.md#adamatch):

- q̃ = Normalize(q·(ε + p_target) / (ε + p_model)), ε = 1e-6: p_model an EMA (0.999) of the
  mean weak-view unlabeled prediction starting at the first batch mean, p_target an EMA (0.999)
  of the mean labeled prediction starting uniform (`semisup.modules.alignment.EMAAlignment`);
  USB moves both with this step's batches *before* aligning;
- threshold c_τ = τ·mean_b max p(x_b) on the weak labeled batch (this process's), τ = 0.95;
- mask 1[max q̃ ≥ c_τ], hard label argmax q̃, the loss averaged over all μB images;
- L = CE(x, y) + λ_u·L_u with a constant λ_u = 1; FixMatch's pipeline otherwise (one call over
  concat(x, u_w, u_s), μ = 7, SGD 0.03 Nesterov with the 7π/16 cosine, wd 5e-4, 2^20 steps).

The paper, written for domain adaptation, also has random logit interpolation (logits mixed
between a call on the labeled and unlabeled images together and one on the labeled images
alone), a warm-up of the unlabeled loss weight and separate batch statistics per domain. USB's
SSL port has none of them, and semisup follows USB.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semisup.algorithms.base import Algorithm, TaskInfo
from semisup.algorithms.registry import ALGORITHMS
from semisup.math import losses, pseudo, thresholds
from semisup.models import forward
from semisup.modules.alignment import EMAAlignment


@ALGORITHMS.register("adamatch")
class AdaMatch(Algorithm):
    """AdaMatch (Berthelot et al., ICLR 2022) for SSL: alignment and a relative threshold.

    L = CE(x, y) + λ_u·(1/μB) Σ_b 1[max q̃_b ≥ τ·mean max p(x)]·CE(u_s,b, argmax q̃_b); q̃ the
    aligned weak-view prediction (no gradient). The alignment estimates are buffers; `forward`
    computes their values after this step and uses them, `on_step_end` stores them.

    Args:
        model: the classifier.
        info: data/run facts.
        threshold: τ, the fraction of the labeled mean confidence (≥).
        lambda_u: λ_u, weight of the unlabeled loss.
        mu: μ, unlabeled images per labeled image.
        momentum: momentum of both alignment EMAs (USB `ema_p`).
    """

    def __init__(
        self,
        model: nn.Module,
        info: TaskInfo,
        threshold: float = 0.95,
        lambda_u: float = 1.0,
        mu: int = 7,
        momentum: float = 0.999,
    ) -> None:
        super().__init__(model, info)
        self.threshold, self.lambda_u, self.mu = threshold, lambda_u, mu
        self.views = {"x": "weak", "u_w": "weak", "u_s": "strong_cutout"}
        self.alignment = EMAAlignment(info.num_classes, momentum, learn_target=True)

    def forward(self, batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        logits_x, logits_u_w, logits_u_s = forward.forward_three_views(self.model, batch)
        loss_x = F.cross_entropy(logits_x, batch["y"])

        probs_x = logits_x.detach().softmax(dim=-1)
        probs_u_w = logits_u_w.detach().softmax(dim=-1)
        p_model, p_target = self.alignment.estimates(probs_u_w, probs_x)
        aligned = self.alignment(probs_u_w, p_model, p_target)
        cutoff = thresholds.relative_threshold(probs_x, self.threshold)
        loss_u, mask, pseudo_u = losses.hard_label_loss(logits_u_s, aligned, cutoff)
        return {
            **pseudo.loss_outputs(loss_x, loss_u, self.lambda_u),
            **pseudo.monitors(probs_u_w, pseudo_u, mask, batch.get("u_y")),
            "threshold": cutoff,
            "state": {"p_model": p_model, "p_target": p_target},
        }

    @torch.no_grad()
    def on_step_end(self, batch: dict[str, Tensor], out: dict[str, Tensor], step: int) -> None:
        """Stores the alignment estimates this step used."""
        self.alignment.store(out["state"]["p_model"], out["state"]["p_target"])
