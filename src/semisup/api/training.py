"""`semisup.train`: train on images and labels from Python, with any algorithm and model.

The run is the one `semisup train` makes: the same Config (every key settable through
`config`), `experiment.build_run` and trainer, and, with `out_dir`, the same run directory
(config.yaml, checkpoint.pt, metrics.jsonl, summary.json) that `semisup.load`, `semisup predict`,
`semisup export` and `semisup report` read. Only the data differ: `data.name` is "in_memory" and
the images come from the caller (see `api.data` and `api.images`).
"""

from __future__ import annotations

import contextlib
import io
import random
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from semisup.api.data import (
    LabeledImages,
    build_split,
    check_labels,
    class_names_for,
    read_pairs,
    read_test_set,
)
from semisup.api.images import prepare_images
from semisup.config import Config, build_config, flatten
from semisup.data.ssl import SSLData
from semisup.engine.trainer import Trainer
from semisup.errors import UserError
from semisup.experiment import build_run
from semisup.files import write_json, write_yaml
from semisup.inference import TrainedModel
from semisup.models.inputs import to_model_input
from semisup.planning import plan_run
from semisup.run_files import PHASE_DIR, summary_record
from semisup.supervised_phase import PhaseResult, phase_seconds, run_supervised_phase

IN_MEMORY = "in_memory"  # the `data.name` of runs on data given from Python
# What a run directory holds; `replace=True` deletes these before a new run is written there.
RUN_FILES = ("config.yaml", "checkpoint.pt", "metrics.jsonl", "summary.json", "report.html")


@dataclass(frozen=True)
class TrainResult:
    """A finished run.

    Attributes:
        model: the EMA model, ready to classify images (`model.predict(images)`).
        summary: the run's summary.json content (final test accuracy if a test set was given,
            class names, image shape, steps, wall time, ...).
        history: one record per evaluation, as the lines of metrics.jsonl.
        run_dir: the run directory, or None when nothing was written.
    """

    model: TrainedModel
    summary: dict[str, Any]
    history: list[dict[str, Any]]
    run_dir: Path | None


def train(
    data: LabeledImages,
    *,
    algorithm: str = "auto",
    model: str | nn.Module = "auto",
    steps: int | None = None,
    time: str | float | None = None,
    test_data: LabeledImages | None = None,
    class_names: Sequence[str] | None = None,
    image_size: int | None = None,
    out_dir: str | Path | None = None,
    config: Mapping[str, Any] | None = None,
    seed: int = 0,
    device: str = "auto",
    verbose: bool = True,
) -> TrainResult:
    """Trains a semi-supervised classifier on images and labels held in Python.

    Args:
        data: the training images and labels (class ids 0..K−1, −1 for unlabeled images): a
            `torch.utils.data.Dataset` (or any object with `__len__` and `__getitem__`) of
            (image, label) items, or a tuple (images, labels). Images: see `api.images`
            (PIL images, file paths, uint8 or [0, 1] float arrays and tensors).
        algorithm: a registered algorithm (`semisup list`), or "auto": FlexMatch when `time`
            sizes the run (the practical defaults, as `semisup train` on a folder), else
            FixMatch (the papers' defaults).
        model: a registered model name ("auto": by image size; models registered from Python
            with `semisup.models.MODELS.register` included), or an `nn.Module` to train, which
            takes float images (N, C, S, S) scaled to [−1, 1] and returns (N, K) logits. It is
            trained in place; `result.model` holds its EMA copy.
        steps: optimizer steps (None: `train.steps` of `config`, else the papers' 2^20, or what
            `time` allows).
        time: a wall-clock budget ("90s", "20m", or seconds): the run measures its speed and
            sizes its steps, evaluations and schedules to it (docs/practical.md).
        test_data: labeled images to report test accuracy on at each evaluation, same forms.
        class_names: one name per class id (default "0".."K−1", K = the largest label + 1).
        image_size: the side images are resized to (default: their own, see `api.images`).
        out_dir: the run directory to write (None: nothing is written); it must not hold a run.
        config: any config keys, dotted (`{"train.batch_size": 32}`) or as sections
            (`{"train": {"batch_size": 32}}`), as `semisup train --set` takes them.
        seed: seeds the run (weights, batches, augmentation).
        device: "auto" (CUDA when available), "cpu", "cuda" or "cuda:N".
        verbose: print a line per evaluation (and a progress bar on a terminal).

    Raises:
        UserError (a ValueError): for unusable data, labels or settings, saying which.
    """
    images, labels = read_pairs(data, "data")
    names = class_names_for(labels, class_names)
    check_labels(labels, names, "data")
    model_key = {} if isinstance(model, nn.Module) else {"model.name": model}
    cfg = make_config(
        {"algorithm.name": algorithm, **model_key, "train.seed": seed, "train.device": device},
        config,
        steps,
        time=time,
    )
    pixels, image_format = prepare_images(images, None, image_size)
    test = None if test_data is None else read_test_set(test_data, image_format, names)
    split = build_split(pixels, labels, names, cfg.data.unlabeled_includes_labeled, test)
    module = model if isinstance(model, nn.Module) else None
    return run_training(cfg, split, module, out_dir, verbose)


