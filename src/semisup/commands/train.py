"""`semisup train`: build a run from flags and a config, train it (or resume it), summarise it."""

from __future__ import annotations

import argparse
import contextlib
import logging
from pathlib import Path
from typing import Any

from semisup import distributed, report
from semisup.commands.rundir import (
    claim_run_dir,
    default_run_dir,
    flag_overrides,
    resume_config,
    start_trainer,
)
from semisup.config import build_config
from semisup.errors import UserError
from semisup.experiment import build_trainer
from semisup.files import write_json, write_yaml

log = logging.getLogger("semisup")


def run(args: argparse.Namespace) -> int:
    """`semisup train`: build, (resume,) fit, write summary.json.

    Under torchrun every rank runs this; rank 0 alone writes files and prints.
    """
    device = distributed.init_from_env()
    try:
        with contextlib.ExitStack() as held:
            return _train(args, device, held)
    finally:
        distributed.shutdown()


def _train(args: argparse.Namespace, ddp_device: Any, held: contextlib.ExitStack) -> int:
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
        run_dir = distributed.broadcast_object(Path(args.out) if args.out else default_run_dir(cfg))
    if main:  # one writer per run directory, from here to the end of the command
        held.enter_context(claim_run_dir(run_dir, args.resume))
    if ddp_device is not None:
        cfg.train.device = str(ddp_device)
        cfg.train.progress = cfg.train.progress and main

    trainer = build_trainer(cfg, run_dir)
    start_trainer(trainer, run_dir, args.resume, write=main)
    if main:
        write_yaml(run_dir / "config.yaml", cfg.to_dict())
    data = trainer.data
    log.info(
        "%s on %s: %d labeled, %d unlabeled, %d test images, model %s, %d steps%s -> %s",
        cfg.algorithm["name"],
        cfg.data.name,
        len(data.labeled_idx),
        len(data.unlabeled_idx) if trainer.algorithm.mu else 0,
        0 if data.test_images is None else len(data.test_images),
        cfg.model["name"],
        cfg.train.steps,
        f" on {trainer.world_size} processes" if trainer.world_size > 1 else "",
        run_dir,
    )

    result = trainer.fit()
    if not main:
        return 0
    summary = {
        "algorithm": cfg.algorithm["name"],
        "dataset": cfg.data.name,
        "num_labels": cfg.data.num_labels,
        "seed": cfg.train.seed,
        **result,
    }
    write_json(run_dir / "summary.json", summary)
    if not args.no_report:
        report.report_after_training(run_dir)
    print(final_message(summary, run_dir))
    return 0


def final_message(summary: dict[str, Any], run_dir: Path) -> str:
    """What `semisup train` prints at the end."""
    lines = [f"run saved in {run_dir}"]
    if summary["test_accuracy"] is not None:
        lines.append(
            f"{summary['algorithm']}: test accuracy {100 * summary['test_accuracy']:.2f}% "
            f"(EMA model), median of the last 20 evaluations "
            f"{100 * summary['median_last20_accuracy']:.2f}%"
        )
    if summary["algorithm"] != "supervised":
        lines.append(
            "compare with supervised-only training on the same split: semisup train "
            f"--algorithm supervised --dataset {summary['dataset']} --num-labels "
            f"{summary['num_labels']} --seed {summary['seed']} (benchmarks/README.md has "
            "measured gaps)"
        )
    return "\n".join(lines)
