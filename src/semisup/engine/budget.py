"""Wall-clock budgets: durations, the step count a budget allows, and the run's clock."""

from __future__ import annotations

import time
from dataclasses import dataclass

from semisup.durations import format_duration, parse_duration
from semisup.errors import UserError

__all__ = ["RunClock", "Schedule", "fit_to_budget", "format_duration", "parse_duration"]


@dataclass(frozen=True)
class Schedule:
    """How a budget is spent: `steps` optimizer steps, an evaluation every `eval_every`."""

    steps: int
    eval_every: int


def fit_to_budget(
    seconds: float,
    step_seconds: float,
    eval_seconds: float,
    evaluations: int = 20,
    min_evaluations: int = 10,
    eval_share: float = 0.15,
) -> Schedule:
    """The most steps that fit `seconds`, with about `evaluations` evaluations among them.

    The evaluations (each `eval_seconds`, test-set inference and a checkpoint) take at most
    `eval_share` of the budget, but there are always at least `min_evaluations`. The last
    evaluation runs after the budget (the run ends "within the budget plus its final
    evaluation").

    Raises:
        UserError: when not even one step per evaluation fits.
    """
    affordable = int(eval_share * seconds / eval_seconds) + 1 if eval_seconds > 0 else evaluations
    count = max(min_evaluations, min(evaluations, affordable))
    steps = int((seconds - (count - 1) * eval_seconds) / step_seconds)
    if steps < count:
        raise UserError(
            f"a budget of {format_duration(seconds)} leaves room for {max(steps, 0)} steps of "
            f"{step_seconds:.2f} s and {count} evaluations of {eval_seconds:.1f} s; give more time "
            "(--time), a smaller model (--set model.name=cnn) or a smaller test set"
        )
    return Schedule(steps=steps, eval_every=steps // count)


class RunClock:
    """The wall clock of a run: its deadline and when the next time-based checkpoint is due.

    Args:
        deadline: `time.monotonic()` value at which training stops (None: no budget).
        checkpoint_every: seconds between checkpoints that are not at an evaluation.
    """

    def __init__(self, deadline: float | None, checkpoint_every: float) -> None:
        self.deadline, self.checkpoint_every = deadline, checkpoint_every
        self.last_checkpoint = time.monotonic()

    def expired(self) -> bool:
        """Whether the budget is spent."""
        return self.deadline is not None and time.monotonic() >= self.deadline

    def checkpoint_due(self) -> bool:
        """Whether `checkpoint_every` seconds passed since the last checkpoint."""
        return time.monotonic() - self.last_checkpoint >= self.checkpoint_every

    def checkpointed(self) -> None:
        """Records a checkpoint written now."""
        self.last_checkpoint = time.monotonic()
