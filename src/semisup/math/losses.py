"""Pure loss functions with explicit reductions. Per-sample outputs where masking follows."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from semisup.math import pseudo


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Per-sample cross-entropy against a target distribution: −Σ_c t_c · log softmax(z)_c.

    Args:
        logits: (N, C).
        targets: (N, C) probabilities (each row sums to 1).

    Returns:
        (N,) losses.
    """
    return -(targets * logits.log_softmax(dim=-1)).sum(dim=-1)


def kl_divergence(target_logits: Tensor, logits: Tensor) -> Tensor:
    """Per-sample KL(softmax(target_logits) ‖ softmax(logits)) = Σ_c p_c · (log p_c − log q_c).

    Gradients flow into both arguments; detach `target_logits` for a fixed target.

    Args:
        target_logits: (N, C) logits of the target distribution p.
        logits: (N, C) logits of the predicted distribution q.

    Returns:
        (N,) divergences (≥ 0, zero where the two distributions agree).
    """
    log_p = target_logits.log_softmax(dim=-1)
    return (log_p.exp() * (log_p - logits.log_softmax(dim=-1))).sum(dim=-1)


def entropy(logits: Tensor) -> Tensor:
    """Per-sample entropy of softmax(logits): −Σ_c p_c · log p_c (log C for uniform p).

    Args:
        logits: (N, C).

    Returns:
        (N,) entropies.
    """
    log_p = logits.log_softmax(dim=-1)
    return -(log_p.exp() * log_p).sum(dim=-1)


def probability_mse(logits: Tensor, targets: Tensor) -> Tensor:
    """Per-sample squared error between softmax(logits) and targets, averaged over classes.

    (1/C) Σ_c (softmax(z)_c − t_c)²: the consistency loss of the Π-model and Mean Teacher, and
    MixMatch's L_U; the mean over classes is the Google code's `reduce_mean(..., -1)`.

    Args:
        logits: (N, C) predicted logits.
        targets: (N, C) target probabilities.

    Returns:
        (N,) losses.
    """
    return (logits.softmax(dim=-1) - targets).square().mean(dim=-1)


def hard_label_loss(
    logits_u_s: Tensor, probs: Tensor, threshold: float | Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """FixMatch's unlabeled loss, eq. (4): masked CE of argmax(probs) on the strong-view logits.

    The mean runs over ALL μB unlabeled images (masked ones count as zero), as in the code.

    Args:
        logits_u_s: (μB, C) strong-view logits (any logit adjustment already added).
        probs: (μB, C) the weak-view probabilities that make the pseudo-labels, no gradient.
        threshold: τ (≥), eq. (3); or a tensor: a scalar (AdaMatch) or one per image (FlexMatch).

    Returns:
        (loss_u, mask (μB,), pseudo-labels (μB,)).
    """
    mask = pseudo.confidence_mask(probs, threshold)
    pseudo_u = probs.argmax(dim=-1)
    loss_u = (F.cross_entropy(logits_u_s, pseudo_u, reduction="none") * mask).mean()
    return loss_u, mask, pseudo_u


def _inverse_or_zero(values: Tensor) -> Tensor:
    """1 / x, with 0 where x = 0 (USB's `replace_inf_to_zero(1 / x)`)."""
    return torch.where(values > 0, 1.0 / values, torch.zeros_like(values))


def fairness_loss(logits: Tensor, p_model: Tensor, label_hist: Tensor) -> Tensor:
    """FreeMatch's self-adaptive fairness term −H(SumNorm(p̃/h̃), SumNorm(p̄/h̄)), a scalar.

    p̃ and h̃ are the EMAs of the mean prediction and of the pseudo-label histogram (no gradient),
    p̄ and h̄ the mean prediction and the normalised histogram of the predicted classes of
    `logits`. The value is Σ_c t_c·log(q_c + 1e-12), the negative cross-entropy of the paper's
    Self-adaptive Fairness and of USB `freematch.py` `entropy_loss`; minimising it
    moves the batch's normalised mean prediction q away from the classes the running target t
    favours. A class whose histogram entry is 0 gets weight 0 (USB's `replace_inf_to_zero`);
    the gradient flows through p̄ only.

    Args:
        logits: (N, C) strong-view logits of the images that pass the threshold, N ≥ 1.
        p_model: (C,) p̃.
        label_hist: (C,) h̃.
    """
    probs = logits.softmax(dim=-1)
    hist = torch.bincount(probs.argmax(dim=-1), minlength=logits.shape[-1]).to(probs.dtype)
    hist = hist / hist.sum()
    target = p_model * _inverse_or_zero(label_hist)
    target = target / target.sum()
    mean = probs.mean(dim=0) * _inverse_or_zero(hist)
    mean = mean / mean.sum()
    return (target * (mean + 1e-12).log()).sum()
