"""Running means of the per-step scalars, kept on the device until they are read."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class ScalarMeter:
    """Sums scalar and vector outputs between evaluations without a device sync per step.

    NaN values (e.g. pseudo-label accuracy when no pseudo-label passed the threshold) are left
    out of the mean of their key; a key with no valid value reads as None (JSON null).
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forgets everything since the last evaluation."""
        self.sums: dict[str, Tensor] = {}
        self.counts: dict[str, Tensor] = {}
        self.last: dict[str, Tensor] = {}
        self.skipped = 0

    def add(self, out: dict[str, Any]) -> None:
        """Adds one step's outputs: scalars and vectors, every key but "state" (not logged)."""
        for key, value in out.items():
            if key == "state":
                continue
            value = value.detach().float().reshape(value.shape if value.numel() > 1 else ())
            valid = ~torch.isnan(value)
            self.sums[key] = self.sums.get(key, 0) + torch.where(valid, value, 0.0)
            self.counts[key] = self.counts.get(key, 0) + valid.float()
            self.last[key] = value

    def count_skipped(self) -> None:
        """Records a step skipped for a non-finite loss."""
        self.skipped += 1

    def state_dict(self) -> dict[str, Any]:
        """The sums since the last evaluation (a run resumed between two logs the same means)."""
        return {
            "sums": self.sums,
            "counts": self.counts,
            "last": self.last,
            "skipped": self.skipped,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores a `state_dict()`."""
        self.reset()
        self.sums, self.counts = dict(state["sums"]), dict(state["counts"])
        self.last, self.skipped = dict(state["last"]), int(state["skipped"])

    def means(self) -> dict[str, Any]:
        """{key: mean since reset} (None where no valid value), plus skipped_steps if any."""
        result: dict[str, Any] = {}
        for key, total in self.sums.items():
            if total.dim():  # a distribution: element-wise mean
                result[key] = (total / self.counts[key].clamp(min=1)).tolist()
                continue
            count = float(self.counts[key])
            result[key] = float(total) / count if count else None
        if self.skipped:
            result["skipped_steps"] = self.skipped
        return result

    def postfix(self, history: list[dict[str, Any]]) -> dict[str, str]:
        """Short progress-bar fields: latest loss and the last evaluated test accuracy."""
        fields = {k: f"{float(self.last[k]):.3f}" for k in ("loss", "mask_rate") if k in self.last}
        if history and "test_accuracy" in history[-1]:
            fields["acc"] = f"{100 * history[-1]['test_accuracy']:.1f}%"
        return fields
