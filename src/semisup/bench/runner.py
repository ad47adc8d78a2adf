"""Runs a suite's cells, each as its own `semisup train` process, resumably.

Every cell is a run directory ROOT/<cell id>/ holding cell.yaml (the generated config),
train.log (the process's output) and the usual run files; a cell whose config equals an
earlier cell's (a row that reports another metric of the same training) reads that cell's
directory. A cell whose summary.json holds its full step count is skipped; one with a
checkpoint continues with `--resume`; one whose cell.yaml no longer matches the suite is left
alone with a message (delete it to rerun). A crash of one cell is reported and the suite goes
on.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from semisup.bench.suite import PLACEMENT_KEYS, Cell, Suite
from semisup.bench.table import read_outcome, write_tables
from semisup.config import flatten
from semisup.files import write_yaml

CELL_CONFIG = "cell.yaml"
CELL_LOG = "train.log"


def nested(keys: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{"train.steps": 1} → {"train": {"steps": 1}}: a config file's layout."""
    sections: dict[str, dict[str, Any]] = {}
    for key, value in keys.items():
        section, _, name = key.partition(".")
        sections.setdefault(section, {})[name] = value
    return sections


def _comparable(keys: dict[str, Any]) -> dict[str, Any]:
    roundtrip = flatten(yaml.safe_load(yaml.safe_dump(nested(keys))), "cell")
    return {k: v for k, v in roundtrip.items() if k not in PLACEMENT_KEYS}


def config_changed(cell: Cell, directory: Path) -> bool:
    """Whether a started cell's cell.yaml differs from the suite's cell now.

    Placement keys (data.dir, train.device, ...) are left out of the comparison.
    """
    path = directory / CELL_CONFIG
    if not path.is_file():
        return False
    previous = flatten(yaml.safe_load(path.read_text()) or {}, str(path))
    return _comparable(previous) != _comparable(cell.keys)


def train_command(cell: Cell, directory: Path, resume: bool) -> list[str]:
    """The `python -m semisup train` command line of a cell."""
    command = [sys.executable, "-m", "semisup", "train", "--no-report", "--out", str(directory)]
    if resume:
        return [*command, "--resume"]
    return [*command, "--config", str(directory / CELL_CONFIG)]


def run_cell(cell: Cell, directory: Path, resume: bool) -> int:
    """Trains one cell in a child process (output appended to train.log); its exit status."""
    if not resume and directory.exists():
        shutil.rmtree(directory)  # a start that never reached a checkpoint: begin afresh
    directory.mkdir(parents=True, exist_ok=True)
    if not resume:
        write_yaml(directory / CELL_CONFIG, nested(cell.keys))
    with open(directory / CELL_LOG, "a") as log:
        log.write(f"$ {' '.join(train_command(cell, directory, resume))}\n")
        log.flush()
        process = subprocess.run(
            train_command(cell, directory, resume), stdout=log, stderr=subprocess.STDOUT
        )
    return process.returncode


def _last_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def run_suite(
    suite: Suite,
    root: Path,
    cells: list[Cell],
    dry_run: bool = False,
) -> int:
    """Runs (or with `dry_run` lists) `cells`, one status line each; returns the failures.

    The results table is rewritten after every finished cell.
    """
    failures = 0
    for number, cell in enumerate(cells, 1):
        directory = cell.directory(root)
        shared = f" (the run of {cell.shares})" if cell.shares else ""
        prefix = f"[{number}/{len(cells)}] {cell.id}{shared}:"
        outcome = read_outcome(cell, directory, suite.last_evaluations)
        if outcome.status == "unavailable":
            print(f"{prefix} unavailable ({cell.unavailable})")
            continue
        if outcome.status == "done":
            error = "–" if outcome.error is None else f"{outcome.error:.2f}%"
            print(f"{prefix} done (error {error}), skipped")
            continue
        if config_changed(cell, directory):
            print(
                f"{prefix} the suite changed this cell's config since it started; delete "
                f"{directory} to run it again. Skipped"
            )
            continue
        resume = outcome.status == "partial"
        if dry_run:
            print(f"{prefix} would {'resume' if resume else 'start'} in {directory}")
            continue
        print(f"{prefix} {'resuming' if resume else 'running'} ...", end=" ", flush=True)
        started = time.perf_counter()
        code = run_cell(cell, directory, resume)
        minutes = (time.perf_counter() - started) / 60
        if code != 0:
            failures += 1
            log = directory / CELL_LOG
            print(f"failed (exit {code}) after {minutes:.1f} min: {_last_line(log)} (see {log})")
            continue
        finished = read_outcome(cell, directory, suite.last_evaluations)
        error = "–" if finished.error is None else f"{finished.error:.2f}%"
        print(f"done in {minutes:.1f} min, error {error}")
        write_tables(suite, root)
    return failures
