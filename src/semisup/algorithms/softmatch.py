"""SoftMatch (Chen et al., ICLR 2023, https://arxiv.org/abs/2301.10921).

A soft confidence threshold: every pseudo-label is used, weighted by a Gaussian of its
confidence truncated at the running mean confidence, after a uniform alignment of the
predictions. Follows USB, the authors' code, microsoft/Semi-supervised-learning
`semilearn/algorithms/softmatch/softmatch.py`, `softmatch/utils.py`
(`SoftMatchWeightingHook`) and `hooks/dist_align.py` (`DistAlignEMAHook`)
(docs/algorithms.md#softmatch):

- uniform alignment: q̃ = Normalize(q·(ε + 1/C) / (ε + p̂)), p̂ an EMA (0.999) of the mean
  weak-view prediction that starts at the first batch mean (`modules.alignment.EMAAlignment`);
- the Gaussian's mean μ_t (start 1/C) and variance σ²_t (start 1) are EMAs (0.999) of the mean
  and of the unbiased variance of the aligned top confidences (every process's batch);
- USB moves p̂, μ_t and σ²_t with this step's batch *before* weighting, so the step uses
  estimates that count its own batch;
- weight λ(q̃) = 1 if max q̃ ≥ μ_t, else exp(−(max q̃ − μ_t)² / (2σ²_t / n²)), n = 2;
- the hard pseudo-label is the argmax of the **un-aligned** prediction (USB: "uniform alignment
  in softmatch do not use aligned probs for generating pseudo labels"); the weighted loss is
  averaged over all μB images;
- FixMatch's pipeline otherwise: one call over concat(x, u_w, u_s), μ = 7, λ_u = 1, SGD 0.03
  Nesterov with the 7π/16 cosine, wd 5e-4, 2^20 steps.

USB's `dist_align` flag has no effect there (the alignment always runs; `dist_uniform=False`
aligns to an EMA of the labeled predictions instead of uniform, `uniform_alignment=False`
here). Its `per_class` Gaussian is left out: that branch reads `self.args`, which the hook does
not have, so it cannot run in USB.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semisup import distributed
from semisup.algorithms.base import Algorithm, TaskInfo
from semisup.algorithms.registry import ALGORITHMS
from semisup.math import pseudo, thresholds
from semisup.models import forward
from semisup.modules.alignment import EMAAlignment


@ALGORITHMS.register("softmatch")
class SoftMatch(Algorithm):
    """SoftMatch (Chen et al., ICLR 2023): truncated-Gaussian weights after uniform alignment.

    L = CE(x, y) + λ_u·(1/μB) Σ_b λ(q̃_b)·CE(u_s,b, argmax q_b), q the weak-view softmax and q̃
    its aligned version (no gradient). The alignment estimate and the Gaussian's parameters are
    buffers; `forward` computes their values after this step and uses them, `on_step_end`
    stores them.

    Args:
        model: the classifier.
        info: data/run facts.
        lambda_u: λ_u, weight of the unlabeled loss.
        mu: μ, unlabeled images per labeled image.
        momentum: momentum of every EMA (USB `ema_p`).
        n_sigma: n, the Gaussian's variance is σ²_t / n² (USB `n_sigma`).
        uniform_alignment: align to uniform (USB `dist_uniform`); False aligns to an EMA of the
            labeled predictions.
    """

    def __init__(
        self,
        model: nn.Module,
        info: TaskInfo,
        lambda_u: float = 1.0,
        mu: int = 7,
        momentum: float = 0.999,
        n_sigma: float = 2.0,
        uniform_alignment: bool = True,
    ) -> None:
        super().__init__(model, info)
        self.lambda_u, self.mu = lambda_u, mu
        self.momentum, self.n_sigma = momentum, n_sigma
        self.views = {"x": "weak", "u_w": "weak", "u_s": "strong_cutout"}
        self.alignment = EMAAlignment(info.num_classes, momentum, not uniform_alignment)
        self.register_buffer("gaussian_mean", torch.tensor(1.0 / info.num_classes))
        self.register_buffer("gaussian_var", torch.tensor(1.0))

    def forward(self, batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        logits_x, logits_u_w, logits_u_s = forward.forward_three_views(self.model, batch)
        loss_x = F.cross_entropy(logits_x, batch["y"])

        probs_x = logits_x.detach().softmax(dim=-1)
        probs_u_w = logits_u_w.detach().softmax(dim=-1)
        p_model, p_target = self.alignment.estimates(probs_u_w, probs_x)
        aligned = self.alignment(probs_u_w, p_model, p_target)

        # The Gaussian's parameters with this step's aligned confidences (all processes).
        confidences = distributed.all_gather_cat(aligned).amax(dim=-1)
        mean = thresholds.moving_average(self.gaussian_mean, confidences.mean(), self.momentum)
        var = thresholds.moving_average(self.gaussian_var, confidences.var(), self.momentum)
        weight = thresholds.truncated_gaussian_weight(aligned.amax(dim=-1), mean, var, self.n_sigma)

        pseudo_u = probs_u_w.argmax(dim=-1)
        loss_u = (F.cross_entropy(logits_u_s, pseudo_u, reduction="none") * weight).mean()
        return {
            **pseudo.loss_outputs(loss_x, loss_u, self.lambda_u),
            **pseudo.monitors(probs_u_w, pseudo_u, weight, batch.get("u_y")),
            "gaussian_mean": mean,
            "gaussian_std": var.sqrt(),
            "state": {"p_model": p_model, "p_target": p_target, "mean": mean, "var": var},
        }

    @torch.no_grad()
    def on_step_end(self, batch: dict[str, Tensor], out: dict[str, Tensor], step: int) -> None:
        """Stores the alignment estimates and the Gaussian's parameters this step used."""
        state = out["state"]
        self.alignment.store(state["p_model"], state["p_target"])
        self.gaussian_mean.copy_(state["mean"])
        self.gaussian_var.copy_(state["var"])
