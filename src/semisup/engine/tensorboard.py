"""TensorBoard event files of the evaluation records (optional: `pip install semisup[tensorboard]`).

The trainer hands every evaluation record (the line it appends to metrics.jsonl) to its
loggers; this one writes the record's scalars under RUN_DIR/tensorboard/, grouped as
`test/...` and `train/...`, plus the KL divergence between the labeled class distribution and
the mean prediction on unlabeled data (the report's KL plot). View with
`tensorboard --logdir RUN_DIR/tensorboard`.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from semisup.engine.metrics import kl_divergence
from semisup.errors import UserError

SKIPPED_KEYS = {"step"}


class MetricLogger(Protocol):
    """Receives each evaluation record (the dict appended to metrics.jsonl)."""

    def log(self, record: dict[str, Any]) -> None: ...


def tensorboard_available() -> bool:
    """Whether the `tensorboard` package (needed by torch's SummaryWriter) is installed."""
    return importlib.util.find_spec("tensorboard") is not None


def scalar_tag(key: str) -> str:
    """A metrics.jsonl key as a TensorBoard tag.

    "test_accuracy" → "test/accuracy", "loss_u" → "train/loss_u", "wall_seconds" →
    "time/wall_seconds".
    """
    if key.startswith("test_"):
        return f"test/{key[len('test_') :]}"
    if key == "wall_seconds":
        return "time/wall_seconds"
    return f"train/{key}"


def record_scalars(
    record: dict[str, Any], labeled_distribution: Sequence[float] | None
) -> dict[str, float]:
    """The finite scalars of an evaluation record as {tag: value}, plus the KL divergence."""
    scalars = {
        scalar_tag(key): float(value)
        for key, value in record.items()
        if key not in SKIPPED_KEYS
        and isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    }
    predicted = record.get("unlabeled_distribution")
    if predicted and labeled_distribution is not None:
        scalars["train/kl_labeled_vs_unlabeled_prediction"] = kl_divergence(
            list(labeled_distribution), list(predicted)
        )
    return scalars


class TensorBoardLogger:
    """Writes evaluation records to TensorBoard event files in `log_dir`.

    The writer opens at the first record with `purge_step` at that record's step, so a resumed
    run drops the events a crashed process wrote after its last checkpoint (TensorBoard's own
    mechanism for this), just as metrics.jsonl is rewritten from the checkpoint's history.

    Args:
        log_dir: the directory of the event files (RUN_DIR/tensorboard).
        labeled_class_counts: labeled images per class, for the KL scalar.
    """

    def __init__(self, log_dir: Path, labeled_class_counts: Sequence[int]) -> None:
        self.log_dir = log_dir
        total = sum(labeled_class_counts)
        self.labeled_distribution = [c / total for c in labeled_class_counts] if total else None
        self.writer: Any = None

    def log(self, record: dict[str, Any]) -> None:
        """Adds one evaluation's scalars at its step and flushes them to disk."""
        step = int(record["step"])
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.log_dir), purge_step=step)
        for tag, value in record_scalars(record, self.labeled_distribution).items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def close(self) -> None:
        """Closes the event file (also safe when nothing was logged)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def build_loggers(
    enabled: bool | None, run_dir: Path | None, labeled_class_counts: Sequence[int]
) -> tuple[MetricLogger, ...]:
    """The loggers a run asks for.

    TensorBoard when `train.tensorboard` is True, or None (auto) and the package is installed;
    nothing is logged without a run directory.
    """
    if run_dir is None or enabled is False:
        return ()
    if not tensorboard_available():
        if enabled:
            raise UserError(
                "train.tensorboard=true needs the tensorboard package: pip install tensorboard "
                "(or pip install 'semisup[tensorboard]'), or set train.tensorboard=false"
            )
        return ()
    return (TensorBoardLogger(run_dir / "tensorboard", labeled_class_counts),)
