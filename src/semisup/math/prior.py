"""Class priors for long-tailed SSL: progressive targets and logit adjustment (UDAL, CReST+).

Pure functions of the UDAL paper (Lazarow et al.; docs/algorithms.md#udal) and its Algorithm 1:
    `class_prior`: p_data from labeled class counts;
    `alpha_schedule`: α_t = 1 − (1 − α_min)(t/T)^k, eq. (10) (k = 1 is CReST+'s eq. (4));
    `progressive_target`: π_t = Normalize(p_data^α_t), eq. (2);
    `logit_shift`: log(current / π_t), added to the logits inside a loss, eq. (6) and (9).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from semisup.errors import UserError

TARGET_EPS = 1e-9  # Algorithm 1: current_dist / (target_dist + 1e-9)


def class_prior(counts: Sequence[int]) -> Tensor:
    """p_data: labeled class counts normalised to a distribution (C,).

    Raises:
        UserError: if a class has no labeled image (log p_data would be −∞).
    """
    prior = torch.tensor(counts, dtype=torch.float32)
    if (prior <= 0).any():
        empty = [i for i, n in enumerate(counts) if n <= 0]
        raise UserError(
            f"classes {empty} have no labeled image, so their prior log p_data is -inf; give "
            "every class at least one label (e.g. a larger data.labeled_fraction)"
        )
    return prior / prior.sum()


def alpha_schedule(progress: float, alpha_min: float, k: float) -> float:
    """α_t = 1 − (1 − α_min) · (t/T)^k, UDAL eq. (10).

    docs/algorithms.md#numeric-checks U1 (α_min = 0.1, k = 2): progress 0 / 0.25 / 0.5 / 1 →
    1.0 / 0.94375 / 0.775 / 0.1.
    k = 0 holds α at α_min from the start (the paper's "no schedule" ablation, Fig. 3c).

    Args:
        progress: t/T, fraction of training done (clipped to [0, 1]).
        alpha_min: the final α.
        k: rate; 2 in UDAL, 1 (linear) in CReST+.
    """
    progress = min(max(progress, 0.0), 1.0)
    return 1.0 - (1.0 - alpha_min) * progress**k


def progressive_target(p_data: Tensor, alpha: float) -> Tensor:
    """π = Normalize(p_data^α), UDAL eq. (2): p_data at α = 1, uniform at α = 0."""
    tempered = p_data.pow(alpha)
    return tempered / tempered.sum()


def logit_shift(current: Tensor, target: Tensor) -> Tensor:
    """log(current / (target + 1e-9)): the logit adjustment that aligns `current` to `target`.

    Adding it to the logits inside a cross-entropy makes the trained f(x) predict with the
    prior `target` instead of `current` (Menon et al.'s logit-adjusted loss; UDAL eq. (6), (9)).
    docs/algorithms.md#numeric-checks U2: p_data = [0.8, 0.2], α = 0.5 → π = [2/3, 1/3],
    shift [0.18232156, −0.51082562].
    """
    return torch.log(current / (target + TARGET_EPS))


def uniform_like(distribution: Tensor) -> Tensor:
    """The uniform distribution over the classes of `distribution`."""
    return torch.full_like(distribution, 1.0 / distribution.numel())
