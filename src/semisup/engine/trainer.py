"""The training loop: one plain, linear `fit()` from batch to checkpoint."""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from semisup import distributed
from semisup.algorithms.base import Algorithm
from semisup.augment.views import ViewMaker
from semisup.data.sampler import EpochSampler
from semisup.data.ssl import SSLData
from semisup.engine.checkpoint import save_checkpoint
from semisup.engine.meter import ScalarMeter
from semisup.engine.metrics import classification_metrics, median_last, predict_logits
from semisup.engine.optim import OptimSettings, build_optimizer, decay_kernels, learning_rate
from semisup.engine.tensorboard import MetricLogger
from semisup.errors import UserError
from semisup.models.inputs import to_model_input
from semisup.modules.ema import ModelEMA

log = logging.getLogger("semisup")


# The training pool moves to the GPU when it takes at most this share of the GPU's free memory.
POOL_GPU_SHARE = 0.5


def place_pool(images: Tensor, device: torch.device) -> Tensor:
    """Where the trainer keeps the training pool and gathers each batch.

    On a CUDA device, the pool moves there when it fits in POOL_GPU_SHARE of the free memory;
    a larger one (e.g. a folder data set memory-mapped from its cache) stays on the host, and
    each batch is gathered there and copied over. On a CPU the pool is never copied: a
    memory-mapped pool is read batch by batch from the page cache.
    """
    if device.type != "cuda":
        return images
    free, _ = torch.cuda.mem_get_info(device)
    if images.nbytes <= free * POOL_GPU_SHARE:
        return images.to(device)
    log.info(
        "keeping the %.1f GB training pool in host memory (the GPU has %.1f GB free); each batch "
        "is copied to the GPU",
        images.nbytes / 1e9,
        free / 1e9,
    )
    return images


@dataclass(frozen=True)
class EngineSettings:
    """What the loop needs from the `train.*` config, resolved (no "auto" left)."""

    steps: int
    batch_size: int
    eval_every: int
    eval_batch_size: int
    ema_decay: float
    ema_warmup: bool
    seed: int
    device: torch.device
    autocast_dtype: torch.dtype | None  # None: full precision
    channels_last: bool
    grad_clip: float | None
    nonfinite: str
    keep_checkpoints: int
    progress: bool


@dataclass
class RawBatch:
    """Indices and uint8 images of one step, before views are made."""

    x_idx: Tensor  # positions in the labeled set
    x: Tensor
    y: Tensor
    u_idx: Tensor | None  # positions in the unlabeled set
    u: Tensor | None
    u_y: Tensor | None


class Callback(Protocol):
    """Runs after every optimizer step; its state is checkpointed under its `name`."""

    name: str

    def on_step_end(self, trainer: Trainer, raw: RawBatch, step: int) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class NonFiniteLossError(UserError):
    """The loss became NaN or infinite; training stopped with the last good checkpoint kept."""


