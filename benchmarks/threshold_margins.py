"""Spread of the test suite's thresholds on learned behaviour: seeds, torch threads, precision.

Each test in DEFAULT_TESTS and SLOW_TESTS asserts an accuracy (or another learned behaviour) of
a short training run against a number, e.g. `assert summary["test_accuracy_raw"] > 0.5`. Kernels
round differently from one CPU to the next, so such a number has to sit well inside the spread of
the run. This script reruns those tests under every variant of

- the seed (`train.seed` of every run the test builds; it also draws the labeled split),
- 1 or 2 torch threads and fp32 or bf16 autocast (the suite's own `SEMISUP_TEST_THREADS` and
  `SEMISUP_TEST_PRECISION`, see tests/conftest.py; on CPUs without native bf16 the bf16 kernels
  are emulated, slowly, but round to the same 8-bit mantissa),

and prints, for every `assert VALUE OP NUMBER` in those tests, the value under each variant and
the smallest margin to the number:

    python benchmarks/threshold_margins.py --seeds 0 1 2 3 4 --json margins.json
    python benchmarks/threshold_margins.py --tests test_vat test_uda --precisions fp32

It runs pytest once per variant with this file as a plugin (`-p threshold_margins`): the plugin
sets the seed and records the comparisons through pytest's assertion hooks, passing or failing.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SEED_VARIABLE = "THRESHOLD_MARGINS_SEED"
OUT_VARIABLE = "THRESHOLD_MARGINS_OUT"
DEFAULT_TESTS = (
    "tests/algorithms/test_dash.py::test_short_digits_run_beats_chance",
    "tests/algorithms/test_meanteacher.py::test_short_digits_run_beats_chance",
    "tests/algorithms/test_pimodel.py::test_short_digits_run_beats_chance",
    "tests/algorithms/test_pseudolabel.py::test_short_digits_run_beats_chance",
    "tests/algorithms/test_uda.py::test_short_digits_run_beats_chance",
    "tests/algorithms/test_vat.py::test_short_digits_run_beats_chance",
    "tests/test_export.py::test_onnx_and_pt2_outputs_equal_pytorch_on_real_images",
    "tests/test_inference.py::test_load_matches_the_trainers_ema_model",
)
SLOW_TESTS = (  # marked slow: not in the default run
    "tests/algorithms/test_comatch.py::test_short_digits_run_beats_chance",
    "tests/algorithms/test_crest.py::test_crest_plus_on_long_tailed_digits_beats_chance",
    "tests/algorithms/test_darp.py::test_short_long_tailed_digits_run_beats_chance",
    "tests/algorithms/test_mixmatch.py::test_short_run_on_digits_beats_chance",
    "tests/algorithms/test_realmix.py::test_short_digits_run_beats_chance",
    "tests/algorithms/test_remixmatch.py::test_short_run_on_digits_beats_chance",
    "tests/algorithms/test_simmatch.py::test_short_digits_run_beats_chance",
    "tests/algorithms/test_udal.py::test_short_long_tailed_digits_run_beats_chance",
)
NUMBER = r"-?\d+(?:\.\d+)?(?:e-?\d+)?"
THRESHOLD_ASSERT = re.compile(rf"(>=|>|<=|<)\s*{NUMBER}\s*$")  # `... OP 0.5`
COMPARED = re.compile(rf"^(?:assert )?({NUMBER}) (>=|>|<=|<) ({NUMBER})$")  # `0.62 >= 0.5`


# -- the pytest plugin (runs inside each variant's pytest process) --------------------------------


def pytest_configure(config: pytest.Config) -> None:
    """Gives every run built by a test the variant's `train.seed`."""
    from semisup import experiment

    seed = int(os.environ[SEED_VARIABLE])
    resolve = experiment.resolve_runtime

    def seeded(train: Any, device: Any) -> Any:
        train.seed = seed
        return resolve(train, device)

    experiment.resolve_runtime = seeded


def _record(item: pytest.Item, line: int, statement: str, compared: str) -> None:
    statement = statement.split("  #")[0].strip()  # without a trailing comment
    match = COMPARED.match(compared.strip())
    if not THRESHOLD_ASSERT.search(statement) or match is None:
        return
    value, op, threshold = match.groups()
    record = {"test": item.nodeid, "line": line, "statement": statement, "op": op}
    record.update(value=float(value), threshold=float(threshold))
    with open(os.environ[OUT_VARIABLE], "a") as out:
        out.write(json.dumps(record) + "\n")


def pytest_assertion_pass(item: pytest.Item, lineno: int, orig: str, expl: str) -> None:
    _record(item, lineno, orig.strip(), expl.splitlines()[0])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    if call.excinfo is not None and call.excinfo.errisinstance(AssertionError):
        entry = next(e for e in reversed(call.excinfo.traceback) if e.path == item.path)
        statement = str(entry.statement).strip().removeprefix("assert ")
        _record(item, entry.lineno + 1, statement, str(call.excinfo.value).splitlines()[0])
    yield


