"""What `semisup train` and `semisup crest` share: flags as config keys, the run directory.

A run directory has one writer at a time (`claim_run_dir` holds its lock for the whole
command). What it holds, and starting or resuming its trainer, is `semisup.run_files`.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from semisup.config import Config, parse_assignments, set_key
from semisup.errors import UserError
from semisup.files import LOCK_NAME, exclusive_lock, make_folder, remove_temp_files
from semisup.run_files import RESUMABLE_KEYS, read_run_config

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
OUT_ALTERNATIVE = "choose another --out"


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


@contextlib.contextmanager
def claim_run_dir(run_dir: Path, resume: bool, marker: str = "checkpoint.pt") -> Iterator[None]:
    """Creates and locks `run_dir` for this process; removes what killed writers left.

    Args:
        run_dir: the run directory.
        resume: whether the command continues the run in it.
        marker: the file that shows a run is already there (refused unless `resume`).

    A directory this call created is removed again if the command fails before writing
    anything into it.

    Raises:
        UserError: when the directory cannot be created or written, another process writes
            into it, or (without `resume`) it already holds a run.
    """
    created = not run_dir.exists()
    make_folder(run_dir, OUT_ALTERNATIVE)
    try:
        with exclusive_lock(run_dir, OUT_ALTERNATIVE):
            if not resume and (run_dir / marker).exists():
                raise UserError(
                    f"{run_dir} already holds a run; continue it with --resume, or choose "
                    "another --out"
                )
            for path in remove_temp_files(run_dir):
                log.info("removed %s, left by an interrupted write", path)
            yield
    except BaseException:
        if created:
            _remove_if_unused(run_dir)
        raise


def _remove_if_unused(run_dir: Path) -> None:
    """Deletes a run directory that holds nothing but its lock file."""
    with contextlib.suppress(OSError):
        if {p.name for p in run_dir.iterdir()} <= {LOCK_NAME}:
            (run_dir / LOCK_NAME).unlink(missing_ok=True)
            run_dir.rmdir()


def resume_config(run_dir: Path, overrides: dict[str, Any]) -> Config:
    """A run's saved config, with the few overrides a resumed run may change."""
    cfg = read_run_config(run_dir)
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
