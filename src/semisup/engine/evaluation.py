"""Evaluation of a model on the test set, the per-evaluation record and the run summary."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from semisup import distributed
from semisup.data.ssl import SSLData
from semisup.engine.metrics import classification_metrics, median_last, predict_logits
from semisup.engine.runtime import Runtime


def evaluate(
    model: nn.Module,
    data: SSLData,
    runtime: Runtime,
    batch_size: int,
    adjustment: Tensor | None = None,
) -> dict[str, Any]:
    """Accuracy, balanced and per-class accuracy of `model` on the test set.

    Each rank predicts every world_size-th test image; the shards are then reassembled. With a
    logit `adjustment` (an algorithm's post-hoc logit adjustment), also the adjusted metrics
    under keys ending "_la".
    """
    assert data.test_images is not None and data.test_targets is not None
    rank, world_size = distributed.rank(), distributed.world_size()
    shard = predict_logits(
        model,
        data.test_images[rank::world_size],
        batch_size,
        runtime.device,
        runtime.channels_last,
        runtime.autocast_dtype,
    )
    logits = torch.empty(len(data.test_images), shard.shape[1])
    for r, part in enumerate(distributed.all_gather_objects(shard)):
        logits[r::world_size] = part
    targets, num_classes = data.test_targets, data.num_classes
    metrics = classification_metrics(logits.argmax(dim=1), targets, num_classes)
    if adjustment is not None:
        adjusted = logits - adjustment.float().cpu()
        la = classification_metrics(adjusted.argmax(dim=1), targets, num_classes)
        metrics.update(accuracy_la=la["accuracy"], balanced_accuracy_la=la["balanced_accuracy"])
    return metrics


def accuracy_record(ema: dict[str, Any], raw: dict[str, Any]) -> dict[str, Any]:
    """The test-set part of an evaluation record: EMA metrics, plus the raw model's accuracy."""
    record = {
        "test_accuracy": ema["accuracy"],
        "test_balanced_accuracy": ema["balanced_accuracy"],
        "test_accuracy_raw": raw["accuracy"],
        "per_class_accuracy": ema["per_class_accuracy"],
    }
    if "accuracy_la" in ema:
        record.update(
            test_accuracy_la=ema["accuracy_la"],
            test_balanced_accuracy_la=ema["balanced_accuracy_la"],
        )
    return record


def mean_over_ranks(means: dict[str, Any]) -> dict[str, Any]:
    """Averages each rank's training scalars (each saw a share of the batch)."""
    if distributed.world_size() == 1:
        return means
    result: dict[str, Any] = {}
    everyone = distributed.all_gather_objects(means)
    for key in means:
        values = [m[key] for m in everyone if m.get(key) is not None]
        if not values:
            result[key] = None
        elif isinstance(values[0], list):
            result[key] = np.mean(values, axis=0).tolist()
        else:
            result[key] = float(np.mean(values))
    return result


def run_summary(
    history: list[dict[str, Any]],
    steps: int,
    wall_seconds: float,
    data: SSLData,
    confusion_matrix: list[list[int]] | None,
) -> dict[str, Any]:
    """The end-of-run facts written to summary.json."""
    accuracies = [r["test_accuracy"] for r in history if "test_accuracy" in r]
    last = history[-1] if history else {}
    return {
        "steps": steps,
        "test_accuracy": last.get("test_accuracy"),
        "test_balanced_accuracy": last.get("test_balanced_accuracy"),
        "test_accuracy_raw": last.get("test_accuracy_raw"),
        "test_accuracy_la": last.get("test_accuracy_la"),
        "median_last20_accuracy": median_last(accuracies) if accuracies else None,
        "evaluations": len(history),
        "skipped_steps": sum(r.get("skipped_steps", 0) for r in history),
        "wall_seconds": round(wall_seconds, 2),
        "steps_per_second": round(steps / wall_seconds, 3) if wall_seconds > 0 else None,
        "class_names": list(data.class_names),
        "image_shape": list(data.images.shape[1:]),  # (C, H, W) the model takes
        "labeled_class_counts": list(data.labeled_class_counts()),
        "confusion_matrix": confusion_matrix,
        "skipped_files": list(data.skipped_files),  # undecodable images left out of the data
    }


def eval_line(record: dict[str, Any]) -> str:
    """The line printed after each evaluation."""
    parts = [f"step {record['step']}"]
    if "test_accuracy" in record:
        parts.append(f"test acc {100 * record['test_accuracy']:.2f}% (EMA)")
        parts.append(f"{100 * record['test_accuracy_raw']:.2f}% (raw)")
    for key in ("loss", "mask_rate", "pseudo_label_accuracy"):
        value = record.get(key)
        if value is not None:
            parts.append(f"{key} {value:.3f}")
    return " | ".join(parts)
