"""`semisup report RUN_DIR`: the command-line side of the run report."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("semisup")


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Registers `semisup report` on the `semisup` subcommand parser."""
    parser = commands.add_parser(
        "report", help="write RUN_DIR/report.html: plots of a run (also made after training)"
    )
    parser.add_argument("run_dir", help="a run directory (the --out of `semisup train`)")
    parser.add_argument("--out", help="where to write the HTML (default: RUN_DIR/report.html)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Writes the report and prints its path."""
    from semisup.report.page import write_report

    print(write_report(args.run_dir, args.out))
    return 0


def report_after_training(run_dir: Path) -> None:
    """Writes RUN_DIR/report.html at the end of `semisup train`; a failure only warns.

    The run is already saved when this runs: a missing plotting library or a bad record must
    never turn a finished run into a failed command.
    """
    try:
        from semisup.report.page import write_report

        path = write_report(run_dir)
    except Exception as e:  # noqa: BLE001 (any report error becomes a warning)
        log.warning("warning: the run report could not be written (%s: %s)", type(e).__name__, e)
        return
    log.info("report: %s", path)
