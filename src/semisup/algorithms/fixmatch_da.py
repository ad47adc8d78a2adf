"""FixMatch with progressive distribution alignment: the "DA" rows of UDAL's Table 1.

A baseline of the UDAL paper (Lazarow et al., Table 1; docs/algorithms.md#fixmatch-da):
ReMixMatch-style distribution alignment of FixMatch's pseudo-labels towards a target that moves
from p_data towards uniform, optionally with Menon et al.'s logit-adjusted supervised loss
("+ LA (Sup)").
`semisup.algorithms.udal` maps every Table 1 row to an algorithm and its settings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semisup.algorithms.base import Algorithm, PriorTracking, TaskInfo
from semisup.algorithms.registry import ALGORITHMS
from semisup.math import losses, prior, pseudo
from semisup.models import forward
from semisup.modules import alignment


@ALGORITHMS.register("fixmatch_da")
class FixMatchDA(PriorTracking, Algorithm):
    """FixMatch + progressive distribution alignment (UDAL paper, Lazarow et al., Table 1).

    The weak-view prediction is aligned, ReMixMatch/CReST+ style, to the progressive target:
    q̃ = Normalize(q · π_t / p̂) (eq. (1) with π_t of eq. (2)); mask and hard label come from q̃.
    p̂ is, as in the CReST code (the UDAL paper's code base), the mean of the last 128 batch
    means of the un-aligned q, starting uniform and updated after the step. α_t follows eq. (10)
    with k = 1 by default: CReST+'s linear schedule, eq. (4), over steps instead of generations.

    Args:
        model: the classifier.
        info: data/run facts.
        threshold: τ (≥).
        lambda_u: λ_u.
        mu: μ.
        alpha_min: final α of the DA target (0.5 in Table 1).
        k: schedule rate (1: linear).
        distribution_alignment: align the pseudo-labels (False: plain FixMatch, for "LA (Inf)").
        la_supervised: the "+ LA (Sup)" row: CE(y, f(x) + log p_data), Menon et al.'s
            logit-adjusted loss towards uniform, eq. (3), without a schedule.
        la_inference: report post-hoc logit-adjusted accuracy too.
        window: batches in the p̂ window (128).
    """

    def __init__(
        self,
        model: nn.Module,
        info: TaskInfo,
        threshold: float = 0.95,
        lambda_u: float = 1.0,
        mu: int = 7,
        alpha_min: float = 0.5,
        k: float = 1.0,
        distribution_alignment: bool = True,
        la_supervised: bool = False,
        la_inference: bool = True,
        window: int = 128,
    ) -> None:
        super().__init__(model, info)
        self.threshold, self.lambda_u, self.mu = threshold, lambda_u, mu
        self.alpha_min, self.k = alpha_min, k
        self.distribution_alignment = distribution_alignment
        self.la_supervised = la_supervised
        self.views = {"x": "weak", "u_w": "weak", "u_s": "strong"}
        self.track_priors(info, alignment.WindowMean(info.num_classes, window), la_inference)

    def forward(self, batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        logits_x, logits_u_w, logits_u_s = forward.forward_three_views(self.model, batch)

        # Labeled CE, optionally logit-adjusted towards uniform ("LA (Sup)").
        if self.la_supervised:
            logits_x = logits_x + prior.logit_shift(self.p_data, prior.uniform_like(self.p_data))
        loss_x = F.cross_entropy(logits_x, batch["y"])

        # Pseudo-labels from the progressively aligned weak-view prediction.
        probs_u_w = logits_u_w.detach().softmax(dim=-1)
        alpha = prior.alpha_schedule(step / self.info.total_steps, self.alpha_min, self.k)
        probs_used = probs_u_w
        if self.distribution_alignment:
            target = prior.progressive_target(self.p_data, alpha)
            probs_used = alignment.align(probs_u_w, target, self.p_model())
        loss_u, mask, pseudo_u = losses.hard_label_loss(logits_u_s, probs_used, self.threshold)
        return {
            **pseudo.loss_outputs(loss_x, loss_u, self.lambda_u),
            **pseudo.monitors(probs_u_w, pseudo_u, mask, batch.get("u_y")),
            "alpha": torch.tensor(alpha),
        }
