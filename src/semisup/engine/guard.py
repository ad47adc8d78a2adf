"""The finite-state guard: no NaN or infinity is ever committed, neither to the run nor to disk.

A step is checked where it could first go wrong, before what it would spoil:

1. the loss and the algorithm's `state` outputs (what `on_step_end` writes into banks and
   queues), right after the forward pass;
2. the gradients, before the optimizer step (not with fp16 loss scaling, whose scaler already
   skips steps with non-finite gradients);
3. after the step's commits (optimizer step, `on_step_end`, EMA, callbacks such as the
   CTAugment rate update): the parameters and buffers (BatchNorm statistics, memory banks) of
   the algorithm, the EMA model, the optimizer state and the callbacks' (augmenter's) state.

Every check is agreed over all processes. With `train.nonfinite=stop` a failed check ends the
run with one line naming the step and the last checkpoint, which stays the last good state;
with `skip` the step is undone: the guard copied the state the step changes before it began
and puts it back, so the weights, the EMA model, the optimizer and the augmenter never hold a
non-finite value (the data position and the random streams move on, as for any step). Before
a checkpoint is written its tensors are checked once more: a checkpoint is never non-finite.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from semisup import distributed
from semisup.engine.callbacks import Callback
from semisup.engine.meter import ScalarMeter
from semisup.errors import UserError
from semisup.modules.ema import ModelEMA

log = logging.getLogger("semisup")


class NonFiniteLossError(UserError):
    """Training met a NaN or infinity and stopped; the last good checkpoint is kept."""


class Guarded(Protocol):
    """What the guard reads, copies and restores of the trainer."""

    algorithm: torch.nn.Module
    ema: ModelEMA
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    callbacks: tuple[Callback, ...]
    meter: ScalarMeter


def floating_tensors(value: Any) -> list[Tensor]:
    """Every non-empty floating-point tensor in a nested structure of dicts, lists and tuples."""
    if isinstance(value, Tensor):
        return [value] if value.is_floating_point() and value.numel() else []
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in floating_tensors(item)]
    return []


def finite_flags(tensors: Sequence[Tensor]) -> list[bool]:
    """Whether each tensor holds only finite values: one fused max-abs pass and one read per device.

    The infinity norm propagates NaN and cannot overflow, so it is non-finite exactly when some
    value is.
    """
    flags = [True] * len(tensors)
    by_device: dict[torch.device, list[int]] = {}
    for i, tensor in enumerate(tensors):
        by_device.setdefault(tensor.device, []).append(i)
    for positions in by_device.values():
        norms = torch._foreach_norm([tensors[i].detach() for i in positions], float("inf"))
        finite = torch.stack([n.float() for n in norms]).isfinite().tolist()
        for i, ok in zip(positions, finite, strict=True):
            flags[i] = ok
    return flags


def all_finite(tensors: Sequence[Tensor]) -> bool:
    """Whether every value of `tensors` is finite."""
    return all(finite_flags(tensors))


def _parts(trainer: Guarded) -> dict[str, list[Tensor]]:
    """The floating-point state a step commits, by the name the messages use."""
    model = trainer.algorithm.model
    own = {id(t) for t in (*model.parameters(), *model.buffers())}
    algorithm = (*trainer.algorithm.parameters(), *trainer.algorithm.buffers())
    parts = {
        "model parameters": list(model.parameters()),
        "model buffers (BatchNorm statistics)": list(model.buffers()),
        "algorithm state (heads, memory banks, queues)": [t for t in algorithm if id(t) not in own],
        "EMA model": list(trainer.ema.state_dict().values()),
        "optimizer state": [trainer.optimizer.state_dict()["state"]],
        **{f"{c.name} state": [c.state_dict()] for c in trainer.callbacks},
    }
    return {name: floating_tensors(part) for name, part in parts.items()}


def nonfinite_parts(trainer: Guarded) -> list[str]:
    """The names of the committed parts holding a non-finite value (agreed over processes)."""
    parts = _parts(trainer)
    flags = iter(finite_flags([t for part in parts.values() for t in part]))
    bad = [name for name, part in parts.items() if not all([next(flags) for _ in part])]
    return [] if distributed.all_true(not bad) else bad or ["state of another process"]


def _scalars(out: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={float(v.detach()):.4g}"
        for k, v in out.items()
        if isinstance(v, Tensor) and v.numel() == 1
    )


class StepGuard:
    """Checks each step before its state is committed; stops the run or undoes the step.

    Args:
        mode: "stop" or "skip" (`train.nonfinite`).
        checkpoint: the run's checkpoint path (None: the run writes no checkpoint).
        lr: the base learning rate, for the advice in the message.
    """

    def __init__(self, mode: str, checkpoint: Path | None, lr: float) -> None:
        self.mode, self.checkpoint, self.lr = mode, checkpoint, lr
        self.checkpoint_step: int | None = None  # step of the last checkpoint written or read
        self.saved: dict[str, Any] | None = None

    def begin(self, trainer: Guarded) -> None:
        """Copies the state a step changes (only with `skip`, which may have to put it back)."""
        if self.mode != "skip":
            return
        self.saved = {
            "algorithm": {k: v.clone() for k, v in trainer.algorithm.state_dict().items()},
            "ema": {k: v.clone() for k, v in trainer.ema.state_dict().items()},
            "optimizer": copy.deepcopy(trainer.optimizer.state_dict()),
            "scaler": trainer.scaler.state_dict(),
            "callbacks": {c.name: copy.deepcopy(c.state_dict()) for c in trainer.callbacks},
        }

    @staticmethod
    def nonfinite_outputs(out: dict[str, Any]) -> list[str]:
        """The outputs ("loss", "state outputs") holding a non-finite value on some process."""
        state = floating_tensors(out.get("state", {}))
        loss_ok, *state_ok = finite_flags([out["loss"], *state])
        bad = [name for name, ok in (("loss", loss_ok), ("state outputs", all(state_ok))) if not ok]
        return [] if distributed.all_true(not bad) else bad or ["outputs of another process"]

    @staticmethod
    def gradients_finite(trainer: Guarded) -> bool:
        """Whether every gradient is finite (always True under fp16 loss scaling)."""
        if trainer.scaler.is_enabled():
            return True
        grads = [p.grad for p in trainer.algorithm.parameters() if p.grad is not None]
        return distributed.all_true(all_finite(grads))

    def reject(self, trainer: Guarded, step: int, what: Iterable[str], out: dict[str, Any]) -> None:
        """Handles a failed check of step `step` (0-based): undoes it (skip) or stops (stop).

        Raises:
            NonFiniteLossError: with `stop`.
        """
        *first, last = what
        what = f"{', '.join(first)} and {last}" if first else last
        if self.mode == "skip" and self.saved is not None:
            self._restore(trainer)
            log.warning("skipped step %d: non-finite %s (%s)", step + 1, what, _scalars(out))
            trainer.meter.count_skipped()
            return None
        raise NonFiniteLossError(
            f"training stopped at step {step + 1}: the {what} became non-finite "
            f"({_scalars(out)}); {self._advice()}"
        )

    def _restore(self, trainer: Guarded) -> None:
        saved = self.saved
        assert saved is not None
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.algorithm.load_state_dict(saved["algorithm"])
        trainer.ema.load_state_dict(saved["ema"])
        trainer.optimizer.load_state_dict(saved["optimizer"])
        if not saved["optimizer"]["state"]:  # the first step created the optimizer's state
            trainer.optimizer.state.clear()
        trainer.scaler.load_state_dict(saved["scaler"])
        for callback in trainer.callbacks:
            callback.load_state_dict(saved["callbacks"][callback.name])

    def _advice(self) -> str:
        lower = f"--set optim.lr={self.lr / 10:g}"
        fixes = f"a lower learning rate ({lower}), gradient clipping (--set train.grad_clip=5)"
        fixes += " or skipped non-finite steps (--set train.nonfinite=skip)"
        if self.checkpoint is None or self.checkpoint_step is None:
            return f"no checkpoint was written yet. Start again with {fixes}"
        return (
            f"the last good checkpoint is {self.checkpoint} (step {self.checkpoint_step}). "
            f"Continue it with --resume and {fixes}"
        )

    def check_checkpoint(self, state: dict[str, Any], step: int) -> None:
        """Refuses to write a checkpoint that holds a non-finite value.

        Raises:
            NonFiniteLossError: naming the parts that are not finite.
        """
        bad = [
            key
            for key in ("algorithm", "ema", "optimizer", "callbacks")
            if not all_finite(floating_tensors(state[key]))
        ]
        if bad:
            raise NonFiniteLossError(
                f"the checkpoint of step {step} was not written: its {', '.join(bad)} state "
                f"holds non-finite values; {self._advice()}"
            )
