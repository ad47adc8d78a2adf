"""Unsupervised Data Augmentation (Xie et al., NeurIPS 2020, https://arxiv.org/abs/1904.12848).

The prediction on a strongly augmented unlabeled image should match the (sharpened) prediction
on its weakly augmented version, for confident images; the supervised loss is annealed (TSA) so
the few labels are not memorised early. Follows google-research/uda `image/main.py` and
google-research/fixmatch `uda.py` (the FixMatch baseline):

- one forward call over concat(x, u_w, u_s), as both codes do (shared BatchNorm batch
  statistics, running statistics updated once);
- target softmax(z_w / T), T = 0.4; mask max softmax(z_w) ≥ β = 0.8 (the paper's CIFAR-10
  values, also USB's; the fixmatch-repo flags are T = 1, β = 0.95; UDA's code compares with >);
- loss KL(target ‖ p(u_s)), averaged over all μB unlabeled images (masked ones count as zero);
- TSA (`semisup.math.tsa`) on the labeled cross-entropy; default "linear" as in the uda repo's
  CIFAR-10 TPU script (its GPU script, the fixmatch repo and USB default to none);
- μ = 7 as in the fixmatch repo and USB (the uda repo used 5 on GPU, 30 on TPU); SGD + Nesterov
  0.03, FixMatch's cosine decay, L2 5e-4. The strong view is RandAugment + cutout in the paper
  (`augment.strong=randaugment_crest`); CTAugment + cutout by default here;
- the fixmatch repo's entropy minimisation (`uda.py`: `loss_ent * we`, flag `we` = 0): the mean
  entropy of softmax(z_w) over all μB weak views, with gradient through z_w, off by default.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semisup.algorithms.base import Algorithm, TaskInfo
from semisup.algorithms.registry import ALGORITHMS
from semisup.math import losses, pseudo, tsa


@ALGORITHMS.register("uda")
class UDA(Algorithm):
    """UDA (Xie et al., NeurIPS 2020): KL to the sharpened weak-view prediction, TSA on labels.

    L = (1/Σm) Σ m_b·CE(x_b, y_b) + λ·(1/μB) Σ 1[max p(u_w) ≥ β]·KL(p(u_w)^(1/T) ‖ p(u_s)),
    with m_b = 1[p(y_b | x_b) ≤ η(t)] (TSA), plus λ_e·mean_μB H(softmax(z_w)) when
    `lambda_entropy` > 0. No gradient flows through the target, the confidence mask or the
    TSA mask; the entropy term is the only one whose gradient reaches the weak view.

    Args:
        model: the classifier.
        info: data/run facts.
        threshold: β, confidence at or above which an unlabeled image is used.
        temperature: T, softmax temperature of the target (`uda_softmax_temp`).
        lambda_u: λ, weight of the unlabeled loss (`unsup_coeff`).
        tsa_schedule: how the TSA threshold η rises from 1/C to 1 (see
            `semisup.math.tsa.threshold`); "none" turns TSA off.
        mu: μ, unlabeled images per labeled image in a batch.
        lambda_entropy: λ_e, weight of the weak-view entropy (the fixmatch repo's `we`, 0).
    """

    def __init__(
        self,
        model: nn.Module,
        info: TaskInfo,
        threshold: float = 0.8,
        temperature: float = 0.4,
        lambda_u: float = 1.0,
        tsa_schedule: tsa.Schedule = "linear",
        mu: int = 7,
        lambda_entropy: float = 0.0,
    ) -> None:
        super().__init__(model, info)
        self.threshold = threshold
        self.temperature = temperature
        self.lambda_u = lambda_u
        self.tsa_schedule = tsa_schedule
        self.mu = mu
        self.lambda_entropy = lambda_entropy
        self.views = {"x": "weak", "u_w": "weak", "u_s": "strong_cutout"}

    def forward(self, batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        x, u_w, u_s = batch["x"], batch["u_w"], batch["u_s"]
        logits = self.model(torch.cat([x, u_w, u_s]))
        logits_x, logits_u_w, logits_u_s = logits.split([len(x), len(u_w), len(u_s)])

        # Supervised cross-entropy with training signal annealing.
        eta = tsa.threshold(self.tsa_schedule, step / self.info.total_steps, self.num_classes)
        keep = tsa.hard_label_keep_mask(logits_x.detach().float().softmax(dim=-1), batch["y"], eta)
        loss_x = tsa.masked_mean(F.cross_entropy(logits_x, batch["y"], reduction="none"), keep)

        # Consistency with the sharpened weak-view prediction, on confident images only.
        target_logits = logits_u_w.detach().float()
        probs_u_w = target_logits.softmax(dim=-1)
        mask = pseudo.confidence_mask(probs_u_w, self.threshold)
        divergence = losses.kl_divergence(target_logits / self.temperature, logits_u_s)
        loss_u = (divergence * mask).mean()

        out = pseudo.loss_outputs(loss_x, loss_u, self.lambda_u)
        if self.lambda_entropy > 0:
            # Entropy minimisation on the weak view, gradient included (fixmatch `uda.py`, `we`).
            loss_entropy = losses.entropy(logits_u_w.float()).mean()
            out["loss"] = out["loss"] + self.lambda_entropy * loss_entropy
            out["loss_entropy"] = loss_entropy.detach()
        return {
            **out,
            "tsa_threshold": torch.tensor(eta),
            "tsa_keep_rate": keep.mean(),
            **pseudo.monitors(probs_u_w, probs_u_w.argmax(dim=-1), mask, batch.get("u_y")),
        }
