"""`semisup bench SUITE`: the command-line side of benchmark suites."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from semisup.bench.runner import run_suite
from semisup.bench.suite import load_suite, shipped_suites
from semisup.bench.table import write_tables
from semisup.config import parse_assignments
from semisup.errors import UserError


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Registers `semisup bench` on the `semisup` subcommand parser."""
    parser = commands.add_parser(
        "bench",
        help="run a benchmark grid from a suite file and tabulate it beside published numbers",
        description=(
            "Runs every cell of a suite (algorithms x variants x data sets x label counts x "
            "seeds) as its own `semisup train` process, skipping finished cells and resuming "
            "interrupted ones, then writes results.md and results.csv in the output folder. "
            f"Shipped suites: {', '.join(shipped_suites())}."
        ),
    )
    parser.add_argument("suite", help="a shipped suite's name (e.g. cpu-small) or a YAML file")
    parser.add_argument("--out", help="output folder (default: runs/bench/<suite name>)")
    parser.add_argument("--only", metavar="REGEX", help="only cells whose id matches, e.g. 'mnist'")
    parser.add_argument("--dry-run", action="store_true", help="list the cells and their state")
    parser.add_argument(
        "--table-only", action="store_true", help="rebuild the tables from finished cells"
    )
    parser.add_argument(
        "--set",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="config keys for every cell, e.g. --set data.dir=../shared/datasets",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Runs, lists or tabulates a suite; exit status 1 if any cell failed."""
    suite = load_suite(args.suite, parse_assignments(args.set))
    root = Path(args.out) if args.out else Path("runs") / "bench" / suite.name
    cells = suite.cells
    if args.only:
        try:
            pattern = re.compile(args.only)
        except re.error as e:
            raise UserError(f"--only {args.only!r} is not a valid regular expression: {e}") from e
        cells = [c for c in cells if pattern.search(c.id)]
        if not cells:
            raise UserError(f"--only {args.only!r} matches none of the {len(suite.cells)} cells")
    failures = 0
    if not args.table_only:
        print(f"suite {suite.name} ({suite.path}): {len(cells)} cells -> {root}")
        failures = run_suite(suite, root, cells, dry_run=args.dry_run)
    if not args.dry_run:
        markdown, table = write_tables(suite, root)
        print(f"tables: {markdown} {table}")
    return 1 if failures else 0
