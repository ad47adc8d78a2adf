"""Per-seed accuracy gap between two rows of a `semisup bench` results.csv.

Both rows run on the same labeled split for a given seed (the split follows train.seed), so
the gap of each seed is a paired difference. Prints a Markdown table: per column, each seed's
accuracies and gap, then the median and range of the gaps.

    python benchmarks/gap.py runs/bench/cpu-small/results.csv fixmatch supervised
"""

from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path


def per_seed_errors(path: Path) -> dict[tuple[str, str], list[float]]:
    """(row, column) -> the finished seeds' errors in %, in seed order."""
    with path.open() as f:
        return {
            (r["row"], r["column"]): [float(e) for e in r["errors"].split(";") if e]
            for r in csv.DictReader(f)
        }


def gap_table(errors: dict[tuple[str, str], list[float]], row: str, baseline: str) -> str:
    """Markdown: accuracy of `row`, of `baseline`, and their paired gap, per column."""
    columns = [c for r, c in errors if r == row and errors.get((baseline, c))]
    lines = [
        f"| column | {row} accuracy % (per seed) | {baseline} accuracy % (per seed) "
        "| gap, points (per seed) | gap median [min, max] |",
        "|---|---|---|---|---|",
    ]
    for column in columns:
        ours, base = errors[(row, column)], errors[(baseline, column)]
        # `semisup bench` runs seeds in order, so the first k errors of both rows are seeds 1..k
        pairs = list(zip(ours, base, strict=False))
        if not pairs:
            continue
        gaps = [b - a for a, b in pairs]  # error difference = accuracy difference
        lines.append(
            f"| {column} | {', '.join(f'{100 - a:.2f}' for a, _ in pairs)} "
            f"| {', '.join(f'{100 - b:.2f}' for _, b in pairs)} "
            f"| {', '.join(f'{g:.2f}' for g in gaps)} "
            f"| {statistics.median(gaps):.2f} [{min(gaps):.2f}, {max(gaps):.2f}] |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_csv", type=Path)
    parser.add_argument("row", help="the row to compare, e.g. fixmatch")
    parser.add_argument("baseline", help="the baseline row, e.g. supervised")
    args = parser.parse_args()
    print(gap_table(per_seed_errors(args.results_csv), args.row, args.baseline), end="")


if __name__ == "__main__":
    main()
