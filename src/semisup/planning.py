"""Decides what a run's config leaves open, by the papers' settings or by measurement here.

`defaults: paper` (any run from a `--config` file) gives the None keys of `train.*` the papers'
values. `defaults: practical` (a run on a user's data or a built-in data set without a config)
spends a wall-clock budget as well as this machine allows:

1. the budget: `train.time_budget`, else (no `train.steps` either) the device's default;
2. the batch: 64 labeled images per step on a GPU, 16 on a CPU;
3. the model (`model.name: auto`): of the candidates for the image size, the largest whose
   measured forward and backward pass leaves time for `MIN_STEPS` steps;
4. the precision (`train.precision: auto`): on a CPU with native bf16, bf16 autocast when it
   measures faster than fp32 (CUDA: bf16 where supported);
5. the step count: a few real training steps and a test-set pass are timed, and the budget
   becomes steps and about 20 evaluations (`engine.budget.fit_to_budget`);
6. what short runs need: EMA warm-up, BatchNorm momentum 0.1 below 2^17 steps, and the
   algorithm's step-counted schedules (ramp-ups, warm-ups) scaled from 2^20 steps to the run;
7. a supervised phase first (`semisup.supervised_phase`): a semi-supervised algorithm on a
   budget whose labeled images get SimCLR's view spends `train.supervised_first` of it (0.5
   unless set) training on the labeled images alone, its steps timed and sized like the
   algorithm's; the model is chosen for the rest.

Every choice is written into the config (so config.yaml holds it and `--resume` repeats the run
exactly) and explained in one log line.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import logging
import math
import time
from dataclasses import dataclass

import torch

from semisup.algorithms import ALGORITHMS
from semisup.config import (
    PAPER_STEPS,
    Config,
    fill_paper_defaults,
    settle_defaults,
)
from semisup.data.ssl import SSLData
from semisup.engine.budget import format_duration, parse_duration
from semisup.engine.runtime import cpu_has_native_bf16, resolve_device, resolve_runtime
from semisup.models import MODELS, build_model, build_model_from_section, default_model_name
from semisup.step_timing import (
    PLAN_SHARE,
    images_per_step,
    time_forward_backward,
    time_schedule,
)
from semisup.supervised_phase import (
    PHASE_EVALUATIONS,
    PRACTICAL_SHARE,
    check_phase_settings,
    phase_config,
)

log = logging.getLogger("semisup")

DEFAULT_BUDGET = {"cuda": "1h", "cpu": "10m"}  # other devices: the CPU's
PRACTICAL_BATCH = {"cpu": 16}  # other devices: the papers' 64
MIN_STEPS = 2000  # a larger model is chosen only if it can train this many steps
SHORT_RUN = 2**17  # runs shorter than this get BatchNorm momentum 0.1
SHORT_RUN_BN_MOMENTUM = 0.1
BF16_GAIN = 1.15  # bf16 is chosen on a CPU only when it measures this much faster


def model_candidates(image_size: int) -> list[tuple[str, dict[str, int]]]:
    """Models for `model.name: auto`, smallest first: the small CNN, wider, then the papers'."""
    cnns: list[tuple[str, dict[str, int]]] = [("cnn", {}), ("cnn", {"width": 32})]
    paper = default_model_name(image_size)
    return cnns if paper == "cnn" else [*cnns, (paper, {})]


@dataclass
class Plan:
    """What `plan_run` decided beyond the config.

    Attributes:
        deadline: `time.monotonic()` at which training stops (None: no budget).
        notes: each choice and its reason, for the first log line.
    """

    deadline: float | None
    notes: list[str]


