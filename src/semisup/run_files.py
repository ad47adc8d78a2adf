"""A run directory's state: starting or resuming its trainer, and the records it keeps.

Shared by every way a run is made (`semisup train`, `semisup crest`, the supervised phase and the
Python API), so it sits below all of them. A run directory holds config.yaml, checkpoint.pt,
metrics.jsonl (always the checkpoint's history), summary.json, history.jsonl (one line per start
or resume, with the settings a resume changed) and, after a supervised phase, that phase's own
run in `PHASE_DIR`. Files are written atomically (`semisup.files`).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import resource
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

from semisup.config import Config, config_from_dict
from semisup.engine.checkpoint import load_checkpoint
from semisup.engine.guard import all_finite, floating_tensors
from semisup.errors import UserError
from semisup.files import write_jsonl

if TYPE_CHECKING:
    from semisup.engine.trainer import Trainer

log = logging.getLogger("semisup")

PHASE_DIR = "supervised-first"  # the supervised phase's run, inside the algorithm's
# Keys that may change when a run is resumed; anything else would silently alter the run. The
# learning rate, clipping and the non-finite policy are the remedies for a diverged run.
RESUMABLE_KEYS = {
    "train.steps",
    "train.time_budget",
    "train.checkpoint_every",
    "train.device",
    "train.progress",
    "train.eval_batch_size",
    "optim.lr",
    "train.grad_clip",
    "train.nonfinite",
}
# Keys that say where the data is read from, not what it is: they may differ between the
# checkpoint and config.yaml (a moved data directory).
LOCATION_KEYS = {"data.dir", "data.download", "data.mirror"}
HISTORY = "history.jsonl"


def read_run_config(run_dir: Path) -> Config:
    """The config.yaml of a run directory, or a UserError saying why it cannot be read."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise UserError(f"cannot resume: {path} does not exist (is --out the run directory?)")
    try:
        nested = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError, OSError) as e:
        raise UserError(f"cannot read {path}: {str(e).splitlines()[0]}") from e
    if not isinstance(nested, dict):
        raise UserError(f"{path} is not a run's config (a mapping of sections)")
    return config_from_dict(nested)


def _flat(nested: dict[str, Any]) -> dict[str, Any]:
    return {f"{s}.{k}": v for s, values in nested.items() for k, v in values.items()}


def check_checkpoint_fits(state: dict[str, Any], trainer: Trainer, path: Path) -> dict[str, Any]:
    """Checks that a checkpoint was written by this run; returns the settings a resume changed.

    The checkpoint's own config must match the run's (config.yaml) on every key a resume may
    not change, its classes must be the data's, its state finite, and it must not be past
    `train.steps`.

    Returns:
        {key: [checkpoint's value, this run's value]} of the resumable keys that differ.

    Raises:
        UserError: naming the first key that differs.
    """
    try:
        saved = _flat(config_from_dict(state["config"]).to_dict())
    except (UserError, KeyError, TypeError, AttributeError) as e:
        raise UserError(f"{path} holds no readable run config ({e}); it is not this run's") from e
    current = _flat(trainer.config)
    for key in sorted(set(saved) | set(current)):
        if key in RESUMABLE_KEYS | LOCATION_KEYS or saved.get(key) == current.get(key):
            continue
        raise UserError(
            f"{path} belongs to another run: its {key} is {saved.get(key)!r}, but the run's "
            f"config.yaml has {current.get(key)!r}. Resume the checkpoint's own run directory, "
            "or move checkpoint.pt away to start this run over"
        )
    classes = list(trainer.data.class_names)
    if state.get("class_names", classes) != classes:
        raise UserError(
            f"{path} was trained on the classes {state['class_names']}, but the data now has "
            f"{classes}; restore the data as it was, or start a new run with another --out"
        )
    if not all_finite(floating_tensors([state.get(k) for k in ("algorithm", "ema", "callbacks")])):
        raise UserError(
            f"{path} holds non-finite values (NaN or infinity; written by an earlier version, "
            "which saved diverged runs): move it away and start this run over"
        )
    if trainer.settings.steps < int(state["step"]):
        raise UserError(
            f"train.steps={trainer.settings.steps} is less than the {state['step']} steps "
            f"{path} has already done; resume with --steps {state['step']} or more"
        )
    return resumable_changes(saved, current)