def make_config(
    arguments: Mapping[str, Any],
    config: Mapping[str, Any] | None,
    steps: int | None,
    defaults: Mapping[str, Any] | None = None,
    time: str | float | None = None,
) -> Config:
    """The run's Config: `defaults`, then `config`'s keys, then those the arguments set.

    A `time` budget replaces a step count of `defaults` (the budget decides it).

    Raises:
        UserError: when `config` sets a key an argument also sets, or for an unknown key.
    """
    user = _dotted(config or {})
    given = dict(arguments)
    defaults = dict(defaults or {})
    if steps is not None:
        given["train.steps"] = steps
    if time is not None:
        given["train.time_budget"] = str(time)
        defaults.pop("train.steps", None)
    for key in given:
        if key in user:
            raise UserError(f"{key} is set both by an argument and by config; set it once")
    return build_config(None, {**defaults, **user, **given, "data.name": IN_MEMORY})


def _dotted(config: Mapping[str, Any]) -> dict[str, Any]:
    """`{"train": {"steps": 1}, "optim.lr": 0.1}` → `{"train.steps": 1, "optim.lr": 0.1}`."""
    sections = {k: v for k, v in config.items() if isinstance(v, Mapping)}
    dotted = {k: v for k, v in config.items() if k not in sections}
    return {**dotted, **flatten({k: dict(v) for k, v in sections.items()}, "config")}


def run_training(
    cfg: Config,
    data: SSLData,
    model: nn.Module | None,
    out_dir: str | Path | None,
    verbose: bool,
    replace: bool = False,
) -> TrainResult:
    """Builds the run of `cfg` on `data`, trains it, and writes its run directory.

    Args:
        cfg: the config (`data.*` only records where the data came from).
        data: the split.
        model: a module to train instead of the registered model `cfg.model` names.
        out_dir: the run directory, or None.
        verbose: print the evaluation lines (and the progress bar on a terminal).
        replace: delete a previous run in `out_dir` (else that is an error).
    """
    if model is not None and cfg.model != {"name": "auto"}:
        keys = ", ".join(f"model.{k}" for k in cfg.model if k != "name") or "model.name"
        raise UserError(
            f"{keys} configure a registered model; a module given as the model takes none"
        )
    started = time.monotonic()
    run_dir = _prepare_run_dir(out_dir, replace)
    cfg.data.num_labels = len(data.labeled_idx)
    cfg.train.progress = cfg.train.progress and verbose
    with _caller_random_states_kept():
        deadline = None
        if cfg.train.time_budget is not None:
            if model is not None:
                raise UserError(
                    "a time budget is sized by timing a registered model; with a module as the "
                    "model, give steps instead (or register it: semisup.models.MODELS)"
                )
            deadline = plan_run(cfg, data, started).deadline
        phase = _supervised_phase(cfg, data, model, run_dir, deadline)
        weights = phase.weights if phase is not None else None
        trainer = build_run(cfg, data, run_dir, model=model, start_weights=weights)
        trainer.clock.deadline = deadline
        _check_unlabeled(trainer, cfg)
        if model is not None:
            _check_model_output(trainer)
        if run_dir is not None:
            write_yaml(run_dir / "config.yaml", cfg.to_dict())
        with _printing(verbose):
            result = trainer.fit()
    summary = summary_record(cfg, trainer, result)
    if phase is not None:
        summary["supervised_phase"] = phase.summary(cfg, run_dir)
    if run_dir is not None:
        write_json(run_dir / "summary.json", summary)
    ema = TrainedModel(
        trainer.ema.module, data.class_names, data.images.shape[1:], trainer.device, trainer.step
    )
    return TrainResult(ema, summary, list(trainer.history), run_dir)


