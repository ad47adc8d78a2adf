"""The training loop: one plain, linear `fit()` from batch to checkpoint."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from semisup import distributed
from semisup.algorithms.base import Algorithm
from semisup.augment.views import ViewMaker
from semisup.config import OptimConfig, TrainConfig
from semisup.data.ssl import SSLData
from semisup.engine import evaluation
from semisup.engine.batches import BatchSource
from semisup.engine.budget import RunClock, parse_duration
from semisup.engine.callbacks import Callback
from semisup.engine.checkpoint import restore_rank_rng, rng_state, save_checkpoints
from semisup.engine.guard import StepGuard, nonfinite_parts
from semisup.engine.interrupts import DeferredInterrupt, TrainingInterrupted, interrupted_message
from semisup.engine.meter import ScalarMeter
from semisup.engine.optim import build_optimizer, decay_kernels, learning_rate, load_optimizer
from semisup.engine.progress import Progress
from semisup.engine.runtime import Runtime
from semisup.engine.tensorboard import MetricLogger
from semisup.errors import UserError
from semisup.files import write_jsonl
from semisup.models.inputs import input_normalization
from semisup.modules.ema import ModelEMA

log = logging.getLogger("semisup")


class Trainer:
    """Trains an `Algorithm` on an `SSLData` split; evaluates the EMA model; checkpoints.

    Args:
        algorithm: the algorithm (owns the model).
        data: the split.
        train: the `train.*` settings (resolved: no "auto" left in what the loop reads).
        optim: the `optim.*` settings, resolved against the algorithm's defaults.
        runtime: device, precision and memory format.
        views: builds the algorithm's views from raw batches.
        run_dir: where checkpoint.pt and metrics.jsonl go (None: nothing is written).
        config: the resolved config, stored in checkpoints.
        callbacks: run after each step (e.g. CTAugment feedback).
        loggers: receive each evaluation record on the main process (e.g. TensorBoard).
    """

    def __init__(
        self,
        algorithm: Algorithm,
        data: SSLData,
        train: TrainConfig,
        optim: OptimConfig,
        runtime: Runtime,
        views: ViewMaker,
        run_dir: Path | None,
        config: dict[str, Any],
        callbacks: tuple[Callback, ...] = (),
        loggers: tuple[MetricLogger, ...] = (),
    ) -> None:
        self.settings, self.optim_settings, self.runtime = train, optim, runtime
        self.data, self.run_dir, self.config, self.callbacks = data, run_dir, config, callbacks
        self.loggers = loggers
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        self.is_main = self.rank == 0
        if train.batch_size % self.world_size:
            raise UserError(
                f"train.batch_size={train.batch_size} must be divisible by the number of "
                f"processes ({self.world_size}): each rank takes an equal share of the batch"
            )
        if run_dir is not None and self.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
        self.device = runtime.device
        self.algorithm = algorithm.to(self.device)
        if runtime.channels_last:
            self.algorithm.to(memory_format=torch.channels_last)
        # DDP wraps the whole algorithm: its forward holds every model call of a step, and DDP
        # averages the gradients of the per-rank losses (each rank has an equal sub-batch).
        self.forward_module = distributed.wrap(
            self.algorithm, self.device, self.algorithm.ddp_find_unused_parameters
        )
        self.ema = ModelEMA(
            self.algorithm.model, train.ema_decay, train.ema_warmup, train.ema_buffers == "average"
        )
        self.optimizer = build_optimizer(self.algorithm, optim, self.algorithm.model)
        use_scaler = runtime.autocast_dtype == torch.float16
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        self.batches = BatchSource(
            data,
            views,
            runtime,
            train.batch_size,
            algorithm.mu,
            algorithm.unlabeled_copies,
            train.seed,
            self.rank,
            self.world_size,
            input_normalization(self.algorithm.model),
        )
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.confusion_matrix: list[list[int]] | None = None  # of the last evaluation (EMA)
        self.meter = ScalarMeter()
        self.wall_seconds = 0.0
        self.clock = RunClock(None, parse_duration(train.checkpoint_every))
        self.stopped_early = False  # the clock's deadline ended training before train.steps
        checkpoint = run_dir / "checkpoint.pt" if run_dir is not None else None
        self.guard = StepGuard(train.nonfinite, checkpoint, float(optim.lr or 0.0))

    # ============ one step ============
    def train_step(self) -> dict[str, Tensor] | None:
        """One optimizer step; returns the algorithm's outputs, or None if it was skipped."""
        raw = self.batches.next_raw()
        batch = self.batches.make_batch(raw, self.algorithm.views)
        lr = learning_rate(self.optim_settings, self.step, self.settings.steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]

        self.guard.begin(self)
        self.algorithm.train()
        with self.runtime.autocast():
            out = self.forward_module(batch, self.step)
        loss, bad = out["loss"], self.guard.nonfinite_outputs(out)
        if bad:
            return self.guard.reject(self, self.step, bad, out)

        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.settings.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.algorithm.parameters(), self.settings.grad_clip)
        if not self.guard.gradients_finite(self):
            return self.guard.reject(self, self.step, ["gradients"], out)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        decay_kernels(self.optimizer, self.optim_settings, lr)

        self.algorithm.on_step_end(batch, out, self.step)
        self.ema.update(self.algorithm.model, self.step)
        for callback in self.callbacks:
            callback.on_step_end(self, raw, self.step)
        bad = nonfinite_parts(self)
        if bad:
            return self.guard.reject(self, self.step, bad, out)
        out["lr"] = torch.tensor(lr)
        return out

    # ============ the loop ============
    def fit(self) -> dict[str, Any]:
        """Trains until `train.steps` (or the clock's deadline), evaluating every `eval_every`.

        A checkpoint follows every evaluation, and one is written whenever
        `train.checkpoint_every` of wall-clock time passed without one.
        """
        s = self.settings
        progress = Progress(s.steps, self.step, self.is_main, s.progress, self.clock.deadline)
        started = time.perf_counter() - self.wall_seconds
        interrupt = DeferredInterrupt()
        try:
            while self.step < self.settings.steps:
                out = self.train_step()
                self.step += 1
                if out is not None:
                    self.meter.add(out)
                progress.step(self.step, self.meter, self.history)
                # Any rank's clock decides for all (every rank takes part in a checkpoint).
                self.stopped_early = distributed.any_true(self.clock.expired())
                last = self.stopped_early or self.step == self.settings.steps
                if last or self.step % self.settings.eval_every == 0:
                    self.wall_seconds = time.perf_counter() - started
                    progress.evaluated(self.evaluate_and_log())
                    self.save()
                elif distributed.any_true(self.clock.checkpoint_due()):
                    self.wall_seconds = time.perf_counter() - started
                    self.save()
                if self.stopped_early:
                    break
                if interrupt.requested():
                    self.stop_at_interrupt(interrupt.received, started)
        finally:
            interrupt.restore()
            progress.close()
        self.wall_seconds = time.perf_counter() - started
        return self.summary()

    def stop_at_interrupt(self, signal_name: str | None, started: float) -> None:
        """Checkpoints the whole, checked state after a step, then raises TrainingInterrupted."""
        if self.run_dir is not None and self.guard.checkpoint_step != self.step:
            self.wall_seconds = time.perf_counter() - started
            self.save()
        where = str(self.guard.checkpoint) if self.guard.checkpoint_step is not None else None
        raise TrainingInterrupted(interrupted_message(signal_name, self.step, where))

    # ============ evaluation ============
    def evaluate(self, model: torch.nn.Module) -> dict[str, Any]:
        """Test-set metrics of `model` (with the algorithm's logit adjustment, if any)."""
        adjustment = self.algorithm.logit_adjustment()
        return evaluation.evaluate(
            model, self.data, self.runtime, self.settings.eval_batch_size, adjustment
        )

    def evaluate_and_log(self) -> dict[str, Any]:
        """Evaluates EMA and raw models and appends to the history (metrics.jsonl: see `save`)."""
        record: dict[str, Any] = {
            "step": self.step,
            **evaluation.mean_over_ranks(self.meter.means()),
        }
        distributed.broadcast_buffers(self.algorithm)
        distributed.broadcast_buffers(self.ema.module)
        if self.data.test_images is not None:
            ema = self.evaluate(self.ema.module)
            self.confusion_matrix = ema["confusion_matrix"]
            record.update(evaluation.accuracy_record(ema, self.evaluate(self.algorithm.model)))
        record["wall_seconds"] = round(self.wall_seconds, 2)
        self.meter.reset()
        self.history.append(record)
        if self.is_main:
            for logger in self.loggers:
                logger.log(record)
        return record

    def summary(self) -> dict[str, Any]:
        """The end-of-run facts written to summary.json."""
        summary = evaluation.run_summary(
            self.history, self.step, self.wall_seconds, self.data, self.confusion_matrix
        )
        return {**summary, "stopped_at_deadline": self.stopped_early}

    # ============ checkpoints ============
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-identically.

        Weights, EMA, optimizer, scaler, data position, callback (augmenter) state and every
        random number generator.
        """
        return {
            "step": self.step,
            "config": self.config,
            "algorithm": self.algorithm.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "samplers": self.batches.state_dict(),
            "callbacks": {c.name: c.state_dict() for c in self.callbacks},
            # one entry per rank
            "rng": distributed.all_gather_objects(rng_state(self.batches.generator)),
            "history": self.history,
            "meter": self.meter.state_dict(),
            "wall_seconds": self.wall_seconds,
            "class_names": list(self.data.class_names),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores a `state_dict()`; the next step continues exactly where it stopped."""
        self.step = int(state["step"])
        self.algorithm.load_state_dict(state["algorithm"])
        self.ema.load_state_dict(state["ema"])
        load_optimizer(self.optimizer, state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.batches.load_state_dict(state["samplers"])
        for callback in self.callbacks:
            callback.load_state_dict(state["callbacks"][callback.name])
        restore_rank_rng(state["rng"], self.rank, self.world_size, self.batches.generator)
        self.history = list(state["history"])
        if "meter" in state:  # (checkpoints of earlier versions have none)
            self.meter.load_state_dict(state["meter"])
        self.wall_seconds = float(state["wall_seconds"])
        self.guard.checkpoint_step = self.step

    def save(self) -> None:
        """Writes checkpoint.pt, then metrics.jsonl (its history), each atomically.

        Keeps `keep_checkpoints` numbered copies. A state with a non-finite value is never
        written. Every rank takes part (its random number generator states are gathered); rank 0
        writes.
        """
        if self.run_dir is None:
            return
        state = self.state_dict()
        if self.is_main:
            self.guard.check_checkpoint(state, self.step)
            save_checkpoints(state, self.run_dir, self.step, self.settings.keep_checkpoints)
            self.clock.checkpointed()
            write_jsonl(self.run_dir / "metrics.jsonl", self.history)
        self.guard.checkpoint_step = self.step
