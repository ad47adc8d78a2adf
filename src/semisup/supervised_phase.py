"""Supervised training first: the labeled images alone, then the algorithm from those weights.

A semi-supervised step passes μ unlabeled batches as well as the labeled one, so on a CPU it
costs several supervised steps (the small CNN on 32x32 images, 2 cores: 0.27-0.30 s against
0.06 s), and its pseudo-labels come from a network that still guesses. On a budget of minutes
the algorithm then makes a few hundred steps from a near-chance start and loses to
supervised-only training. Spending the first part of the budget on the labeled images alone and
starting the algorithm from those weights beat supervised-only training of the whole budget on
the folders where the algorithm alone lost (benchmarks/README.md, "A harder shapes folder, and
supervised training first").

A run with `train.supervised_steps` > 0 first trains the `supervised` algorithm for that many
steps: a complete run in RUN_DIR/supervised-first (config.yaml, checkpoints, metrics.jsonl,
summary.json), resumed like any run. The algorithm then starts from its EMA weights with a new
optimizer, learning-rate schedule and EMA: the same as a supervised run followed by a run with
`--init-from` its directory. Practical runs with a budget whose labeled images get SimCLR's
view (colour images) get `train.supervised_first: 0.5`, which `semisup.planning` turns into
`train.supervised_steps` by timing supervised steps. Grey images keep the weak view and get no
phase: on MNIST with 100 labels it tripled FlexMatch's 10-minute error (4.11 against 1.37 %).
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from semisup.config import Config
from semisup.data.ssl import SSLData
from semisup.durations import parse_duration
from semisup.engine.checkpoint import load_checkpoint
from semisup.engine.runtime import resolve_device
from semisup.errors import UserError
from semisup.experiment import build_run
from semisup.files import write_json, write_yaml
from semisup.run_files import PHASE_DIR, start_trainer, summary_record

log = logging.getLogger("semisup")

PRACTICAL_SHARE = 0.5  # of the budget; measured against 0 (benchmarks/supervised_first.sh)
PHASE_EVALUATIONS = 10  # evaluations of the supervised phase


def phase_config(cfg: Config) -> Config:
    """The supervised phase of `cfg`: its split, model, engine and augmentation, no algorithm.

    `train.supervised_steps` steps with `PHASE_EVALUATIONS` evaluations; the budget is the
    caller's (a deadline), so `train.time_budget` is left unset.
    """
    phase = copy.deepcopy(cfg)
    phase.algorithm = {"name": "supervised"}
    t = phase.train
    t.steps = int(cfg.train.supervised_steps or 0)
    t.eval_every = max(1, t.steps // PHASE_EVALUATIONS)
    t.time_budget, t.supervised_first, t.supervised_steps = None, 0.0, 0
    return phase


def check_phase_settings(cfg: Config, budgeted: bool) -> None:
    """Refuses a supervised phase that cannot run as set.

    Args:
        cfg: the run's config (`algorithm.name` settled).
        budgeted: the run's steps are sized to a time budget (the share then sets the phase).
    """
    t = cfg.train
    if not (t.supervised_first or t.supervised_steps):
        return
    if cfg.algorithm["name"] == "supervised":
        raise UserError(
            "train.supervised_first and train.supervised_steps add a supervised phase before a "
            "semi-supervised algorithm; algorithm supervised trains that way throughout: leave "
            "them unset"
        )
    if t.supervised_first and t.supervised_steps is None and not budgeted:
        raise UserError(
            f"train.supervised_first={t.supervised_first} is a share of the time budget, but "
            "this run's steps are set: give --time instead of --steps, or the supervised "
            "phase's own length as train.supervised_steps"
        )


def phase_seconds(cfg: Config, deadline: float | None, resumed: bool) -> float | None:
    """The supervised phase's whole wall-clock budget (None: no share of a budget set).

    Its share of the time left before `deadline`; in a resumed command, of the whole
    `train.time_budget` (the phase subtracts the time it already spent).
    """
    share = cfg.train.supervised_first or 0.0
    if not share:
        return None
    if resumed and cfg.train.time_budget is not None:
        return share * parse_duration(cfg.train.time_budget)
    return share * (deadline - time.monotonic()) if deadline is not None else None


@dataclass
class PhaseResult:
    """What the supervised phase hands on: its EMA weights, the steps and wall time it took."""

    weights: dict[str, torch.Tensor]
    steps: int
    wall_seconds: float

    def summary(self, cfg: Config, run_dir: Path | None) -> dict[str, object]:
        """The `supervised_phase` entry of the run's summary.json."""
        entry: dict[str, object] = {
            "steps": self.steps,
            "planned_steps": cfg.train.supervised_steps,
            "wall_seconds": round(self.wall_seconds, 2),
        }
        if run_dir is not None:
            entry["run_dir"] = str(run_dir / PHASE_DIR)
        return entry


def run_supervised_phase(
    cfg: Config, data: SSLData, run_dir: Path | None, seconds: float | None, write: bool
) -> PhaseResult | None:
    """Trains (or resumes, or reads back) the supervised phase of `cfg`; None if it has none.

    Args:
        cfg: the run's config, as planned (config.yaml before the algorithm's run is built).
        data: the split.
        run_dir: the run's directory (the phase goes into RUN_DIR/supervised-first), or None.
        seconds: the phase's whole wall-clock budget (time it already spent counts), or None.
        write: this process writes files (False on the other ranks of a DDP run).
    """
    check_phase_settings(cfg, budgeted=cfg.train.time_budget is not None)
    if not cfg.train.supervised_steps:
        return None
    phase_dir = run_dir / PHASE_DIR if run_dir is not None else None
    if phase_dir is not None and (phase_dir / "summary.json").is_file():
        return _finished_phase(phase_dir, cfg)
    phase = phase_config(cfg)
    resuming = phase_dir is not None and (phase_dir / "checkpoint.pt").exists()
    trainer = build_run(phase, data, phase_dir, pretrained=not resuming)
    if phase_dir is not None:
        start_trainer(trainer, phase_dir, resume=resuming, write=write)
        if write:
            write_yaml(phase_dir / "config.yaml", phase.to_dict())
    if seconds is not None:
        trainer.clock.deadline = time.monotonic() + seconds - trainer.wall_seconds
    log.info(
        "supervised phase: %d steps on the %d labeled images first (train.supervised_steps), "
        "then %s from its weights%s",
        phase.train.steps,
        len(data.labeled_idx),
        cfg.algorithm["name"],
        f" -> {phase_dir}" if phase_dir is not None else "",
    )
    result = trainer.fit()
    if write and phase_dir is not None:
        write_json(phase_dir / "summary.json", summary_record(phase, trainer, result))
    return PhaseResult(trainer.ema.state_dict(), trainer.step, trainer.wall_seconds)


def _finished_phase(phase_dir: Path, cfg: Config) -> PhaseResult:
    """The result of a phase an earlier command finished (its last checkpoint and summary)."""
    summary = json.loads((phase_dir / "summary.json").read_text(encoding="utf-8"))
    state = load_checkpoint(phase_dir / "checkpoint.pt", resolve_device(cfg.train.device))
    log.info("supervised phase: finished earlier (%d steps in %s)", state["step"], phase_dir)
    return PhaseResult(state["ema"], int(state["step"]), float(summary["wall_seconds"]))
