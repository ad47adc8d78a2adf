"""The `semisup` command: train, evaluate, list."""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
from pathlib import Path
from typing import Any

import yaml

from semisup import bench, distributed, report
from semisup.commands import crest_generations, export, predict
from semisup.config import Config, build_config, config_from_dict, parse_assignments, set_key
from semisup.errors import UserError

log = logging.getLogger("semisup")

# Flags that are shorthands for config keys.
FLAG_KEYS = {
    "algorithm": "algorithm.name",
    "dataset": "data.name",
    "data_dir": "data.dir",
    "num_labels": "data.num_labels",
    "steps": "train.steps",
    "seed": "train.seed",
    "device": "train.device",
}
# Keys that may change when a run is resumed; anything else would silently alter the run.
RESUMABLE_KEYS = {"train.steps", "train.device", "train.progress", "train.eval_batch_size"}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `semisup` command."""
    parser = argparse.ArgumentParser(
        prog="semisup", description="Semi-supervised image classification."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model (default: FixMatch on digits)")
    train.add_argument("--algorithm", help="algorithm name (see `semisup list`)")
    train.add_argument("--dataset", help="data set name, or 'folder' for your own images")
    train.add_argument("--data-dir", help="where the data set lives or is downloaded to")
    train.add_argument("--num-labels", type=int, help="labeled images in total")
    train.add_argument("--steps", type=int, help="optimizer steps")
    train.add_argument("--seed", type=int, help="seed of the run and of the labeled split")
    train.add_argument("--out", help="run directory (default: runs/<algorithm>_<data>_...)")
    train.add_argument("--config", help="YAML config file (see configs/)")
    train.add_argument(
        "--set",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides, e.g. --set algorithm.threshold=0.9 train.eval_every=500",
    )
    train.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    train.add_argument(
        "--no-report", action="store_true", help="skip writing report.html after training"
    )

    evaluate = commands.add_parser("evaluate", help="test accuracy of a run's EMA model")
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--device", default="auto")

    commands.add_parser("list", help="algorithms, data sets and models")
    report.add_parser(commands)
    bench.add_parser(commands)
    predict.add_parser(commands)
    export.add_parser(commands)
    crest_generations.add_parser(commands)
    return parser


def setup_logging() -> None:
    """Plain messages on stderr for the `semisup` logger."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("semisup")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


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


def command_train(args: argparse.Namespace) -> int:
    """`semisup train`: build, (resume,) fit, write summary.json.

    Under torchrun every rank runs this; rank 0 alone writes files and prints.
    """
    device = distributed.init_from_env()
    try:
        return _train(args, device)
    finally:
        distributed.shutdown()


def _train(args: argparse.Namespace, ddp_device: Any) -> int:
    from semisup.experiment import build_experiment, write_json, write_yaml

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
        if (run_dir / "checkpoint.pt").exists():
            raise UserError(
                f"{run_dir} already holds a run; continue it with --resume, or choose another --out"
            )
    if ddp_device is not None:
        cfg.train.device = str(ddp_device)
        cfg.train.progress = cfg.train.progress and main

    experiment = build_experiment(cfg, run_dir)
    trainer = experiment.trainer
    checkpoint = run_dir / "checkpoint.pt"
    if args.resume and checkpoint.exists():
        from semisup.engine.checkpoint import load_checkpoint

        trainer.load_state_dict(load_checkpoint(checkpoint, trainer.device))
        if main:  # drop evaluations logged after the checkpoint was written
            with open(run_dir / "metrics.jsonl", "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in trainer.history)
        log.info("resuming %s at step %d", run_dir, trainer.step)
    elif args.resume:
        log.info("no checkpoint in %s yet: starting its run from step 0", run_dir)
    if main:
        write_yaml(run_dir / "config.yaml", cfg.to_dict())
    data = experiment.data
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


def command_evaluate(args: argparse.Namespace) -> int:
    """`semisup evaluate RUN_DIR`: the EMA model's test metrics as JSON."""
    from semisup.engine.checkpoint import load_checkpoint
    from semisup.experiment import build_experiment

    run_dir = Path(args.run_dir)
    cfg = resume_config(run_dir, {"train.device": args.device, "train.progress": False})
    experiment = build_experiment(cfg, None)
    trainer = experiment.trainer
    state = load_checkpoint(run_dir / "checkpoint.pt", trainer.device)
    trainer.ema.load_state_dict(state["ema"])
    if experiment.data.test_images is None:
        raise UserError(f"the data set of {run_dir} has no test images to evaluate on")
    metrics = trainer.evaluate(trainer.ema.module)
    print(
        json.dumps(
            {
                "run_dir": str(run_dir),
                "step": state["step"],
                "test_accuracy": metrics["accuracy"],
                "test_balanced_accuracy": metrics["balanced_accuracy"],
                "per_class_accuracy": metrics["per_class_accuracy"],
            },
            indent=2,
        )
    )
    return 0


def command_list(args: argparse.Namespace) -> int:
    """`semisup list`: registered algorithms, data sets and models."""
    from semisup.algorithms import ALGORITHMS
    from semisup.data import DATASETS
    from semisup.models import MODELS

    def first_line(obj: object) -> str:
        return (obj.__doc__ or "").strip().splitlines()[0] if obj.__doc__ else ""

    for title, registry in (("algorithms", ALGORITHMS), ("datasets", DATASETS), ("models", MODELS)):
        print(f"{title}:")
        for name in registry.names():
            print(f"  {name:<16} {first_line(registry.get(name))}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; user errors become one `error: ...` line and exit status 2."""
    args = build_parser().parse_args(argv)
    setup_logging()
    handlers = {"train": command_train, "evaluate": command_evaluate, "list": command_list}
    try:
        return (handlers.get(args.command) or args.handler)(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