def resumable_changes(saved: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """{key: [saved value, current value]} of the resumable keys that differ (flat configs)."""
    return {
        k: [saved.get(k), current.get(k)]
        for k in sorted(RESUMABLE_KEYS)
        if saved.get(k) != current.get(k)
    }


def resume_trainer(trainer: Trainer, run_dir: Path, write: bool = True) -> None:
    """Loads RUN_DIR/checkpoint.pt into `trainer` and drops the evaluations logged after it.

    Args:
        trainer: a trainer built from the run's config.
        run_dir: the run directory.
        write: rewrite metrics.jsonl and record the resume in history.jsonl (False on the
            processes that do not write files).

    Raises:
        UserError: when the checkpoint is unreadable or belongs to another run.
    """
    path = run_dir / "checkpoint.pt"
    state = load_checkpoint(path, trainer.device)
    changes = check_checkpoint_fits(state, trainer, path)
    try:
        trainer.load_state_dict(state)
    except (KeyError, RuntimeError, ValueError, TypeError, IndexError) as e:
        raise UserError(
            f"{path} does not fit the run in {run_dir} ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200]}); move it away to start this run over"
        ) from e
    for key, (old, new) in changes.items():
        log.info("resuming with %s changed from %r to %r (recorded in %s)", key, old, new, HISTORY)
    if write:
        write_jsonl(run_dir / "metrics.jsonl", trainer.history)
        record_history(run_dir, "resume", trainer.step, changes)
    log.info("resuming %s at step %d", run_dir, trainer.step)


def summary_record(cfg: Config, trainer: Trainer, result: dict[str, Any]) -> dict[str, Any]:
    """summary.json: what ran (algorithm, data, model, hardware, plan), `Trainer.fit`'s result."""
    return {
        "algorithm": cfg.algorithm["name"],
        "dataset": cfg.data.name,
        "num_labels": cfg.data.num_labels,
        "seed": cfg.train.seed,
        "model": dict(cfg.model),
        "device": str(trainer.device),
        "precision": trainer.runtime.precision,
        "time_budget": cfg.train.time_budget,
        "planned_steps": cfg.train.steps,
        **result,
        "peak_memory_gb": round(peak_memory_gb(trainer.device), 2),
    }


def peak_memory_gb(device: torch.device) -> float:
    """The process's peak resident memory (and the GPU's peak allocation, on CUDA) in GB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    if device.type == "cuda":
        peak += torch.cuda.max_memory_allocated(device)
    return peak / 1e9


def start_trainer(trainer: Trainer, run_dir: Path, resume: bool, write: bool = True) -> None:
    """Resumes `trainer` from RUN_DIR's checkpoint if there is one, else starts the run fresh.

    A fresh start empties metrics.jsonl (which always holds the checkpoint's history).

    Args:
        trainer: a trainer built from the run's config.
        run_dir: the run directory.
        resume: whether the command is a `--resume` (which records what it changed).
        write: write metrics.jsonl and history.jsonl (False on the processes that do not write).
    """
    if (run_dir / "checkpoint.pt").exists():
        resume_trainer(trainer, run_dir, write)
        return
    changes: dict[str, Any] = {}
    if resume:
        log.info("no checkpoint in %s yet: starting its run from step 0", run_dir)
        changes = resumable_changes(
            _flat(read_run_config(run_dir).to_dict()), _flat(trainer.config)
        )
    if write:
        write_jsonl(run_dir / "metrics.jsonl", [])
        record_history(run_dir, "start", 0, changes)


def record_history(run_dir: Path, event: str, step: int, changes: dict[str, Any]) -> None:
    """Appends one start or resume record to RUN_DIR/history.jsonl (rewritten atomically)."""
    path = run_dir / HISTORY
    records = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                records.append(json.loads(line))
    when = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    records.append({"event": event, "step": step, "time": when, "changes": changes})
    write_jsonl(path, records)
