"""Pure functions that turn predictions into training targets (pseudo-labels, masks)."""

from __future__ import annotations

from torch import Tensor


def confidence_mask(probs: Tensor, threshold: float) -> Tensor:
    """FixMatch's mask: 1.0 where the largest class probability is ≥ `threshold`, else 0.0.

    Args:
        probs: (N, C) probabilities.
        threshold: τ (the comparison is greater-or-equal, as in the original code).

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
    probs_u: Tensor, pseudo_labels: Tensor, mask: Tensor, true_labels: Tensor | None
) -> dict[str, Tensor]:
    """The monitoring outputs of a pseudo-labelling algorithm (no gradient).

    Args:
        probs_u: (N, C) predicted probabilities on the unlabeled images (the weak view).
        pseudo_labels: (N,) the pseudo-labels.
        mask: (N,) weights of the unlabeled loss.
        true_labels: (N,) hidden true labels (`batch.get("u_y")`), −1 where unknown, or None.

    Returns:
        mask_rate, unlabeled_distribution (the (C,) mean prediction) and, with true labels,
        pseudo_label_accuracy.
    """
    out = {"mask_rate": mask.mean(), "unlabeled_distribution": probs_u.detach().mean(dim=0)}
    if true_labels is not None:
        out["pseudo_label_accuracy"] = pseudo_label_accuracy(pseudo_labels, true_labels, mask)
    return out
