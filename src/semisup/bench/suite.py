"""Benchmark suites: a YAML grid of algorithms × variants × data sets × label counts × seeds.

A suite file (src/semisup/suites/*.yaml, or any path) has these keys:

    name: cpu-small
    description: what the suite reproduces, and its budget
    seeds: [1, 2, 3]                     # train.seed (the labeled split follows it)
    base: {train.steps: 2000, ...}       # config keys of every cell (dotted, as --set)
    algorithms:                          # table rows, one line each
      supervised: {}                     #   row name = algorithm name
      fixmatch-ra: {algorithm: fixmatch, set: {augment.strong: randaugment}}
      udal-la: {algorithm: udal, metric: test_accuracy_la}   # report another accuracy key
    variants:                            # optional axis of named config changes (ablations)
      cta: {}
      no-strong: {augment.strong: none}
    datasets:                            # column groups
      mnist: {set: {data.name: mnist}, labels: [40, 250]}          # a column per label count
      c10lt: {set: {...}, columns: {"γ=100": {data.imbalance_ratio: 100}}}  # named columns
    rules:                               # optional: keys for the cells whose id matches
      - {match: "^remixmatch/cifar10-40/", set: {algorithm.lambda_rotation: 2.0}}
    last_evaluations: 20                 # error = 100 − median of the last N evaluations
    published:                           # published error (%) beside ours, per source
      - source: "FixMatch paper, Table 2 (error %, 5 folds)"
        values: {fixmatch: {cifar10-40: "13.81±3.37"}}
    allow_unavailable: false             # true: cells whose algorithm or keys do not exist
                                         # (yet) are marked unavailable instead of an error

A cell's id is ROW[@VARIANT]/DATASET-COLUMN/seedN; it is also its run directory under the
suite's output root. Cell configs are layered: base, data set, column, row, variant, rules in
order, the seed, then the command line's --set pairs.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from semisup.config import Config, build_config, resolve_kwargs
from semisup.errors import UserError

TOP_KEYS = {
    "name",
    "description",
    "seeds",
    "base",
    "algorithms",
    "variants",
    "datasets",
    "rules",
    "published",
    "allow_unavailable",
    "last_evaluations",
}
# Keys that say where and how a cell runs, not what it computes: changing them (e.g. with
# `--set train.device=cuda`) does not make a started cell's config "changed".
PLACEMENT_KEYS = {
    "data.dir",
    "data.download",
    "data.mirror",
    "train.device",
    "train.progress",
    "train.eval_batch_size",
    "train.tensorboard",
}


@dataclass(frozen=True)
class Cell:
    """One run of the grid.

    Attributes:
        row: the table row (algorithm entry name).
        variant: the variant name, or "" when the suite has no variants.
        dataset: the data set entry name.
        column: the column name within the data set (e.g. "40").
        seed: train.seed.
        keys: the cell's config keys (dotted), before the command line's --set pairs.
        metric: the metrics.jsonl accuracy key the table reports (e.g. test_accuracy_la).
        unavailable: why the cell cannot run here (unknown algorithm or key), or None.
        shares: the id of an earlier cell with the same config keys, whose run this cell reads
            (a row that only reports another metric of the same training), or None.
    """

    row: str
    variant: str
    dataset: str
    column: str
    seed: int
    keys: dict[str, Any]
    metric: str = "test_accuracy"
    unavailable: str | None = None
    shares: str | None = None

    @property
    def row_label(self) -> str:
        """ROW or ROW@VARIANT: the table row this cell belongs to."""
        return f"{self.row}@{self.variant}" if self.variant else self.row

    @property
    def column_label(self) -> str:
        """DATASET-COLUMN: the table column this cell belongs to."""
        return f"{self.dataset}-{self.column}"

    @property
    def id(self) -> str:
        """ROW[@VARIANT]/DATASET-COLUMN/seedN, also the run directory under the output root."""
        return f"{self.row_label}/{self.column_label}/seed{self.seed}"

    def directory(self, root: Path) -> Path:
        """The run directory this cell trains in or reads: its own, or the shared cell's."""
        return root / (self.shares or self.id)


