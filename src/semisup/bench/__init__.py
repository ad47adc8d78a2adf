"""Benchmark suites: `semisup bench SUITE` runs a grid of runs and tabulates their errors."""

from semisup.bench.command import add_parser, run
from semisup.bench.suite import Cell, Suite, load_suite, shipped_suites

__all__ = ["Cell", "Suite", "add_parser", "load_suite", "run", "shipped_suites"]
