"""Ctrl-C and SIGTERM during training: finish the step, write a checkpoint, then stop.

A signal that arrives in the middle of a step (between the optimizer step and the EMA update,
say) cannot be turned into a checkpoint there: the state is half-updated. `DeferredInterrupt`
only records the first SIGINT or SIGTERM; the training loop asks `requested()` after each
step, where the state is whole and has passed the finite-state guard, writes a checkpoint and
raises `TrainingInterrupted`. A second signal stops at once (a plain KeyboardInterrupt; the
last checkpoint is then the last one written). Job schedulers send SIGTERM before SIGKILL, so
a preempted run loses at most the step it was in.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any

from semisup import distributed

log = logging.getLogger("semisup")

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on a signal after writing a checkpoint; the message says how to resume."""


class DeferredInterrupt:
    """Holds SIGINT and SIGTERM back until the end of the current step.

    Handlers are only installed from the main thread (Python delivers signals there) and are
    put back by `restore`.
    """

    def __init__(self) -> None:
        self.received: str | None = None
        self.previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for number in SIGNALS:
                self.previous[number] = signal.signal(number, self._handle)

    def _handle(self, number: int, frame: FrameType | None) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signal.Signals(number).name
        log.warning("%s received: stopping after this step (again to stop at once)", self.received)

    def requested(self) -> bool:
        """Whether a signal arrived (on any process: all of them stop at the same step)."""
        return not distributed.all_true(self.received is None)

    def restore(self) -> None:
        """Puts the previous handlers back."""
        for number, handler in self.previous.items():
            signal.signal(number, handler)
        self.previous.clear()


def interrupted_message(signal_name: str | None, step: int, checkpoint: str | None) -> str:
    """What `semisup train` prints when a signal stopped the run."""
    where = f"; the checkpoint {checkpoint} holds it: continue with --resume" if checkpoint else ""
    return f"{signal_name or 'a signal'} at step {step}: training stopped{where}"
