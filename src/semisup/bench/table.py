"""A suite's results table: error = 100 − median of the last 20 evaluations, mean ± std.

(20 is the papers' statistic; a suite of short runs can set `last_evaluations` lower, so that
the median covers the end of training rather than the whole run.)

Rows are algorithms (× variants), columns data set × label count, as in the seed papers'
tables; each row is followed by one row per published source that has numbers for it.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from semisup.bench.suite import Cell, Suite, check_cell
from semisup.files import write_text
from semisup.report.run_data import read_history

# The papers' statistic: median of the last 20 evaluations (docs/algorithms.md#evaluation).
LAST_N = 20


@dataclass(frozen=True)
class Outcome:
    """Where a cell stands, read from its run directory.

    Attributes:
        cell: the cell.
        status: "unavailable", "done", "partial" (checkpoint, not finished) or "missing".
        error: 100 − median of the last evaluations of `cell.metric`, in %, when done.
        wall_seconds: training time (summary.json) when done.
    """

    cell: Cell
    status: str
    error: float | None = None
    wall_seconds: float | None = None


def cell_steps(cell: Cell) -> int:
    """The number of steps the cell trains for, with every default and preset applied."""
    return check_cell(cell.keys).train.steps


def median_error(history: list[dict], metric: str, last: int = LAST_N) -> float | None:
    """100 − 100 · median of the last `last` logged values of `metric`; None if never logged."""
    values = [r[metric] for r in history if isinstance(r.get(metric), (int, float))]
    if not values:
        return None
    return 100.0 - 100.0 * statistics.median(values[-last:])


def read_outcome(cell: Cell, directory: Path, last: int = LAST_N) -> Outcome:
    """A cell's state: finished means summary.json holds the cell's full step count.

    The error is 100 − the median of the last `last` evaluations of `cell.metric`.
    """
    if cell.unavailable:
        return Outcome(cell, "unavailable")
    summary_path = directory / "summary.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        if summary.get("steps") == cell_steps(cell):
            history = read_history(directory / "metrics.jsonl")
            error = median_error(history, cell.metric, last)
            return Outcome(cell, "done", error, summary.get("wall_seconds"))
    if (directory / "checkpoint.pt").is_file():
        return Outcome(cell, "partial")
    return Outcome(cell, "missing")


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def _group(outcomes: list[Outcome], row: str, column: str) -> list[Outcome]:
    return [o for o in outcomes if o.cell.row_label == row and o.cell.column_label == column]


def _errors(group: list[Outcome]) -> list[float]:
    return [o.error for o in group if o.status == "done" and o.error is not None]


def _cell_text(group: list[Outcome]) -> str:
    if not group:
        return ""
    if all(o.status == "unavailable" for o in group):
        return "unavailable"
    errors = _errors(group)
    if not errors:
        return "–"
    text = _mean_std(errors)
    return text if len(errors) == len(group) else f"{text} ({len(errors)}/{len(group)} seeds)"


def _wall_text(group: list[Outcome]) -> str:
    walls = [o.wall_seconds for o in group if o.status == "done" and o.wall_seconds is not None]
    return f"{statistics.mean(walls) / 60:.1f}" if walls else ""


def _markdown_table(header: list[str], lines: list[list[str]]) -> str:
    rows = [header, ["---"] * len(header), *lines]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in rows) + "\n"


def render_markdown(suite: Suite, outcomes: list[Outcome]) -> str:
    """The error table with published numbers, then the wall-time table, as Markdown."""
    header = ["algorithm", *(c for c in suite.columns)]
    lines = []
    for row in suite.rows:
        lines.append([row, *(_cell_text(_group(outcomes, row, c)) for c in suite.columns)])
        for published in suite.published:
            values = published.values.get(row)
            if values:
                label = f"{row}, published: {published.source}"
                lines.append([label, *(values.get(c, "") for c in suite.columns)])
    walls = [
        [row, *(_wall_text(_group(outcomes, row, c)) for c in suite.columns)] for row in suite.rows
    ]
    seeds = sorted({o.cell.seed for o in outcomes})
    return (
        f"# {suite.name}: test error (%)\n\n"
        f"{suite.description}\n\n"
        "Ours: 100 − median of the EMA model's test accuracy (or the row's metric) over the "
        f"last {suite.last_evaluations} evaluations, "
        f"mean ± std (sample) over seeds {', '.join(map(str, seeds))}; `–`: no finished run "
        "yet; `unavailable`: the algorithm or a config key does not exist in this version. "
        "Published rows quote their source as given (see the source for its protocol).\n\n"
        + _markdown_table(header, lines)
        + "\n## Training time per cell (minutes, mean over finished seeds)\n\n"
        + _markdown_table(header, walls)
    )


def render_csv(suite: Suite, outcomes: list[Outcome]) -> str:
    """One line per table cell: our numbers, seeds, wall time and the published numbers."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(
        [
            "row",
            "column",
            "algorithm",
            "seeds_done",
            "seeds_total",
            "error_mean",
            "error_std",
            "errors",
            "wall_minutes_mean",
            "status",
            "published",
        ]
    )
    for row in suite.rows:
        for column in suite.columns:
            group = _group(outcomes, row, column)
            if not group:
                continue
            errors = _errors(group)
            published = "; ".join(
                f"{p.values[row][column]} ({p.source})"
                for p in suite.published
                if column in p.values.get(row, {})
            )
            statuses = sorted({o.status for o in group})
            writer.writerow(
                [
                    row,
                    column,
                    group[0].cell.keys.get("algorithm.name"),
                    len(errors),
                    len(group),
                    f"{statistics.mean(errors):.4f}" if errors else "",
                    f"{statistics.stdev(errors):.4f}" if len(errors) > 1 else "",
                    ";".join(f"{e:.4f}" for e in errors),
                    _wall_text(group),
                    "/".join(statuses),
                    published,
                ]
            )
    return buffer.getvalue()


def write_tables(suite: Suite, root: Path) -> tuple[Path, Path]:
    """Writes ROOT/results.md and ROOT/results.csv from the cells' run directories."""
    outcomes = [read_outcome(c, c.directory(root), suite.last_evaluations) for c in suite.cells]
    root.mkdir(parents=True, exist_ok=True)
    markdown, table = root / "results.md", root / "results.csv"
    write_text(markdown, render_markdown(suite, outcomes))
    write_text(table, render_csv(suite, outcomes))
    return markdown, table
