"""`semisup train`: build a run from flags and a config, train it (or resume it), summarise it."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import shlex
import time
from pathlib import Path
from typing import Any

from semisup import distributed, report
from semisup.commands.rundir import (
    claim_run_dir,
    default_run_dir,
    flag_overrides,
    resume_config,
)
from semisup.config import Config, DataConfig, build_config, settle_defaults
from semisup.engine.budget import parse_duration
from semisup.errors import UserError
from semisup.experiment import build_run, prepare_data
from semisup.files import write_json, write_yaml
from semisup.planning import plan_run
from semisup.run_files import start_trainer, summary_record
from semisup.supervised_phase import phase_seconds, run_supervised_phase

# The engine settings the supervised baseline takes over, so it trains the same way.
BASELINE_TRAIN_KEYS = (
    "batch_size",
    "eval_every",
    "ema_decay",
    "ema_warmup",
    "ema_buffers",
    "precision",
)
# The labeled images' augmentation, the only one the supervised baseline uses.
BASELINE_AUGMENT_KEYS = ("labeled", "hflip", "weak_shift")

log = logging.getLogger("semisup")


def run(args: argparse.Namespace) -> int:
    """`semisup train`: build, plan, (resume,) fit, write summary.json.

    Under torchrun every rank runs this; rank 0 alone plans, writes files and prints.
    """
    started = time.monotonic()
    device = distributed.init_from_env()
    ended_well = False
    try:
        with contextlib.ExitStack() as held:
            code = _train(args, device, held, started)
        ended_well = True
        return code
    finally:
        distributed.shutdown(together=ended_well)


def _train(
    args: argparse.Namespace, ddp_device: Any, held: contextlib.ExitStack, started: float
) -> int:
    main = distributed.is_main()
    if not main:
        log.setLevel(logging.WARNING)
    overrides = flag_overrides(args)
    if args.resume:
        if not args.out:
            raise UserError("--resume needs --out RUN_DIR, the run to continue")
        run_dir = Path(args.out)
        cfg = resume_config(run_dir, overrides)
    else:
        cfg = build_config(args.config, overrides)
        settle_defaults(cfg, paper_when_auto=bool(args.config))
        run_dir = distributed.broadcast_object(Path(args.out) if args.out else default_run_dir(cfg))
    if main:  # one writer per run directory, from here to the end of the command
        held.enter_context(claim_run_dir(run_dir, args.resume))
    if ddp_device is not None:
        cfg.train.device = str(ddp_device)
        cfg.train.progress = cfg.train.progress and main

    log.info("semisup train: %s on %s, reading the data", cfg.algorithm["name"], cfg.data.name)
    data = prepare_data(cfg)
    deadline = None
    if not args.resume:
        plan = plan_run(cfg, data, started) if main else None
        cfg = distributed.broadcast_object(cfg)
        if plan is not None:
            deadline = plan.deadline
            log.info("plan: %s", "; ".join(plan.notes))
    if main and cfg.train.supervised_steps and not args.resume:
        write_yaml(run_dir / "config.yaml", cfg.to_dict())  # the phase's resume reads it
    seconds = phase_seconds(cfg, deadline, resumed=args.resume and main)
    phase = run_supervised_phase(cfg, data, run_dir, seconds, write=main)
    resuming = args.resume and (run_dir / "checkpoint.pt").exists()
    weights = phase.weights if phase is not None and not resuming else None
    trainer = build_run(cfg, data, run_dir, pretrained=not resuming, start_weights=weights)
    start_trainer(trainer, run_dir, args.resume, write=main)
    if args.resume and cfg.train.time_budget is not None and main:
        spent = trainer.wall_seconds + (phase.wall_seconds if phase is not None else 0.0)
        deadline = started + parse_duration(cfg.train.time_budget) - spent
    trainer.clock.deadline = deadline
    if main:
        write_yaml(run_dir / "config.yaml", cfg.to_dict())
    log.info(
        "%s on %s: %d labeled, %d unlabeled, %d test images, model %s, %d steps of batch %d, "
        "%s%s -> %s",
        cfg.algorithm["name"],
        cfg.data.name,
        len(data.labeled_idx),
        len(data.unlabeled_idx) if trainer.algorithm.mu else 0,
        0 if data.test_images is None else len(data.test_images),
        cfg.model["name"],
        cfg.train.steps,
        cfg.train.batch_size,
        trainer.runtime.precision,
        f" on {trainer.world_size} processes" if trainer.world_size > 1 else "",
        run_dir,
    )

    result = trainer.fit()
    if not main:
        return 0
    summary = summary_record(cfg, trainer, result)
    if phase is not None:
        summary["supervised_phase"] = phase.summary(cfg, run_dir)
    write_json(run_dir / "summary.json", summary)
    if not args.no_report:
        report.report_after_training(run_dir)
    print(final_message(summary, cfg, run_dir))
    return 0


def final_message(summary: dict[str, Any], cfg: Config, run_dir: Path) -> str:
    """What `semisup train` prints at the end: the result, and the supervised baseline's command."""
    lines = [f"run saved in {run_dir}"]
    if "supervised_phase" in summary:
        phase = summary["supervised_phase"]
        lines.append(
            f"{summary['algorithm']} started from {phase['steps']} steps of supervised training "
            f"(train.supervised_steps), saved in {phase['run_dir']}"
        )
    if summary["test_accuracy"] is not None:
        lines.append(
            f"{summary['algorithm']}: test accuracy {100 * summary['test_accuracy']:.2f}% "
            f"(EMA model), median of the last 20 evaluations "
            f"{100 * summary['median_last20_accuracy']:.2f}%"
        )
    if summary["stopped_at_deadline"]:
        lines.append(
            f"the time budget ended the run at step {summary['steps']} of {cfg.train.steps}; "
            f"continue it with: semisup train --out {shlex.quote(str(run_dir))} --resume"
        )
    if summary["algorithm"] != "supervised":
        lines.append(
            "compare with supervised-only training on the same split (benchmarks/README.md has "
            f"measured gaps):\n  {baseline_command(cfg)}"
        )
    return "\n".join(lines)


def baseline_command(cfg: Config) -> str:
    """A `semisup train` command of supervised-only training on `cfg`'s split, model and length."""
    words = ["semisup", "train", "--algorithm", "supervised", "--dataset", cfg.data.name]
    words += ["--data-dir", cfg.data.dir, "--num-labels", str(cfg.data.num_labels)]
    words += ["--seed", str(cfg.train.seed)]
    if cfg.train.time_budget is not None:
        words += ["--time", cfg.train.time_budget]
    else:
        words += ["--steps", str(cfg.train.steps)]
    sets = [f"data.split_seed={cfg.data.split_seed}"]
    defaults = DataConfig()
    for field in dataclasses.fields(DataConfig):
        value = getattr(cfg.data, field.name)
        keep = field.name not in ("name", "dir", "num_labels", "split_seed", "download")
        if keep and value != getattr(defaults, field.name):
            sets.append(f"data.{field.name}={value}")
    sets += [f"model.{key}={value}" for key, value in cfg.model.items()]
    keys = [k for k in BASELINE_TRAIN_KEYS if k != "eval_every" or cfg.train.time_budget is None]
    sets += [f"train.{key}={getattr(cfg.train, key)}" for key in keys]
    augment = {key: getattr(cfg.augment, key) for key in BASELINE_AUGMENT_KEYS}
    sets += [f"augment.{key}={value}" for key, value in augment.items() if value is not None]
    return shlex.join([*words, "--set", *sets])