def plan_run(cfg: Config, data: SSLData, started: float) -> Plan:
    """Resolves `cfg`'s open keys in place (see the module docstring).

    Args:
        cfg: the run's config (`train.defaults` "auto" counts as "practical").
        data: the run's split.
        started: `time.monotonic()` when the command started (the budget counts from there).
    """
    t = cfg.train
    settle_defaults(cfg, paper_when_auto=False)
    practical = t.defaults == "practical"
    device = resolve_device(t.device)
    notes: list[str] = [f"{t.defaults} defaults", f"algorithm {cfg.algorithm['name']}"]
    budget = None
    if t.time_budget is not None:
        budget = parse_duration(t.time_budget)
        notes.append(f"budget {format_duration(budget)} (train.time_budget)")
    elif practical and t.steps is None:
        t.time_budget = DEFAULT_BUDGET.get(device.type, DEFAULT_BUDGET["cpu"])
        budget = parse_duration(t.time_budget)
        notes.append(f"budget {t.time_budget}, the default on {device.type} (set --time)")
    if practical and t.batch_size is None:
        t.batch_size = PRACTICAL_BATCH.get(device.type, 64)
        notes.append(f"labeled batch {t.batch_size} ({device.type})")
    budgeted = t.steps is None and budget is not None
    colour = data.images.shape[1] == 3
    share = supervised_share(cfg, practical, budgeted, colour, notes)
    if practical and cfg.model.get("name", "auto") == "auto" and not cfg.model.get("pretrained"):
        algorithm_budget = (1 - share) * (budget or _default_budget(device))
        notes.append(choose_model(cfg, data, device, algorithm_budget, started))
    if t.precision == "auto":
        notes.append(choose_precision(cfg, data, device))
    if practical:
        notes += step_settings(cfg, colour)
    if budget is not None and budgeted:
        left = budget - (time.monotonic() - started)
        notes.append(size_to_budget(cfg, data, (1 - share) * left))
        if share:  # sized last: it runs next, with its share of the time left then
            left = budget - (time.monotonic() - started)
            notes.append(size_supervised_phase(cfg, data, share * left))
    if practical:
        notes += short_run_settings(cfg)
    fill_paper_defaults(t)
    deadline = started + budget if budget is not None else None
    return Plan(deadline=deadline, notes=notes)


def supervised_share(
    cfg: Config, practical: bool, budgeted: bool, colour: bool, notes: list[str]
) -> float:
    """The share of the budget the supervised phase takes (0: none); checks its settings.

    Practical runs of a semi-supervised algorithm sized to a budget get `PRACTICAL_SHARE` when
    their labeled images get SimCLR's view (colour images, `step_settings`): with it the phase
    won or tied on every colour folder measured. With the weak view it lost: MNIST with 100
    labels, 10 minutes, 4.11 % error after a phase against 1.37 % for FlexMatch alone.
    """
    t = cfg.train
    semi_supervised = cfg.algorithm["name"] != "supervised"
    unset = t.supervised_first is None and t.supervised_steps is None
    simclr = (cfg.augment.labeled or ("simclr" if colour else "weak")) == "simclr"
    if practical and budgeted and semi_supervised and unset and simclr:
        t.supervised_first = PRACTICAL_SHARE
        notes.append(
            f"supervised training first for {PRACTICAL_SHARE:.0%} of the budget "
            "(train.supervised_first; 0 turns it off)"
        )
    check_phase_settings(cfg, budgeted)
    return float(t.supervised_first or 0.0) if budgeted else 0.0


def _default_budget(device: torch.device) -> float:
    return parse_duration(DEFAULT_BUDGET.get(device.type, DEFAULT_BUDGET["cpu"]))


def choose_model(
    cfg: Config, data: SSLData, device: torch.device, budget: float, started: float
) -> str:
    """Sets `model.name` (and options) to the largest candidate that fits the budget."""
    n, (c, h, w) = images_per_step(cfg, data), data.images.shape[1:]
    images = torch.randn(n, c, h, w, device=device)
    runtime = resolve_runtime(cfg.train, device)
    steps = cfg.train.steps or MIN_STEPS
    left = budget - (time.monotonic() - started)
    chosen, measured = "", []
    user = {k: v for k, v in cfg.model.items() if k != "name"}
    for name, options in model_candidates(h):
        model = build_model(name, data.num_classes, c, **options)
        seconds = time_forward_backward(model, images, runtime)
        label = name + "".join(f" {k}={v}" for k, v in options.items())
        measured.append(f"{label}: {seconds:.2f} s")
        if chosen and seconds * steps > PLAN_SHARE * left:
            break
        chosen = label
        cfg.model = {"name": name, **options, **user}
    return (
        f"model {chosen}, the largest whose forward+backward pass over {n} images "
        f"({'; '.join(measured)}) leaves time for {steps} steps"
    )


