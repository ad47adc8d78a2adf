"""What a run directory holds, read for the report: metrics.jsonl, summary.json, config.yaml."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from semisup.errors import UserError
from semisup.run_files import PHASE_DIR


@dataclass(frozen=True)
class RunData:
    """A run's files, parsed; each may be missing while the run is in progress.

    Attributes:
        run_dir: the run directory.
        history: one record per evaluation (metrics.jsonl), oldest first.
        summary: summary.json, written when training finished; None before.
        config: the resolved config (config.yaml); None if absent.
        config_text: config.yaml as written, for display.
        phase: the supervised phase this run started from (RUN_DIR/supervised-first), if any.
    """

    run_dir: Path
    history: list[dict[str, Any]]
    summary: dict[str, Any] | None
    config: dict[str, Any] | None
    config_text: str | None
    phase: RunData | None = None

    @property
    def finished(self) -> bool:
        """Whether training ended (summary.json exists)."""
        return self.summary is not None

    @property
    def steps_done(self) -> int:
        """Steps trained: summary.json's count when finished, else the last evaluation's step."""
        if self.summary and isinstance(self.summary.get("steps"), int):
            return self.summary["steps"]
        return self.history[-1]["step"] if self.history else 0

    @property
    def total_steps(self) -> int | None:
        """The run's configured step count, if the config is known."""
        return (self.config or {}).get("train", {}).get("steps")

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """(steps, values) of a scalar key over the evaluations, leaving out missing values."""
        pairs = [(r["step"], r[key]) for r in self.history if _is_number(r.get(key))]
        return [s for s, _ in pairs], [float(v) for _, v in pairs]

    def has(self, key: str) -> bool:
        """Whether any evaluation logged a value for `key`."""
        return any(r.get(key) is not None for r in self.history)

    def last(self, key: str) -> Any:
        """The latest logged value of `key`, or None."""
        for record in reversed(self.history):
            if record.get(key) is not None:
                return record[key]
        return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_history(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl as a list of records; a torn last line (a run being written) is skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


RUN_FILES = ("metrics.jsonl", "summary.json", "config.yaml")


def _is_run_dir(path: Path) -> bool:
    return path.is_dir() and any((path / name).is_file() for name in RUN_FILES)


def load_run(run_dir: str | Path) -> RunData:
    """Reads a run directory, and its supervised phase's if it has one.

    A directory without any run file is a UserError.
    """
    run_dir = Path(run_dir)
    if not _is_run_dir(run_dir):
        raise UserError(
            f"{run_dir} is not a run directory (it holds none of {', '.join(RUN_FILES)}); "
            "pass the --out directory of `semisup train`"
        )
    summary_path, config_path = run_dir / "summary.json", run_dir / "config.yaml"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    config_text = config_path.read_text() if config_path.is_file() else None
    config = yaml.safe_load(config_text) if config_text else None
    phase_dir = run_dir / PHASE_DIR
    phase = load_run(phase_dir) if _is_run_dir(phase_dir) else None
    history = read_history(run_dir / "metrics.jsonl")
    return RunData(run_dir, history, summary, config, config_text, phase)


def normalize(counts: list[float]) -> list[float]:
    """Counts or weights → a distribution summing to 1."""
    total = float(sum(counts))
    if total <= 0:
        raise ValueError("counts sum to zero")
    return [c / total for c in counts]


def labeled_class_counts(run: RunData) -> list[int] | None:
    """Labeled images per class: from summary.json, else rebuilt from config.yaml's split.

    Rebuilding loads the data set and splits it exactly as training did (`build_data`, same
    seed), which is how the report of a run still in progress gets the labeled distribution.
    """
    if run.summary and run.summary.get("labeled_class_counts"):
        return list(run.summary["labeled_class_counts"])
    if run.config is None:
        return None
    return list(_rebuild_split(run.config).labeled_class_counts())


def class_names(run: RunData, num_classes: int) -> list[str]:
    """The class names from summary.json, else class indices as strings."""
    names = (run.summary or {}).get("class_names")
    return (
        list(names) if names and len(names) == num_classes else [str(c) for c in range(num_classes)]
    )


def _rebuild_split(config: dict[str, Any]) -> Any:
    from semisup.config import config_from_dict
    from semisup.data.build import build_data

    cfg = config_from_dict(config)
    return build_data(cfg.data, cfg.split_seed)
