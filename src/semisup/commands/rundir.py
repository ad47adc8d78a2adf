"""What `semisup train` and `semisup crest` share: flags as config keys, run directories, resume."""

from __future__ import annotations

import argparse
import copy
import json
import logging
from pathlib import Path
from typing import Any

import yaml

from semisup.config import Config, config_from_dict, parse_assignments, set_key
from semisup.engine.checkpoint import load_checkpoint
from semisup.engine.trainer import Trainer
from semisup.errors import UserError

log = logging.getLogger("semisup")

# Flags that are shorthands for config keys.
FLAG_KEYS = {
    "algorithm": "algorithm.name",
    "dataset": "data.name",
    "data_dir": "data.dir",
    "num_labels": "data.num_labels",
    "steps": "train.steps",
    "time": "train.time_budget",
    "seed": "train.seed",
    "device": "train.device",
    "init_from": "model.pretrained",
}
# Keys that may change when a run is resumed; anything else would silently alter the run.
RESUMABLE_KEYS = {"train.steps", "train.device", "train.progress", "train.eval_batch_size"}


def flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Dotted config keys from the shorthand flags and `--set` pairs."""
    overrides = {key: getattr(args, flag) for flag, key in FLAG_KEYS.items()}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    overrides.update(parse_assignments(args.set))
    return overrides


def default_run_dir(cfg: Config) -> Path:
    """runs/<algorithm>_<data>_<labels>_seed<seed>, with a numeric suffix if it exists."""
    base = Path("runs") / (
        f"{cfg.algorithm['name']}_{cfg.data.name}_{cfg.data.num_labels or 'default'}"
        f"_seed{cfg.train.seed}"
    )
    run_dir, n = base, 1
    while run_dir.exists():
        n += 1
        run_dir = base.with_name(f"{base.name}_{n}")
    return run_dir


def resume_config(run_dir: Path, overrides: dict[str, Any]) -> Config:
    """A run's saved config, with the few overrides a resumed run may change."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise UserError(f"cannot resume: {path} does not exist (is --out the run directory?)")
    cfg = config_from_dict(yaml.safe_load(path.read_text()))
    # Repeating the original command with --resume is fine; changing the run is not.
    changed = sorted(
        key
        for key, value in overrides.items()
        if key not in RESUMABLE_KEYS and not _same_value(cfg, key, value)
    )
    if changed:
        raise UserError(
            f"cannot change {changed[0]} when resuming; only {', '.join(sorted(RESUMABLE_KEYS))} "
            "may change. Start a new run with another --out instead"
        )
    for key, value in overrides.items():
        set_key(cfg, key, value)
    return cfg


def _same_value(cfg: Config, key: str, value: Any) -> bool:
    """Whether setting `key` to `value` leaves `cfg` as it is."""
    trial = copy.deepcopy(cfg)
    set_key(trial, key, value)
    return trial == cfg


def resume_trainer(trainer: Trainer, run_dir: Path, write: bool = True) -> None:
    """Loads RUN_DIR/checkpoint.pt into `trainer` and drops the evaluations logged after it.

    Args:
        trainer: a trainer built from the run's config.
        run_dir: the run directory.
        write: rewrite metrics.jsonl (False on the processes that do not write files).
    """
    trainer.load_state_dict(load_checkpoint(run_dir / "checkpoint.pt", trainer.device))
    if write:
        with open(run_dir / "metrics.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in trainer.history)
    log.info("resuming %s at step %d", run_dir, trainer.step)


def write_yaml(path: Path, content: dict[str, Any]) -> None:
    """Writes a YAML file (tuples as lists)."""
    path.write_text(yaml.safe_dump(json.loads(json.dumps(content)), sort_keys=False))


def write_json(path: Path, content: dict[str, Any]) -> None:
    """Writes an indented JSON file atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(content, indent=2) + "\n")
    tmp.replace(path)