@dataclass(frozen=True)
class Published:
    """Published numbers of one source: {row label: {column label: "mean±std" or number}}."""

    source: str
    values: dict[str, dict[str, str]]


@dataclass(frozen=True)
class Suite:
    """A parsed suite: its grid expanded into cells, in run order."""

    name: str
    description: str
    path: Path
    cells: list[Cell]
    rows: list[str]  # row labels in table order
    columns: list[str]  # column labels in table order
    published: list[Published] = field(default_factory=list)
    last_evaluations: int = 20  # the table's error: 100 − median of this many last evaluations


def shipped_suites() -> list[str]:
    """Names of the suites that ship inside the package."""
    folder = resources.files("semisup") / "suites"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def find_suite(name_or_path: str) -> Path:
    """A suite file: an existing path, or the name of a shipped suite."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = resources.files("semisup") / "suites" / f"{name_or_path}.yaml"
    if shipped.is_file():
        return Path(str(shipped))
    raise UserError(
        f"no suite '{name_or_path}': not a file, and not one of the shipped suites "
        f"({', '.join(shipped_suites())})"
    )


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError(f"{where} must be a mapping, got {value!r}")
    return value


def _flat_keys(value: Any, where: str) -> dict[str, Any]:
    """Config keys given flat ({train.steps: 1}) or nested ({train: {steps: 1}})."""
    flat: dict[str, Any] = {}
    for key, item in _mapping(value, where).items():
        if isinstance(item, dict) and "." not in str(key):
            flat.update({f"{key}.{k}": v for k, v in item.items()})
        else:
            flat[str(key)] = item
    return flat


def _columns(name: str, entry: dict[str, Any]) -> dict[str, dict[str, Any]]:
    where = f"datasets.{name}"
    columns = {str(n): {"data.num_labels": n} for n in entry.get("labels") or []}
    for column, keys in _mapping(entry.get("columns"), f"{where}.columns").items():
        columns[str(column)] = _flat_keys(keys, f"{where}.columns.{column}")
    if not columns:
        raise UserError(f"{where} needs `labels: [...]` or `columns: {{...}}`")
    return columns


def _rule(rule: dict[str, Any]) -> tuple[re.Pattern[str], dict[str, Any]]:
    if "match" not in rule:
        raise UserError(f"a rule needs `match: REGEX` (a regular expression on cell ids): {rule}")
    try:
        pattern = re.compile(str(rule["match"]))
    except re.error as e:
        message = f"rule match {rule['match']!r} is not a valid regular expression: {e}"
        raise UserError(message) from e
    return pattern, _flat_keys(rule.get("set"), f"rule {rule['match']!r}")


def check_cell(keys: dict[str, Any]) -> Config:
    """Builds and validates a cell's config.

    Checks known keys, right types, and a registered algorithm whose arguments exist; raises a
    UserError otherwise.
    """
    from semisup.algorithms import ALGORITHMS

    cfg = build_config(None, keys)
    algorithm = ALGORITHMS.get(cfg.algorithm["name"])
    resolve_kwargs(algorithm, cfg.algorithm, "algorithm", ("model", "info"))
    return cfg


def load_suite(name_or_path: str, overrides: dict[str, Any] | None = None) -> Suite:
    """Reads, expands and validates a suite.

    Args:
        name_or_path: a shipped suite's name or a YAML file.
        overrides: config keys applied to every cell last (the command line's --set).

    Raises:
        UserError: malformed suite, or (unless `allow_unavailable`) a cell that cannot run.
    """
    path = find_suite(name_or_path)
    try:
        spec = _mapping(yaml.safe_load(path.read_text()), str(path))
    except yaml.YAMLError as e:
        raise UserError(f"suite {path} is not valid YAML: {e}") from e
    unknown = sorted(set(spec) - TOP_KEYS)
    if unknown:
        raise UserError(f"suite {path}: unknown key '{unknown[0]}'; valid: {sorted(TOP_KEYS)}")
    for required in ("algorithms", "datasets", "seeds"):
        if not spec.get(required):
            raise UserError(f"suite {path} needs a non-empty `{required}`")

    base = _flat_keys(spec.get("base"), "base")
    rows = {}
    for row, entry in _mapping(spec["algorithms"], "algorithms").items():
        entry = _mapping(entry, f"algorithms.{row}")
        keys = {"algorithm.name": entry.get("algorithm", row)}
        keys.update(_flat_keys(entry.get("set"), f"algorithms.{row}.set"))
        rows[str(row)] = (keys, str(entry.get("metric", "test_accuracy")))
    variants = {
        str(n): _flat_keys(v, f"variants.{n}")
        for n, v in _mapping(spec.get("variants"), "variants").items()
    } or {"": {}}
    datasets = {
        str(n): (
            _flat_keys(_mapping(e, f"datasets.{n}").get("set"), f"datasets.{n}.set"),
            _columns(str(n), _mapping(e, f"datasets.{n}")),
        )
        for n, e in _mapping(spec["datasets"], "datasets").items()
    }
    rules = [_rule(_mapping(rule, "rules[]")) for rule in spec.get("rules") or []]
    allow_unavailable = bool(spec.get("allow_unavailable", False))

    cells = []
    checked: dict[str, str | None] = {}  # problems found, by the cell's keys without its seed
    for dataset, (dataset_keys, columns) in datasets.items():
        for column, column_keys in columns.items():
            for row, (row_keys, metric) in rows.items():
                for variant, variant_keys in variants.items():
                    for seed in spec["seeds"]:
                        cell_id = Cell(row, variant, dataset, column, int(seed), {}).id
                        keys = {**base, **dataset_keys, **column_keys, **row_keys, **variant_keys}
                        for pattern, rule_keys in rules:
                            if pattern.search(cell_id):
                                keys.update(rule_keys)
                        keys.update({"train.seed": int(seed), "train.progress": False})
                        keys.update(overrides or {})
                        cell = Cell(row, variant, dataset, column, int(seed), keys, metric)
                        cells.append(_validated(cell, allow_unavailable, path, checked))
    cells = _share_identical_runs(cells)
    published = [
        Published(
            str(p["source"]),
            {
                str(r): {str(c): str(v) for c, v in _mapping(cols, "published values").items()}
                for r, cols in _mapping(p.get("values"), "published values").items()
            },
        )
        for p in spec.get("published") or []
    ]
    last = spec.get("last_evaluations", 20)
    if not isinstance(last, int) or isinstance(last, bool) or last < 1:
        raise UserError(f"suite {path}: last_evaluations must be a positive integer, got {last!r}")
    return Suite(
        name=str(spec.get("name", path.stem)),
        description=str(spec.get("description", "")).strip(),
        path=path,
        cells=cells,
        rows=list(dict.fromkeys(c.row_label for c in cells)),
        columns=list(dict.fromkeys(c.column_label for c in cells)),
        published=published,
        last_evaluations=last,
    )


def _share_identical_runs(cells: list[Cell]) -> list[Cell]:
    """Points each cell whose config keys equal an earlier cell's at that cell's run.

    Such rows differ only in the metric they report (e.g. UDAL with and without logit
    adjustment at inference), so one training serves both.
    """
    first: dict[str, str] = {}
    shared = []
    for cell in cells:
        signature = repr(sorted((k, repr(v)) for k, v in cell.keys.items()))
        owner = first.setdefault(signature, cell.id)
        shared.append(cell if owner == cell.id else dataclasses.replace(cell, shares=owner))
    return shared


def _validated(cell: Cell, allow_unavailable: bool, path: Path, checked: dict) -> Cell:
    """The cell, checked (once per set of keys that differ only in the seed)."""
    signature = repr(sorted((k, repr(v)) for k, v in cell.keys.items() if k != "train.seed"))
    if signature not in checked:
        try:
            check_cell(cell.keys)
            checked[signature] = None
        except UserError as e:
            checked[signature] = str(e)
    problem = checked[signature]
    if problem is None:
        return cell
    if not allow_unavailable:
        raise UserError(f"suite {path}, cell {cell.id}: {problem}")
    return dataclasses.replace(cell, unavailable=problem)
