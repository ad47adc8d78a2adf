"""CReST and CReST+ (Wei et al., CVPR 2021, https://arxiv.org/abs/2102.09559): the learner.

Class-Rebalancing Self-Training retrains a semi-supervised learner for several generations;
after each one, the most confident pseudo-labeled images join the labeled set, the rarer the
predicted class the more of them (docs/algorithms.md#crest). This module holds the per-generation
learner (`crest`: FixMatch, and for CReST+ progressive distribution alignment) and the pure
rebalancing math; `semisup.commands.crest_generations` runs the generations (`semisup crest`).

Follows google-research/crest (`util/semisup.py`, `data/cifar.py`, `fixmatch.py`):

- the class profile is the known long-tail profile gt_p ∝ γ^(−k/(C−1)) of the data (k = rank of
  the class by labeled count, most frequent first), or the labeled class prior when the data
  set has no such profile (USB uses the labeled prior always);
- sampling rate of the class at rank k: μ = (gt_p[C−1−k] / gt_p[0])^(1/α), α = 3 (the paper
  writes α = 1/3); class c adds the int(n_c·μ_c) most confident of its n_c predicted images;
- CReST+: the pseudo-labels are aligned to normalise(gt_p^t) with the generation's
  t_g = (1 − g/(G−1))·1 + (g/(G−1))·t_min, t_min = 0.5, and p_model the mean of the last
  128 batch means (FixMatchDA's alignment with its α fixed to t_g);
- "LA (Inf)", the logit-adjusted evaluation, subtracts log p_data with p_data the code's `PData`
  (`util/train.py` `eval_step`, updated in `fixmatch.py` `step_fn`): an EMA (0.999, from
  uniform) of the one-hot labels of this generation's labeled batches, picks included, not
  gt_p.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semisup.algorithms.base import TaskInfo
from semisup.algorithms.fixmatch_da import FixMatchDA
from semisup.algorithms.registry import ALGORITHMS
from semisup.math import prior
from semisup.modules import alignment


def class_profile(counts: Sequence[int], imbalance_ratio: float | None) -> Tensor:
    """The data's class distribution gt_p (C,): γ^(−k/(C−1)), normalised, k = rank by `counts`.

    docs/algorithms.md#numeric-checks CR2 (γ = 100, C = 10, class 0 most frequent):
    [0.40293126, 0.24155094, …, 0.00402931].

    Args:
        counts: labeled images per class; they rank the classes (most frequent first, ties in
            class order).
        imbalance_ratio: γ = N_1 / N_C of the long-tailed set; None: the labeled class prior.
    """
    if imbalance_ratio is None:
        return prior.class_prior(counts)
    num_classes = len(counts)
    ranks = torch.arange(num_classes, dtype=torch.float64) / max(num_classes - 1, 1)
    by_rank = imbalance_ratio ** (-ranks)
    order = torch.tensor(counts).argsort(descending=True, stable=True)
    profile = torch.empty_like(by_rank).scatter_(0, order, by_rank)
    return (profile / profile.sum()).float()


def sampling_rates(profile: Tensor, alpha: float) -> Tensor:
    """μ_c = (gt_p[C−1−k] / gt_p[0])^(1/α) for the class at rank k (float64, (C,)).

    docs/algorithms.md#numeric-checks CR3 (CR2's profile, α = 3):
    [0.21544347, 0.25550971, …, 0.84319093, 1.0]: the most frequent class keeps γ^(−1/3) of its
    predictions, the rarest all of them.
    """
    order = profile.double().argsort(descending=True, stable=True)
    ranked = profile.double()[order]
    by_rank = (ranked.flip(0) / ranked[0]) ** (1.0 / alpha)
    return torch.empty_like(by_rank).scatter_(0, order, by_rank)


def generation_temperature(generation: int, generations: int, final: float) -> float:
    """CReST+'s t_g = (1 − g/(G−1))·1 + (g/(G−1))·t_min.

    docs/algorithms.md#numeric-checks CR4: G = 6 → 1.0, 0.9, …, 0.5. A single generation
    (G = 1) uses t = 1.
    """
    progress = generation / (generations - 1) if generations > 1 else 0.0
    return (1.0 - progress) * 1.0 + progress * final


def pick_pseudo_labels(probs: Tensor, rates: Tensor) -> tuple[Tensor, Tensor]:
    """Class-rebalancing sampling: per predicted class c, its int(n_c·μ_c) most confident items.

    Args:
        probs: (N, C) predicted distributions on the candidate images (EMA model, no
            augmentation).
        rates: (C,) μ_c from `sampling_rates`.

    Returns:
        (positions into `probs` (M,), their pseudo-labels (M,)), class by class, most
        confident first.
    """
    confidence, predicted = probs.max(dim=1)
    picked = []
    for c in range(probs.shape[1]):
        members = (predicted == c).nonzero().squeeze(1)
        ranked = members[confidence[members].argsort(descending=True, stable=True)]
        picked.append(ranked[: int(len(members) * float(rates[c]))])
    positions = torch.cat(picked)
    return positions, predicted[positions]


@ALGORITHMS.register("crest")
class CReST(FixMatchDA):
    """One generation of CReST/CReST+ (Wei et al., CVPR 2021): FixMatch (+ DA at fixed t).

    `semisup crest` trains it generation after generation; alone it is FixMatch (with
    `distribution_alignment`: CReST+'s alignment of generation g, target normalise(gt_p^t)).
    FixMatchDA's pipeline: one forward call over (x, u_w, u_s), mask and hard label from the
    (aligned) weak-view prediction, L_u averaged over all μB, p_model the mean of the last 128
    un-aligned batch means. The logit adjustment of `test_accuracy_la` is log of
    `label_prior`, the EMA of the labeled batches' one-hot labels (pseudo-labels of the picks
    included), updated after each step as the code's `p_data`.

    Args:
        model: the classifier.
        info: data/run facts; `labeled_class_counts` rank the classes for gt_p (`semisup
            crest` keeps the original split's counts there in every generation).
        threshold: τ (≥).
        lambda_u: λ_u.
        mu: μ.
        distribution_alignment: align the pseudo-labels (CReST+).
        da_temperature: t, the exponent of gt_p in the alignment target.
        imbalance_ratio: γ of the long-tailed data, for gt_p; None: the labeled class prior.
        la_inference: report logit-adjusted test accuracy (logits − log p_data, p_data the
            label EMA).
        window: batches in the p_model window (128).
        prior_momentum: EMA momentum of the label prior used by LA (Inf) (`PData`, 0.999).
    """

    def __init__(
        self,
        model: nn.Module,
        info: TaskInfo,
        threshold: float = 0.95,
        lambda_u: float = 1.0,
        mu: int = 7,
        distribution_alignment: bool = False,
        da_temperature: float = 1.0,
        imbalance_ratio: float | None = None,
        la_inference: bool = True,
        window: int = 128,
        prior_momentum: float = 0.999,
    ) -> None:
        # k = 0 holds FixMatchDA's exponent at its final value: t for the whole generation.
        super().__init__(
            model,
            info,
            threshold=threshold,
            lambda_u=lambda_u,
            mu=mu,
            alpha_min=da_temperature,
            k=0.0,
            distribution_alignment=distribution_alignment,
            la_inference=la_inference,
            window=window,
        )
        self.views = {"x": "weak", "u_w": "weak", "u_s": "strong_cutout"}
        self.p_data.copy_(class_profile(info.labeled_class_counts, imbalance_ratio))
        self.label_prior = alignment.EMADistribution(info.num_classes, prior_momentum)

    @torch.no_grad()
    def on_step_end(self, batch: dict[str, Tensor], out: dict[str, Tensor], step: int) -> None:
        """p_model ← the un-aligned weak batch mean; the label EMA ← this batch's labels."""
        super().on_step_end(batch, out, step)
        self.label_prior.update(F.one_hot(batch["y"], self.num_classes).float())

    def logit_adjustment(self) -> Tensor | None:
        """The "LA (Inf)" shift: log of the label EMA (crest `util/train.py` `eval_step`)."""
        return self.label_prior().log() if self.la_inference else None
