"""What a run shows while it trains: a progress bar on a terminal and a line per evaluation.

The evaluation lines go to standard output whether or not it is a terminal, so a run started
in the background or under a scheduler reports its accuracy, speed and time left at every
evaluation.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from tqdm import tqdm

from semisup.engine import evaluation
from semisup.engine.budget import format_duration
from semisup.engine.meter import ScalarMeter


class Progress:
    """The progress bar (only on a terminal, only on the main process) and evaluation lines.

    Args:
        total: the run's step count.
        initial: steps already done (a resumed run).
        enabled: show anything at all (False on the processes of rank > 0).
        bar: show the bar (`train.progress`).
        deadline: `time.monotonic()` at which the run's budget ends, if it has one.
    """

    def __init__(
        self, total: int, initial: int, enabled: bool, bar: bool, deadline: float | None = None
    ) -> None:
        self.total, self.enabled, self.deadline = total, enabled, deadline
        self.start_step, self.start_time = initial, time.monotonic()
        self.bar = tqdm(
            total=total,
            initial=initial,
            disable=None if bar and enabled else True,  # None: shown only on a terminal
            dynamic_ncols=True,
            unit="step",
        )

    def step(self, step: int, meter: ScalarMeter, history: list[dict[str, Any]]) -> None:
        """Advances the bar by one step; refreshes its loss and accuracy every 25 steps."""
        self.bar.update(1)
        if step % 25 == 0 or step == self.total:
            self.bar.set_postfix(meter.postfix(history), refresh=False)

    def evaluated(self, record: dict[str, Any]) -> None:
        """Prints the line of an evaluation record, with the speed and the time left."""
        if not self.enabled:
            return
        now = time.monotonic()
        rate = (record["step"] - self.start_step) / max(now - self.start_time, 1e-9)
        left = (self.total - record["step"]) / rate if rate > 0 else float("inf")
        if self.deadline is not None:
            left = min(left, max(self.deadline - now, 0.0))
        eta = format_duration(left) if 0 < left < float("inf") else "0s"
        line = f"{evaluation.eval_line(record)} | {rate:.2f} steps/s | {eta} left"
        self.bar.write(line)
        sys.stdout.flush()  # off a terminal stdout is block-buffered

    def close(self) -> None:
        self.bar.close()
