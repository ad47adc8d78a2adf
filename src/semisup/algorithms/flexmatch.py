"""FlexMatch (Zhang et al., NeurIPS 2021, https://arxiv.org/abs/2110.08263).

FixMatch with Curriculum Pseudo Labeling: a class-wise threshold τ·M(β(c)) that follows how
many unlabeled images the model already predicts confidently as each class. Follows the
authors' code, TorchSSL/TorchSSL `models/flexmatch/flexmatch.py` (the train loop's
`selected_label` / `classwise_acc`) and `models/flexmatch/flexmatch_utils.py`
(`consistency_loss`), which USB `semilearn/algorithms/flexmatch/` mirrors
(docs/algorithms.md#flexmatch):

- one table entry per unlabeled image, `selected_label`, −1 until the image's weak-view
  prediction first reaches τ, then the class of its latest such prediction;
- learning effects β(c) = σ(c) / max(max_c σ, N_unused) with the threshold warm-up
  (`thresh_warmup=True`), recomputed after every step from the table, and left as they were
  while every entry holds the same value, so the first step has β = 0: threshold 0, every
  pseudo-label used;
- mask 1[max p ≥ τ·M(β(argmax p))] with the convex mapping M(β) = β/(2 − β), hard labels,
  the loss averaged over all μB images; the table takes the images with max p ≥ τ (the fixed
  τ, not the class threshold);
- FixMatch's pipeline otherwise: one call over concat(x, u_w, u_s), μ = 7, λ_u = 1, SGD 0.03
  Nesterov with the 7π/16 cosine, wd 5e-4, 2^20 steps.

The code's options left out: distribution alignment (`use_DA`, off in every config) and soft
pseudo-labels (`hard_label=False`, off in every config). TorchSSL counts only the images of its
own process; here the table takes every process's images, so all processes keep the same one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semisup import distributed
from semisup.algorithms.base import Algorithm, TaskInfo
from semisup.algorithms.registry import ALGORITHMS
from semisup.errors import UserError
from semisup.math import losses, pseudo, thresholds
from semisup.models import forward


@ALGORITHMS.register("flexmatch")
class FlexMatch(Algorithm):
    """FlexMatch (Zhang et al., NeurIPS 2021): FixMatch with curriculum class-wise thresholds.

    L = CE(x, y) + λ_u·(1/μB) Σ_b 1[max p_b ≥ τ·M(β(ŷ_b))]·CE(u_s,b, ŷ_b), ŷ_b = argmax p_b,
    p = softmax of the weak view (no gradient). β comes from the `selected_label` table as it
    was before this step; the table and β are buffers, written after the optimizer step.

    Args:
        model: the classifier.
        info: data/run facts (`num_unlabeled` sizes the table).
        threshold: τ, the fixed threshold that the class thresholds scale (≥, as in the code).
        lambda_u: λ_u, weight of the unlabeled loss.
        mu: μ, unlabeled images per labeled image.
        threshold_warmup: the threshold warm-up (TorchSSL `thresh_warmup`): unused images
            count in the normaliser of β.
    """

    def __init__(
        self,
        model: nn.Module,
        info: TaskInfo,
        threshold: float = 0.95,
        lambda_u: float = 1.0,
        mu: int = 7,
        threshold_warmup: bool = True,
    ) -> None:
        super().__init__(model, info)
        if info.num_unlabeled < 1:
            raise UserError(
                "FlexMatch keeps a pseudo-label per unlabeled image: it needs unlabeled data"
            )
        self.threshold, self.lambda_u, self.mu = threshold, lambda_u, mu
        self.threshold_warmup = threshold_warmup
        self.views = {"x": "weak", "u_w": "weak", "u_s": "strong_cutout"}
        unused = torch.full((info.num_unlabeled,), -1, dtype=torch.long)
        self.register_buffer("selected_label", unused)
        self.register_buffer("learning_effects", torch.zeros(info.num_classes))

    def class_thresholds(self) -> Tensor:
        """The (C,) thresholds τ·M(β(c)) of this step."""
        return self.threshold * thresholds.convex_mapping(self.learning_effects)

    def forward(self, batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        logits_x, logits_u_w, logits_u_s = forward.forward_three_views(self.model, batch)
        loss_x = F.cross_entropy(logits_x, batch["y"])

        probs_u_w = logits_u_w.detach().softmax(dim=-1)
        class_thresholds = self.class_thresholds()
        per_image = class_thresholds[probs_u_w.argmax(dim=-1)]
        loss_u, mask, pseudo_u = losses.hard_label_loss(logits_u_s, probs_u_w, per_image)
        return {
            **pseudo.loss_outputs(loss_x, loss_u, self.lambda_u),
            **pseudo.monitors(probs_u_w, pseudo_u, mask, batch.get("u_y")),
            "class_thresholds": class_thresholds,
            "state": {
                "pseudo_u": pseudo_u,
                "selected": pseudo.confidence_mask(probs_u_w, self.threshold).bool(),
            },
        }

    @torch.no_grad()
    def on_step_end(self, batch: dict[str, Tensor], out: dict[str, Tensor], step: int) -> None:
        """Writes the confident images' classes (all processes) into the table, then β."""
        state = out["state"]
        u_idx = distributed.all_gather_cat(batch["u_idx"])
        selected = distributed.all_gather_cat(state["selected"])
        pseudo_u = distributed.all_gather_cat(state["pseudo_u"])
        self.selected_label[u_idx[selected]] = pseudo_u[selected]
        effects = thresholds.learning_effects(
            self.selected_label, self.num_classes, self.threshold_warmup
        )
        if effects is not None:
            self.learning_effects.copy_(effects)
