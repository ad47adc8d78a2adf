"""The `semisup` command: train, evaluate, list."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from semisup import bench, report
from semisup.commands import crest_generations, export, predict, process, train
from semisup.commands.rundir import resume_config
from semisup.errors import UserError
from semisup.run_files import check_checkpoint_fits

log = logging.getLogger("semisup")


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
    train.add_argument(
        "--time", help="wall-clock budget, e.g. 90s, 20m or 1.5h: sizes the run to it"
    )
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
        "--init-from",
        metavar="RUN_DIR",
        help="start from the EMA weights of an earlier run (its model and image size unless set; "
        "a new classifier when the classes differ); same as --set model.pretrained=RUN_DIR",
    )
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


def command_evaluate(args: argparse.Namespace) -> int:
    """`semisup evaluate RUN_DIR`: the EMA model's test metrics as JSON."""
    from semisup.engine.checkpoint import load_checkpoint
    from semisup.experiment import build_trainer

    run_dir = Path(args.run_dir)
    cfg = resume_config(run_dir, {"train.device": args.device, "train.progress": False})
    trainer = build_trainer(cfg, None, pretrained=False)
    state = load_checkpoint(run_dir / "checkpoint.pt", trainer.device)
    check_checkpoint_fits(state, trainer, run_dir / "checkpoint.pt")
    trainer.ema.load_state_dict(state["ema"])
    if trainer.data.test_images is None:
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
    print(f"  {'timm:<name>':<16} any timm architecture, e.g. timm:resnet18 (pip install timm)")
    return 0


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt, as Ctrl-C does (training defers both to a step's end)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _silence_stdout() -> None:
    """Points stdout at /dev/null, so that the exit's flush of a closed pipe raises nothing."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def main(argv: list[str] | None = None) -> int:
    """Entry point; user errors become one `error: ...` line and exit status 2.

    Ctrl-C and SIGTERM print one line and exit with 130; a closed output pipe (`| head`) ends
    the command quietly with 141, as SIGPIPE ends other tools.
    """
    args = build_parser().parse_args(argv)
    setup_logging()
    process.tune_allocator()
    handlers = {"train": train.run, "evaluate": command_evaluate, "list": command_list}
    try:
        with terminate_as_interrupt():
            return (handlers.get(args.command) or args.handler)(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"interrupted{f': {e}' if str(e) else ''}", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return 141


if __name__ == "__main__":
    sys.exit(main())