class Trainer:
    """Trains an `Algorithm` on an `SSLData` split; evaluates the EMA model; checkpoints.

    Args:
        algorithm: the algorithm (owns the model).
        data: the split.
        engine: resolved engine settings.
        optim: resolved optimizer settings.
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
        engine: EngineSettings,
        optim: OptimSettings,
        views: ViewMaker,
        run_dir: Path | None,
        config: dict[str, Any],
        callbacks: tuple[Callback, ...] = (),
        loggers: tuple[MetricLogger, ...] = (),
    ) -> None:
        self.engine, self.optim_settings, self.views = engine, optim, views
        self.data, self.run_dir, self.config, self.callbacks = data, run_dir, config, callbacks
        self.loggers = loggers
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        self.is_main = self.rank == 0
        if engine.batch_size % self.world_size:
            raise UserError(
                f"train.batch_size={engine.batch_size} must be divisible by the number of "
                f"processes ({self.world_size}): each rank takes an equal share of the batch"
            )
        if run_dir is not None and self.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
        self.device = engine.device
        self.algorithm = algorithm.to(self.device)
        if engine.channels_last:
            self.algorithm.to(memory_format=torch.channels_last)
        # DDP wraps the whole algorithm: its forward holds every model call of a step, and DDP
        # averages the gradients of the per-rank losses (each rank has an equal sub-batch).
        self.forward_module: torch.nn.Module = self.algorithm
        if self.world_size > 1:
            self.forward_module = DistributedDataParallel(
                self.algorithm,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=self.algorithm.ddp_find_unused_parameters,
            )
        self.ema = ModelEMA(self.algorithm.model, engine.ema_decay, engine.ema_warmup)
        self.optimizer = build_optimizer(self.algorithm, optim)
        use_scaler = engine.autocast_dtype == torch.float16
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        self.images = place_pool(data.images, self.device)
        self.targets = data.targets.to(self.device)
        self.labeled_sampler = EpochSampler(torch.arange(len(data.labeled_idx)), engine.seed + 1)
        num_unlabeled = len(data.unlabeled_idx) * algorithm.unlabeled_copies()
        self.unlabeled_sampler = EpochSampler(torch.arange(num_unlabeled), engine.seed + 2)
        # Each rank augments its own share of the batch with its own stream of random numbers.
        self.augment_generator = torch.Generator(self.device).manual_seed(
            engine.seed + 3 + 1000 * self.rank
        )
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.confusion_matrix: list[list[int]] | None = None  # of the last evaluation (EMA)
        self.meter = ScalarMeter()
        self.wall_seconds = 0.0

    # ============ data ============
    def next_raw_batch(self) -> RawBatch:
        """Draws the next labeled and unlabeled index batches and gathers their images.

        Every rank draws the same global batch (identical samplers) and keeps its own
        contiguous share, so ranks never see duplicated samples within a step.
        """
        x_idx = self._my_share(self.labeled_sampler.next(self.engine.batch_size))
        x_pool = self.data.labeled_idx[x_idx]
        u_idx = u_pool = u = None
        if self.algorithm.mu > 0:
            u_idx = self.unlabeled_sampler.next(self.algorithm.mu * self.engine.batch_size)
            u_idx = self._my_share(u_idx)
            u_pool = self.data.unlabeled_idx[u_idx % len(self.data.unlabeled_idx)]
            u_idx = u_idx.to(self.device)
            u = self.algorithm.extend_unlabeled(self._gather(u_pool), u_idx)
        return RawBatch(
            x_idx=x_idx.to(self.device),
            x=self._gather(x_pool),
            y=self.targets[x_pool.to(self.device)],
            u_idx=u_idx,
            u=u,
            u_y=None if u_pool is None else self.targets[u_pool.to(self.device)],
        )

    def _my_share(self, global_idx: Tensor) -> Tensor:
        return global_idx.view(self.world_size, -1)[self.rank]

    def _gather(self, pool_idx: Tensor) -> Tensor:
        if self.images.device == self.device:
            return self.images[pool_idx.to(self.device)]
        return self.images[pool_idx].pin_memory().to(self.device, non_blocking=True)

    def make_batch(self, raw: RawBatch) -> dict[str, Tensor]:
        """The algorithm's views, scaled to the model's input range, plus labels and indices."""
        views = self.views(self.algorithm.views, raw.x, raw.u, self.augment_generator)
        batch = {k: to_model_input(v, self.engine.channels_last) for k, v in views.items()}
        batch.update(y=raw.y, x_idx=raw.x_idx)
        if raw.u is not None:
            batch.update(u_idx=raw.u_idx, u_y=raw.u_y)
        return batch

    # ============ one step ============
    def train_step(self) -> dict[str, Tensor] | None:
        """One optimizer step; returns the algorithm's outputs, or None if it was skipped."""
        raw = self.next_raw_batch()
        batch = self.make_batch(raw)
        lr = learning_rate(self.optim_settings, self.step, self.engine.steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

        self.algorithm.train()
        dtype = self.engine.autocast_dtype
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            out = self.forward_module(batch, self.step)
        loss = out["loss"]
        if not distributed.all_true(bool(torch.isfinite(loss))):
            return self._handle_nonfinite(out)

        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.engine.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.algorithm.parameters(), self.engine.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        decay_kernels(self.optimizer, self.optim_settings, lr)

        self.algorithm.on_step_end(batch, out, self.step)
        self.ema.update(self.algorithm.model, self.step)
        for callback in self.callbacks:
            callback.on_step_end(self, raw, self.step)
        out["lr"] = torch.tensor(lr)
        return out

    def _handle_nonfinite(self, out: dict[str, Tensor]) -> None:
        parts = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in out.items() if v.numel() == 1)
        if self.engine.nonfinite == "skip":
            log.warning("skipped step %d: non-finite loss (%s)", self.step + 1, parts)
            self.meter.count_skipped()
            return None
        where = (
            f"the last good checkpoint is {self.run_dir / 'checkpoint.pt'} (step "
            f"{self.history[-1]['step']}); resume from it with --resume"
            if self.run_dir and self.history
            else "no checkpoint was written yet"
        )
        raise NonFiniteLossError(
            f"the loss became non-finite at step {self.step + 1} ({parts}); training stopped and "
            f"{where}. Lower the learning rate (--set optim.lr=...), enable gradient clipping "
            "(--set train.grad_clip=5), or skip such steps (--set train.nonfinite=skip)"
        )

    # ============ the loop ============
    def fit(self) -> dict[str, Any]:
        """Trains until `engine.steps`, evaluating and checkpointing every `eval_every` steps."""
        bar = tqdm(
            total=self.engine.steps,
            initial=self.step,
            # None: shown only on a terminal; only rank 0 shows one.
            disable=None if self.engine.progress and self.is_main else True,
            dynamic_ncols=True,
            unit="step",
        )
        started = time.perf_counter() - self.wall_seconds
        try:
            while self.step < self.engine.steps:
                out = self.train_step()
                self.step += 1
                if out is not None:
                    self.meter.add(out)
                bar.update(1)
                if self.step % 25 == 0 or self.step == self.engine.steps:
                    bar.set_postfix(self.meter.postfix(self.history), refresh=False)
                if self.step % self.engine.eval_every == 0 or self.step == self.engine.steps:
                    self.wall_seconds = time.perf_counter() - started
                    record = self.evaluate_and_log()
                    if self.is_main:
                        bar.write(_eval_line(record))
                    self.save()
        except KeyboardInterrupt:
            bar.close()
            raise
        bar.close()
        self.wall_seconds = time.perf_counter() - started
        return self.summary()

    # ============ evaluation ============
    def evaluate(self, model: torch.nn.Module) -> dict[str, Any]:
        """Accuracy, balanced and per-class accuracy of `model` on the test set.

        With an algorithm logit adjustment, also the adjusted metrics under keys ending "_la".
        """
        assert self.data.test_images is not None and self.data.test_targets is not None
        # Each rank predicts every world_size-th test image; the shards are then reassembled.
        shard = predict_logits(
            model,
            self.data.test_images[self.rank :: self.world_size],
            self.engine.eval_batch_size,
            self.device,
            self.engine.channels_last,
            self.engine.autocast_dtype,
        )
        logits = torch.empty(len(self.data.test_images), shard.shape[1])
        for r, part in enumerate(distributed.all_gather_objects(shard)):
            logits[r :: self.world_size] = part
        targets, num_classes = self.data.test_targets, self.data.num_classes
        metrics = classification_metrics(logits.argmax(dim=1), targets, num_classes)
        adjustment = self.algorithm.logit_adjustment()
        if adjustment is not None:
            adjusted = logits - adjustment.float().cpu()
            la = classification_metrics(adjusted.argmax(dim=1), targets, num_classes)
            metrics.update(accuracy_la=la["accuracy"], balanced_accuracy_la=la["balanced_accuracy"])
        return metrics

    def evaluate_and_log(self) -> dict[str, Any]:
        """Evaluates EMA and raw models, appends to the history and to metrics.jsonl."""
        record: dict[str, Any] = {"step": self.step, **self._mean_over_ranks(self.meter.means())}
        distributed.broadcast_buffers(self.algorithm)
        distributed.broadcast_buffers(self.ema.module)
        if self.data.test_images is not None:
            ema = self.evaluate(self.ema.module)
            raw = self.evaluate(self.algorithm.model)
            self.confusion_matrix = ema["confusion_matrix"]
            record.update(
                test_accuracy=ema["accuracy"],
                test_balanced_accuracy=ema["balanced_accuracy"],
                test_accuracy_raw=raw["accuracy"],
                per_class_accuracy=ema["per_class_accuracy"],
            )
            if "accuracy_la" in ema:
                record.update(
                    test_accuracy_la=ema["accuracy_la"],
                    test_balanced_accuracy_la=ema["balanced_accuracy_la"],
                )
        record["wall_seconds"] = round(self.wall_seconds, 2)
        self.meter.reset()
        self.history.append(record)
        if self.run_dir is not None and self.is_main:
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
        if self.is_main:
            for logger in self.loggers:
                logger.log(record)
        return record

    def _mean_over_ranks(self, means: dict[str, Any]) -> dict[str, Any]:
        """Averages each rank's training scalars (each saw a share of the batch)."""
        if self.world_size == 1:
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

    def summary(self) -> dict[str, Any]:
        """The end-of-run facts written to summary.json."""
        accuracies = [r["test_accuracy"] for r in self.history if "test_accuracy" in r]
        last = self.history[-1] if self.history else {}
        return {
            "steps": self.step,
            "test_accuracy": last.get("test_accuracy"),
            "test_balanced_accuracy": last.get("test_balanced_accuracy"),
            "test_accuracy_raw": last.get("test_accuracy_raw"),
            "test_accuracy_la": last.get("test_accuracy_la"),
            "median_last20_accuracy": median_last(accuracies) if accuracies else None,
            "evaluations": len(self.history),
            "skipped_steps": sum(r.get("skipped_steps", 0) for r in self.history),
            "wall_seconds": round(self.wall_seconds, 2),
            "class_names": list(self.data.class_names),
            "image_shape": list(self.data.images.shape[1:]),  # (C, H, W) the model takes
            "labeled_class_counts": list(self.data.labeled_class_counts()),
            "confusion_matrix": self.confusion_matrix,
        }

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
            "samplers": {
                "labeled": self.labeled_sampler.state_dict(),
                "unlabeled": self.unlabeled_sampler.state_dict(),
            },
            "callbacks": {c.name: c.state_dict() for c in self.callbacks},
            "rng": distributed.all_gather_objects(self._rng_state()),  # one entry per rank
            "history": self.history,
            "wall_seconds": self.wall_seconds,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores a `state_dict()`; the next step continues exactly where it stopped."""
        self.step = int(state["step"])
        self.algorithm.load_state_dict(state["algorithm"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.labeled_sampler.load_state_dict(state["samplers"]["labeled"])
        self.unlabeled_sampler.load_state_dict(state["samplers"]["unlabeled"])
        for callback in self.callbacks:
            callback.load_state_dict(state["callbacks"][callback.name])
        if len(state["rng"]) != self.world_size:
            raise UserError(
                f"the checkpoint was written by {len(state['rng'])} process(es) and this run has "
                f"{self.world_size}; resume with --nproc_per_node={len(state['rng'])} to continue "
                "exactly"
            )
        rng = state["rng"][self.rank]
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.augment_generator.set_state(rng["augment"])
        self.history = list(state["history"])
        self.wall_seconds = float(state["wall_seconds"])

    def _rng_state(self) -> dict[str, Any]:
        return {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "augment": self.augment_generator.get_state(),
        }

    def save(self) -> None:
        """Writes checkpoint.pt atomically (and keeps `keep_checkpoints` numbered copies).

        Every rank takes part (its random number generator states are gathered); rank 0 writes.
        """
        if self.run_dir is None:
            return
        state = self.state_dict()
        if not self.is_main:
            return
        save_checkpoint(state, self.run_dir / "checkpoint.pt")
        if self.engine.keep_checkpoints > 1:
            save_checkpoint(state, self.run_dir / f"checkpoint-{self.step:08d}.pt")
            numbered = sorted(self.run_dir.glob("checkpoint-*.pt"))
            for old in numbered[: -(self.engine.keep_checkpoints - 1)]:
                old.unlink()


def _eval_line(record: dict[str, Any]) -> str:
    parts = [f"step {record['step']}"]
    if "test_accuracy" in record:
        parts.append(f"test acc {100 * record['test_accuracy']:.2f}% (EMA)")
        parts.append(f"{100 * record['test_accuracy_raw']:.2f}% (raw)")
    for key in ("loss", "mask_rate", "pseudo_label_accuracy"):
        value = record.get(key)
        if value is not None:
            parts.append(f"{key} {value:.3f}")
    return " | ".join(parts)