def choose_precision(cfg: Config, data: SSLData, device: torch.device) -> str:
    """Replaces `train.precision: auto`: bf16 on CUDA, on a CPU bf16 only if native and faster."""
    if device.type == "cuda":
        cfg.train.precision = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return f"precision {cfg.train.precision} (CUDA)"
    if not cpu_has_native_bf16():
        cfg.train.precision = "fp32"
        return "precision fp32 (this CPU has no native bf16)"
    name = cfg.model.get("name", "auto")
    name = default_model_name(data.images.shape[2]) if name == "auto" else name
    model = build_model_from_section(
        {**cfg.model, "name": name}, data.num_classes, data.images.shape[1]
    )
    images = torch.randn(min(images_per_step(cfg, data), 256), *data.images.shape[1:])
    timed = {}
    for precision in ("fp32", "bf16"):
        trial = dataclasses.replace(cfg.train, precision=precision)
        timed[precision] = time_forward_backward(model, images, resolve_runtime(trial, device), 2)
    gain = timed["fp32"] / timed["bf16"]
    cfg.train.precision = "bf16" if gain >= BF16_GAIN else "fp32"
    return f"precision {cfg.train.precision} (native bf16 measured {gain:.2f}x fp32's speed)"


def size_to_budget(cfg: Config, data: SSLData, seconds: float) -> str:
    """Sets `train.steps` and `train.eval_every` from timed training steps and evaluation."""
    timed = time_schedule(cfg, data, seconds)
    cfg.train.steps = timed.schedule.steps
    if cfg.train.eval_every is None:
        cfg.train.eval_every = timed.schedule.eval_every
    return (
        f"{timed.schedule.steps} steps ({timed.step_seconds:.3f} s each, measured) with an "
        f"evaluation every {cfg.train.eval_every} ({timed.eval_seconds:.1f} s each)"
    )


def size_supervised_phase(cfg: Config, data: SSLData, seconds: float) -> str:
    """Sets `train.supervised_steps` from timed steps of the supervised phase."""
    trial = copy.deepcopy(cfg)
    trial.train.supervised_steps = PAPER_STEPS  # any length: only the step time is measured
    phase = phase_config(trial)
    timed = time_schedule(phase, data, seconds, PHASE_EVALUATIONS, PHASE_EVALUATIONS)
    cfg.train.supervised_steps = timed.schedule.steps
    return (
        f"supervised phase {timed.schedule.steps} steps ({timed.step_seconds:.3f} s each, measured)"
    )


def step_settings(cfg: Config, colour: bool) -> list[str]:
    """What a practical step does differently: EMA warm-up and statistics, the labeled view.

    Settled before steps are timed: SimCLR's view of the labeled images costs a supervised
    step of the small CNN a third of its time (0.022 s timed without it, 0.031 s run with it).
    `colour`: the images have three channels; only then do the labeled images get SimCLR's
    view (its colour jitter is what helps; on grey MNIST its crops cost 0-2.5 points).
    """
    notes = []
    t = cfg.train
    if t.ema_warmup is None:
        t.ema_warmup = True
        notes.append("EMA warm-up on")
    if t.ema_buffers is None:
        t.ema_buffers = "average"
        notes.append("EMA averages the BatchNorm statistics")
    if cfg.augment.labeled is None:
        cfg.augment.labeled = "simclr" if colour else "weak"
        if colour:
            notes.append("labeled images get SimCLR's crop and colour jitter")
    return notes


def short_run_settings(cfg: Config) -> list[str]:
    """BatchNorm momentum and the algorithm's schedules for the run's length (once it is set)."""
    notes = []
    t = cfg.train
    steps = t.steps or PAPER_STEPS
    factory = MODELS.get(cfg.model["name"]) if cfg.model.get("name", "auto") != "auto" else None
    accepts_bn = factory is not None and "bn_momentum" in inspect.signature(factory).parameters
    if steps < SHORT_RUN and accepts_bn and "bn_momentum" not in cfg.model:
        cfg.model["bn_momentum"] = SHORT_RUN_BN_MOMENTUM
        notes.append(f"BatchNorm momentum {SHORT_RUN_BN_MOMENTUM} (a run under 2^17 steps)")
    if t.scale_schedules is None:
        t.scale_schedules = True
    if t.scale_schedules:
        scaled = scale_schedules(cfg, steps)
        if scaled:
            notes.append(f"schedules scaled to {steps} steps ({scaled})")
    if t.eval_every is None:
        t.eval_every = max(1, steps // 20)
    return notes


def scale_schedules(cfg: Config, steps: int) -> str:
    """Scales the algorithm's step-counted defaults (not those set by the user) to `steps`."""
    algorithm_cls = ALGORITHMS.get(cfg.algorithm["name"])
    parameters = inspect.signature(algorithm_cls.__init__).parameters
    scaled = []
    for name in algorithm_cls.step_hyperparameters:
        if name in cfg.algorithm:
            continue
        value = max(1, math.floor(parameters[name].default * steps / PAPER_STEPS + 0.5))
        cfg.algorithm[name] = value
        scaled.append(f"{name} {value}")
    return ", ".join(scaled)
