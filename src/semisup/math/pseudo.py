"""Pure functions that turn predictions into training targets (pseudo-labels, masks)."""

from __future__ import annotations

import torch
from torch import Tensor


def confidence_mask(probs: Tensor, threshold: float | Tensor) -> Tensor:
    """FixMatch's mask: 1.0 where the largest class probability is ≥ `threshold`, else 0.0.

    Args:
        probs: (N, C) probabilities.
        threshold: τ (the comparison is greater-or-equal, as in the original code), or a tensor
            broadcastable to (N,): a scalar or one threshold per row.

    Returns:
        (N,) float mask.
    """
    return (probs.amax(dim=-1) >= threshold).float()


def sharpen(probs: Tensor, temperature: float) -> Tensor:
    """MixMatch eq. (7): p_i^(1/T) / Σ_j p_j^(1/T), row-wise.

    Args:
        probs: (N, C) probabilities.
        temperature: T; T → 0 gives a one-hot vector, T = 1 leaves `probs` unchanged.
    """
    sharpened = probs.pow(1.0 / temperature)
    return sharpened / sharpened.sum(dim=-1, keepdim=True)


def pseudo_label_accuracy(pseudo_labels: Tensor, true_labels: Tensor, mask: Tensor) -> Tensor:
    """Accuracy of the pseudo-labels that are used (mask > 0) and whose true class is known.

    Unlabeled images whose class is unknown carry true label −1 and are ignored. Returns NaN when
    no pseudo-label qualifies (the trainer averages NaN-free values only).

    Args:
        pseudo_labels: (N,) predicted class ids.
        true_labels: (N,) hidden true class ids, −1 where unknown.
        mask: (N,) weights; items with mask 0 are not used for training and not counted.
    """
    used = (mask > 0) & (true_labels >= 0)
    correct = (pseudo_labels == true_labels) & used
    return correct.sum() / used.sum()


def monitors(
    probs_u: Tensor, pseudo_labels: Tensor, mask: Tensor | None, true_labels: Tensor | None
) -> dict[str, Tensor]:
    """The monitoring outputs of a pseudo-labelling algorithm (no gradient).

    Args:
        probs_u: (N, C) predicted probabilities on the unlabeled images (the weak view).
        pseudo_labels: (N,) the pseudo-labels (the argmax of the soft targets for MixMatch-style
            algorithms).
        mask: (N,) weights of the unlabeled loss, or None where every image is used (no
            `mask_rate` is reported then).
        true_labels: (N,) hidden true labels (`batch.get("u_y")`), −1 where unknown, or None.

    Returns:
        unlabeled_distribution (the (C,) mean prediction), mask_rate (with a mask) and, with
        true labels, pseudo_label_accuracy.
    """
    out = {"unlabeled_distribution": probs_u.detach().mean(dim=0)}
    if mask is not None:
        out["mask_rate"] = mask.mean()
    if true_labels is not None:
        used = torch.ones_like(pseudo_labels, dtype=torch.float32) if mask is None else mask
        out["pseudo_label_accuracy"] = pseudo_label_accuracy(pseudo_labels, true_labels, used)
    return out


def loss_outputs(loss_x: Tensor, loss_u: Tensor, weight: float | Tensor) -> dict[str, Tensor]:
    """`loss = loss_x + weight · loss_u` and the detached parts, as every algorithm returns them."""
    return {"loss": loss_x + weight * loss_u, "loss_x": loss_x.detach(), "loss_u": loss_u.detach()}
