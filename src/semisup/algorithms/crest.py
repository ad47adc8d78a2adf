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
  128 batch means (FixMatchDA's alignment with its α fixed to t_g).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from semisup.algorithms.base import TaskInfo
from semisup.algorithms.fixmatch_da import FixMatchDA
from semisup.algorithms.registry import ALGORITHMS
from semisup.math import prior


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
    un-aligned batch means. gt_p also gives the logit adjustment of `test_accuracy_la`.

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
        la_inference: report logit-adjusted test accuracy (logits − log gt_p).
        window: batches in the p_model window (128).
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
