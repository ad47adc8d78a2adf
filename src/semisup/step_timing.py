"""How long this machine takes for a run's steps and evaluations, measured for planning.

`semisup.planning` decides with these measurements: the model by a timed forward and backward
pass, the step count and evaluation cadence by a few real training steps and a timed
evaluation (`time_schedule`), for the algorithm and for a supervised phase alike.
"""

from __future__ import annotations

import copy
import io
import time
from dataclasses import dataclass

import torch

from semisup.algorithms import ALGORITHMS, TaskInfo
from semisup.config import PAPER_STEPS, Config, fill_paper_defaults, resolve_kwargs
from semisup.data.ssl import SSLData
from semisup.engine.budget import Schedule, fit_to_budget
from semisup.engine.metrics import predict_logits
from semisup.engine.runtime import Runtime
from semisup.engine.trainer import Trainer
from semisup.experiment import build_run
from semisup.models import build_model

PLAN_SHARE = 0.93  # share of the remaining budget the plan fills (the rest absorbs jitter)


def images_per_step(cfg: Config, data: SSLData) -> int:
    """Images one training step passes through the model: labeled views + μ × unlabeled views."""
    algorithm_cls = ALGORITHMS.get(cfg.algorithm["name"])
    resolved = resolve_kwargs(algorithm_cls, cfg.algorithm, "algorithm", ("model", "info"))
    kwargs = {k: v for k, v in resolved.items() if k != "name"}
    info = TaskInfo(
        num_classes=data.num_classes,
        num_labeled=len(data.labeled_idx),
        num_unlabeled=len(data.unlabeled_idx),
        labeled_class_counts=data.labeled_class_counts(),
        total_steps=PAPER_STEPS,
    )
    probe = build_model("cnn", data.num_classes, data.images.shape[1])
    algorithm = algorithm_cls(probe, info, **kwargs)
    labeled = sum(1 for key in algorithm.views if key.startswith("x"))
    unlabeled = sum(1 for key in algorithm.views if key.startswith("u"))
    batch = cfg.train.batch_size or 64
    return batch * labeled + batch * algorithm.mu * unlabeled


def time_forward_backward(
    model: torch.nn.Module, images: torch.Tensor, runtime: Runtime, repeats: int = 1
) -> float:
    """Seconds of one training-mode forward and backward pass over `images` (after a warm-up)."""
    model = model.to(runtime.device).train()
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        with runtime.autocast():
            loss = model(images).float().logsumexp(dim=1).mean()
        loss.backward()
        if runtime.device.type == "cuda":
            torch.cuda.synchronize(runtime.device)
        times.append(time.perf_counter() - start)
    return min(times[1:])


@dataclass
class TimedSchedule:
    """A schedule fitted to a budget, with the step and evaluation times it was fitted to."""

    schedule: Schedule
    step_seconds: float
    eval_seconds: float


def time_schedule(
    cfg: Config, data: SSLData, seconds: float, evaluations: int = 20, min_evaluations: int = 10
) -> TimedSchedule:
    """Times training steps and an evaluation of `cfg`'s run; fits `seconds` with them.

    `evaluations` and `min_evaluations`: as in `fit_to_budget`.
    """
    trial = copy.deepcopy(cfg)
    fill_paper_defaults(trial.train)
    trial.train.eval_every = trial.train.steps
    trial.train.tensorboard, trial.train.progress = False, False
    trainer = build_run(trial, data, None)
    trainer.train_step()  # warm-up: the first step allocates
    timed: list[float] = []
    while not timed_enough(timed, seconds):
        start = time.perf_counter()
        trainer.train_step()
        timed.append(time.perf_counter() - start)
    step_seconds = sorted(timed)[len(timed) // 2]
    eval_seconds = time_evaluation(trainer, data)
    left = seconds - 2 * sum(timed)  # the time spent measuring is spent
    schedule = fit_to_budget(
        PLAN_SHARE * left, step_seconds, eval_seconds, evaluations, min_evaluations
    )
    return TimedSchedule(schedule, step_seconds, eval_seconds)


def timed_enough(timed: list[float], seconds: float) -> bool:
    """Whether the timed steps give a steady median: 1 % of the budget and 4 steps, or 50 steps.

    Slow steps stop at 3 % of the budget (a WRN step on a CPU can take 16 s). Fast steps need
    many samples: a median of 4 steps of 0.07 s came out 1.6 times the run's later steps.
    """
    spent = sum(timed)
    if timed and spent >= 0.03 * seconds:
        return True
    return len(timed) >= 50 or (len(timed) >= 4 and spent >= 0.01 * seconds)


def time_evaluation(trainer: Trainer, data: SSLData) -> float:
    """Seconds of one evaluation: EMA and raw model over the test set, and a checkpoint."""
    start = time.perf_counter()
    buffer = io.BytesIO()
    torch.save(trainer.state_dict(), buffer)
    seconds = time.perf_counter() - start
    if data.test_images is None:
        return seconds
    sample = data.test_images[: min(len(data.test_images), 512)]
    start = time.perf_counter()
    r = trainer.runtime
    predict_logits(
        trainer.ema.module,
        sample,
        trainer.settings.eval_batch_size,
        r.device,
        r.channels_last,
        r.autocast_dtype,
    )
    per_image = (time.perf_counter() - start) / len(sample)
    return seconds + 2 * per_image * len(data.test_images)