# -- the driver ----------------------------------------------------------------------------------


def run_variant(tests: list[str], seed: int, threads: int, precision: str) -> list[dict]:
    """Runs `tests` under one variant; returns the recorded comparisons."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "records.jsonl"
        out.touch()
        env = {
            **os.environ,
            SEED_VARIABLE: str(seed),
            OUT_VARIABLE: str(out),
            "SEMISUP_TEST_THREADS": str(threads),
            "SEMISUP_TEST_PRECISION": precision,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "benchmarks")]),
            "PYTHONPYCACHEPREFIX": tmp,  # asserts rewritten afresh, with the pass hook
        }
        command = [sys.executable, "-m", "pytest", *tests, "-p", "threshold_margins"]
        command += ["-m", "slow or not slow", "-o", "enable_assertion_pass_hook=true"]
        command += ["-q", "-p", "no:cacheprovider"]
        subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, check=False)
        records = [json.loads(line) for line in out.read_text().splitlines()]
    for record in records:
        record.update(seed=seed, threads=threads, precision=precision)
    return records


def margin(record: dict) -> float:
    """How far the value is on the passing side of the threshold (negative: the test failed)."""
    signed = record["value"] - record["threshold"]
    return signed if record["op"].startswith(">") else -signed


def summarise(records: list[dict]) -> str:
    """Per assertion: values by variant, then the spread and the smallest margin."""
    lines = []
    by_assertion: dict[tuple[str, int], list[dict]] = {}
    for record in records:
        by_assertion.setdefault((record["test"], record["line"]), []).append(record)
    table = [
        "| test | assertion | seed 0: threads × precision | all variants | mean ± sd "
        "| smallest margin | (mean − threshold) / sd |",
        "|---|---|---|---|---|---|---|",
    ]
    for (test, line), group in sorted(by_assertion.items()):
        first = group[0]
        lines.append(f"\n{test}:{line}  assert {first['statement']}")
        seeds = sorted({r["seed"] for r in group})
        lines.append(f"{'':18}" + "".join(f"seed {s:<4}" for s in seeds))
        for setting in sorted({(r["threads"], r["precision"]) for r in group}):
            values = {
                r["seed"]: r["value"] for r in group if (r["threads"], r["precision"]) == setting
            }
            cells = "".join(f"{values[s]:<9.4g}" if s in values else f"{'-':9}" for s in seeds)
            lines.append(f"  {setting[0]} thr. {setting[1]:6}  {cells}")
        worst = min(group, key=margin)
        failed = sum(margin(r) < 0 or (margin(r) == 0 and r["op"] in ("<", ">")) for r in group)
        lines.append(
            f"  smallest margin {margin(worst):+.4g} (seed {worst['seed']}, {worst['threads']} "
            f"thr. {worst['precision']}); below the threshold in {failed}/{len(group)} variants"
        )
        values = [r["value"] for r in group]
        mean = statistics.mean(values)
        sd = statistics.stdev(values) if len(values) > 1 else float("nan")
        distance = statistics.mean(margin(r) for r in group) / sd if sd > 0 else float("inf")
        seed0 = [r["value"] for r in group if r["seed"] == 0]
        table.append(
            f"| {test.split('::')[0].rsplit('/', 1)[-1]}:{line} | `{first['statement']}` | "
            f"{_range(seed0)} | {_range(values)} | {mean:.3g} ± {sd:.2g} | {margin(worst):+.3g} "
            f"| {distance:.1f} |"
        )
    return "\n".join([*lines, "", *table])


def _range(values: list[float]) -> str:
    return f"{min(values):.3g}–{max(values):.3g}" if values else "–"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--tests", nargs="+", help="only tests whose id contains one of these")
    parser.add_argument("--no-slow", action="store_true", help="only the default run's tests")
    parser.add_argument("--json", type=Path, help="append every record to this JSON-lines file")
    parser.add_argument("--summarise", type=Path, help="only summarise a --json file of records")
    args = parser.parse_args()
    if args.summarise:
        print(summarise([json.loads(line) for line in args.summarise.read_text().splitlines()]))
        return
    candidates = DEFAULT_TESTS if args.no_slow else DEFAULT_TESTS + SLOW_TESTS
    tests = [t for t in candidates if not args.tests or any(k in t for k in args.tests)]
    records = []
    for precision, threads, seed in itertools.product(args.precisions, args.threads, args.seeds):
        start = time.perf_counter()
        found = run_variant(tests, seed, threads, precision)
        seconds = time.perf_counter() - start
        print(
            f"seed {seed}, {threads} thread(s), {precision}: {len(found)} comparisons in "
            f"{seconds:.0f} s",
            flush=True,
        )
        records += found
        if args.json:
            with args.json.open("a") as out:
                out.writelines(json.dumps(r) + "\n" for r in found)
    print(summarise(records))


if __name__ == "__main__":
    main()