def _prepare_run_dir(out_dir: str | Path | None, replace: bool) -> Path | None:
    if out_dir is None:
        return None
    run_dir = Path(out_dir).expanduser()
    if not (run_dir / "checkpoint.pt").exists():
        return run_dir
    if not replace:
        raise UserError(f"{run_dir} already holds a run; choose another out_dir")
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    for numbered in run_dir.glob("checkpoint-*.pt"):
        numbered.unlink()
    shutil.rmtree(run_dir / "tensorboard", ignore_errors=True)
    shutil.rmtree(run_dir / PHASE_DIR, ignore_errors=True)
    return run_dir


def _supervised_phase(
    cfg: Config,
    data: SSLData,
    model: nn.Module | None,
    run_dir: Path | None,
    deadline: float | None,
) -> PhaseResult | None:
    """Runs the supervised phase the config or the plan gives (`semisup.supervised_phase`)."""
    if not cfg.train.supervised_steps:
        return None
    if model is not None:
        raise UserError(
            "train.supervised_steps trains a registered model supervised first; with a module "
            "as the model, leave it unset (or train it supervised in a run of its own)"
        )
    seconds = phase_seconds(cfg, deadline, resumed=False)
    return run_supervised_phase(cfg, data, run_dir, seconds, write=run_dir is not None)


def _check_unlabeled(trainer: Trainer, cfg: Config) -> None:
    """An algorithm that learns from unlabeled images needs some (labels −1)."""
    data = trainer.data
    if trainer.algorithm.mu > 0 and len(data.labeled_idx) == len(data.images):
        raise UserError(
            f"every image is labeled, but {cfg.algorithm['name']} also learns from unlabeled "
            "images: give the unlabeled ones the label -1, or use algorithm='supervised'"
        )


def _check_model_output(trainer: Trainer) -> None:
    """A custom module must map two training images to (2, K) logits."""
    model, data = trainer.algorithm.model, trainer.data
    images = data.images[:2].to(trainer.device)
    was_training = model.training
    try:
        with torch.no_grad():
            logits = model.eval()(to_model_input(images))
    except Exception as e:  # any failure of the user's forward
        raise UserError(
            f"the model fails on images of shape {tuple(images.shape)} (float, scaled to "
            f"[-1, 1]): {type(e).__name__}: {e}"
        ) from e
    finally:
        model.train(was_training)
    expected = (len(images), data.num_classes)
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != expected:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise UserError(
            f"the model returns {shape} for {len(images)} images; it must return logits of "
            f"shape {expected} ({data.num_classes} classes)"
        )


@contextlib.contextmanager
def _printing(verbose: bool) -> Iterator[None]:
    """The trainer prints a line per evaluation; without `verbose` they are swallowed."""
    if verbose:
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()):
        yield


@contextlib.contextmanager
def _caller_random_states_kept() -> Iterator[None]:
    """Training seeds Python's, NumPy's and torch's global generators; the caller's come back."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
