"""Evaluation metrics and the papers' reporting statistic."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from semisup.models.inputs import input_normalization, to_model_input


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: Tensor,
    batch_size: int,
    device: torch.device,
    channels_last: bool = False,
    autocast_dtype: torch.dtype | None = None,
) -> Tensor:
    """Logits (N, C) in float32 on the CPU for uint8 `images`, in inference mode.

    The images are scaled with the model's own `input_normalization` ([−1, 1] without one).
    """
    was_training = model.training
    model.eval()
    normalization = input_normalization(model)
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(device)
        x = to_model_input(batch, channels_last, normalization)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            outputs.append(model(x).float().cpu())
    model.train(was_training)
    return torch.cat(outputs)


def classification_metrics(predictions: Tensor, targets: Tensor, num_classes: int) -> dict:
    """Accuracy, balanced accuracy (mean per-class recall), per-class accuracy, confusion matrix.

    Classes absent from `targets` are left out of the balanced accuracy and reported as None.
    `confusion_matrix[i][j]` counts test images of class i predicted as class j.
    """
    correct = (predictions == targets).float()
    pairs = targets * num_classes + predictions
    confusion = torch.bincount(pairs, minlength=num_classes * num_classes)
    per_class: list[float | None] = []
    for c in range(num_classes):
        members = targets == c
        per_class.append(float(correct[members].mean()) if members.any() else None)
    present = [a for a in per_class if a is not None]
    return {
        "accuracy": float(correct.mean()),
        "balanced_accuracy": sum(present) / len(present),
        "per_class_accuracy": per_class,
        "confusion_matrix": confusion.reshape(num_classes, num_classes).tolist(),
    }


def median_last(values: Sequence[float], n: int = 20) -> float:
    """Median of the last `n` values: the papers' reported accuracy.

    See docs/algorithms.md#evaluation and docs/algorithms.md#numeric-checks E1.
    """
    if not values:
        raise ValueError("no values")
    return float(statistics.median(values[-n:]))


def kl_divergence(p: list[float], q: list[float], eps: float = 1e-12) -> float:
    """KL(p ‖ q) = Σ_c p_c log(p_c / q_c) in nats; terms with p_c = 0 are 0, q is floored at eps.

    With p the labeled class distribution and q the model's mean prediction on unlabeled data,
    this is the quantity the ReMixMatch paper plots over training (its Figure 2: without
    distribution alignment the predicted marginal drifts away from the labeled one).
    """
    if len(p) != len(q):
        raise ValueError(f"distributions of different lengths: {len(p)} and {len(q)}")
    return sum(pc * math.log(pc / max(qc, eps)) for pc, qc in zip(p, q, strict=True) if pc > 0)
