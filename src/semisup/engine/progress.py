"""What a run shows while it trains: a progress bar on a terminal and a line per evaluation."""

from __future__ import annotations

from typing import Any

from tqdm import tqdm

from semisup.engine import evaluation
from semisup.engine.meter import ScalarMeter


class Progress:
    """The progress bar (only on a terminal, only on the main process) and evaluation lines.

    Args:
        total: the run's step count.
        initial: steps already done (a resumed run).
        enabled: show anything at all (False on the processes of rank > 0).
        bar: show the bar (`train.progress`).
    """

    def __init__(self, total: int, initial: int, enabled: bool, bar: bool) -> None:
        self.total, self.enabled = total, enabled
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
        """Prints the line of an evaluation record."""
        if self.enabled:
            self.bar.write(evaluation.eval_line(record))

    def close(self) -> None:
        self.bar.close()
