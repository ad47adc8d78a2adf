"""Pure loss functions with explicit reductions. Per-sample outputs where masking follows."""

from __future__ import annotations

from torch import Tensor


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Per-sample cross-entropy against a target distribution: −Σ_c t_c · log softmax(z)_c.

    Args:
        logits: (N, C).
        targets: (N, C) probabilities (each row sums to 1).

    Returns:
        (N,) losses.
    """
    return -(targets * logits.log_softmax(dim=-1)).sum(dim=-1)
