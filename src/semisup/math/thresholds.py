"""Pure functions of adaptive confidence thresholds and sample weights.

The per-step rules of FlexMatch (Zhang et al., NeurIPS 2021; TorchSSL `models/flexmatch`),
FreeMatch (Wang et al., ICLR 2023), SoftMatch (Chen et al., ICLR 2023) and AdaMatch
(Berthelot et al., ICLR 2022), the last three as USB writes them
(microsoft/Semi-supervised-learning `semilearn/algorithms/<name>/utils.py`). The state they read
(counts, moving averages) lives in the algorithms' buffers; these functions only compute.
"""

from __future__ import annotations

import torch
from torch import Tensor


def moving_average(average: Tensor, value: Tensor, momentum: float) -> Tensor:
    """m·average + (1 − m)·value: the exponential moving averages of the USB hooks (a new tensor).

    Args:
        average: the running value (any shape).
        value: this step's value (the same shape, or broadcastable).
        momentum: m (0.999 in USB).
    """
    return average * momentum + (1 - momentum) * value


def learning_effects(selected: Tensor, num_classes: int, warmup: bool) -> Tensor | None:
    """FlexMatch's normalised learning effects β(c), or None where the code keeps the old ones.

    σ(c) is the number of unlabeled images whose latest confident prediction (max p ≥ τ) was
    class c; `selected` holds that class per image, −1 for images never predicted confidently.
    β(c) = σ(c) / max_c σ, or with the threshold warm-up σ(c) / max(max_c σ, N_unused) where
    N_unused counts the −1 entries (the paper's Threshold warm-up: max{max_c σ, N − Σ_c σ}).
    Like TorchSSL's `Counter` loop (`flexmatch.py` train), nothing is computed while every entry
    holds the same value (at the start all are −1): the caller keeps the previous β, zeros at
    first.

    Args:
        selected: (N,) long, a class id or −1 per unlabeled image.
        num_classes: C.
        warmup: TorchSSL's `thresh_warmup` (True).

    Returns:
        (C,) float32 β, or None when all N entries are equal.
    """
    counts = torch.bincount(selected + 1, minlength=num_classes + 1)  # index 0 counts the −1s
    if int(counts.max()) >= len(selected):
        return None
    class_counts = counts[1:]
    denominator = counts.max() if warmup else class_counts.max()
    return class_counts.float() / denominator.float()


def convex_mapping(beta: Tensor) -> Tensor:
    """FlexMatch's non-linear mapping M(β) = β / (2 − β): 0 ↦ 0, 1 ↦ 1, convex in between.

    The mapping the code uses (its `# convex` line; the paper's Non-linear mapping function).
    """
    return beta / (2.0 - beta)


def class_normalised_thresholds(global_threshold: Tensor, class_confidence: Tensor) -> Tensor:
    """FreeMatch's self-adaptive class thresholds τ(c) = MaxNorm(p̃)(c) · τ_t.

    Args:
        global_threshold: τ_t, the EMA of the mean top confidence (scalar).
        class_confidence: p̃, the (C,) EMA of the mean predicted distribution.

    Returns:
        (C,) thresholds; the most confident class gets τ_t itself.
    """
    return global_threshold * (class_confidence / class_confidence.max())


def truncated_gaussian_weight(
    confidence: Tensor, mean: Tensor, variance: Tensor, n_sigma: float
) -> Tensor:
    """SoftMatch's sample weight: 1 at or above μ, exp(−(c − μ)² / (2σ²/n²)) below it.

    USB `SoftMatchWeightingHook.masking`: the variance is divided by n_sigma², so the weight
    falls to exp(−n²/2) one standard deviation below the mean.

    Args:
        confidence: (N,) top probabilities.
        mean: μ_t, the EMA of their mean (scalar or (N,)).
        variance: σ_t², the EMA of their variance.
        n_sigma: n (2 in USB).
    """
    below = (confidence - mean).clamp(max=0.0)
    return torch.exp(-below.square() / (2 * variance / n_sigma**2))


def relative_threshold(probs_x: Tensor, threshold: float) -> Tensor:
    """AdaMatch's relative confidence threshold: τ · mean_b max_c p(x_b), on the labeled batch.

    Args:
        probs_x: (B, C) predicted probabilities of the labeled (weak) images.
        threshold: τ (0.95).

    Returns:
        The scalar threshold for the unlabeled images.
    """
    return probs_x.amax(dim=-1).mean() * threshold
