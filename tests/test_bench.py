from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import yaml

from semisup.algorithms import ALGORITHMS
from semisup.bench import load_suite, shipped_suites
from semisup.bench.suite import check_cell
from semisup.bench.table import Outcome, median_error, render_csv, render_markdown
from semisup.commands.cli import main
from semisup.engine.optim import learning_rate
from semisup.errors import UserError
from semisup.experiment import resolve_optim

TINY = {
    "name": "tiny",
    "description": "two 20-step digits cells",
    "seeds": [1],
    "base": {
        "train.steps": 20,
        "train.eval_every": 10,
        "train.batch_size": 16,
        "train.tensorboard": False,
    },
    "datasets": {"digits": {"set": {"data.name": "digits"}, "labels": [40]}},
    "algorithms": {"supervised": {}, "fixmatch": {}},
    "published": [
        {"source": "a paper", "values": {"fixmatch": {"digits-40": "1.23±0.45"}}},
    ],
}


def write_suite(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec, allow_unicode=True, sort_keys=False))
    return path


def test_every_shipped_suite_loads_with_unique_cell_ids():
    names = shipped_suites()
    assert {"cpu-small", "cifar10", "cifar100", "svhn", "stl10", "cifar10-lt"} <= set(names)
    assert "class-mismatch" in names
    for name in names:
        suite = load_suite(name)
        ids = [cell.id for cell in suite.cells]
        assert len(ids) == len(set(ids)), name
        for published in suite.published:  # published numbers sit in the suite's table
            assert set(published.values) <= set(suite.rows), (name, published.source)
            for columns in published.values.values():
                assert set(columns) <= set(suite.columns), (name, published.source)


def test_long_tail_suite_uses_crest_halfcos_schedule_as_the_udal_configs():
    configs = Path(__file__).resolve().parents[1] / "configs"
    udal = yaml.safe_load((configs / "udal_cifar10lt_100.yaml").read_text())
    assert udal["optim"]["cosine_factor"] == 0.0625
    suite = load_suite("cifar10-lt")
    assert {cell.keys["optim.cosine_factor"] for cell in suite.cells} == {0.0625}
    # CReST's 'halfcos' level 1: the rate ends at cos(π/16) = 0.98079 of its start
    settings = resolve_optim(check_cell(suite.cells[0].keys), ALGORITHMS.get("fixmatch"))
    assert learning_rate(settings, 65536, 65536) == pytest.approx(0.03 * 0.98078528, abs=1e-9)


def test_cpu_small_runs_only_registered_algorithms():
    suite = load_suite("cpu-small")
    assert all(cell.unavailable is None for cell in suite.cells)
    assert {"supervised", "fixmatch"} <= {cell.keys["algorithm.name"] for cell in suite.cells}


def test_unknown_algorithm_is_an_error_at_load_time(tmp_path):
    spec = {**TINY, "algorithms": {"fixmach": {}}}
    with pytest.raises(UserError, match=r"cell fixmach/digits-40/seed1: unknown algorithm"):
        load_suite(str(write_suite(tmp_path / "s.yaml", spec)))


def test_suites_that_allow_it_mark_unknown_algorithms_and_keys_unavailable(tmp_path):
    spec = {
        **TINY,
        "allow_unavailable": True,
        "algorithms": {"future": {}, "fixmatch": {"set": {"algorithm.no_such_switch": 1}}},
    }
    suite = load_suite(str(write_suite(tmp_path / "s.yaml", spec)))
    future, fixmatch = suite.cells
    assert "unknown algorithm 'future'" in future.unavailable
    assert "algorithm.no_such_switch" in fixmatch.unavailable
    assert "| future | unavailable |" in render_markdown(
        suite, [Outcome(c, "unavailable") for c in suite.cells]
    )


def test_config_layers_rules_variants_and_command_line_overrides(tmp_path):
    spec = {
        **TINY,
        "seeds": [1, 2],
        "variants": {"cta": {}, "plain": {"augment.strong": "none"}},
        "rules": [{"match": "^fixmatch@plain/.*/seed2$", "set": {"algorithm.threshold": 0.8}}],
    }
    suite = load_suite(str(write_suite(tmp_path / "s.yaml", spec)), {"train.steps": 30})
    cells = {cell.id: cell for cell in suite.cells}
    assert len(cells) == 2 * 2 * 2
    assert suite.rows == ["supervised@cta", "supervised@plain", "fixmatch@cta", "fixmatch@plain"]
    assert suite.columns == ["digits-40"]
    plain = cells["fixmatch@plain/digits-40/seed2"].keys
    assert plain["augment.strong"] == "none" and plain["algorithm.threshold"] == 0.8
    assert plain["train.seed"] == 2 and plain["data.num_labels"] == 40
    assert plain["train.steps"] == 30  # --set comes last
    assert "algorithm.threshold" not in cells["fixmatch@plain/digits-40/seed1"].keys
    assert "augment.strong" not in cells["fixmatch@cta/digits-40/seed2"].keys


def test_malformed_suites_say_what_is_wrong(tmp_path):
    with pytest.raises(UserError, match="unknown key 'algorithm'"):
        load_suite(str(write_suite(tmp_path / "a.yaml", {**TINY, "algorithm": {}})))
    no_columns = {**TINY, "datasets": {"digits": {"set": {"data.name": "digits"}}}}
    with pytest.raises(UserError, match="needs `labels"):
        load_suite(str(write_suite(tmp_path / "b.yaml", no_columns)))
    bad_rule = {**TINY, "rules": [{"set": {"train.steps": 5}}]}
    with pytest.raises(UserError, match="a rule needs `match: REGEX`"):
        load_suite(str(write_suite(tmp_path / "c.yaml", bad_rule)))
    with pytest.raises(UserError, match="no suite 'nope'.*cpu-small"):
        load_suite("nope")


def test_median_error_is_100_minus_the_median_of_the_last_20():
    history = [{"step": i, "test_accuracy": i / 100} for i in range(1, 26)]  # 0.01 .. 0.25
    history.append({"step": 26})  # an evaluation without the key is skipped
    # last 20 values: 0.06 .. 0.25, median (0.15 + 0.16) / 2
    assert median_error(history, "test_accuracy") == pytest.approx(100 - 15.5)
    assert median_error(history, "test_accuracy_la") is None
    # a suite's last_evaluations: the median of the last 3 values, 0.23 .. 0.25
    assert median_error(history, "test_accuracy", last=3) == pytest.approx(100 - 24)


def test_table_has_mean_and_std_over_seeds_and_the_published_row(tmp_path):
    suite = load_suite(str(write_suite(tmp_path / "s.yaml", {**TINY, "seeds": [1, 2, 3]})))
    outcomes = []
    for cell in suite.cells:
        if cell.row == "fixmatch":
            outcomes.append(Outcome(cell, "done", {1: 10.0, 2: 12.0, 3: 17.0}[cell.seed], 120))
        else:
            error = 40.0 if cell.seed == 1 else None
            outcomes.append(Outcome(cell, "done" if error else "missing", error, 60))
    markdown = render_markdown(suite, outcomes)
    std = statistics.stdev([10.0, 12.0, 17.0])
    assert f"| fixmatch | 13.00 ± {std:.2f} |" in markdown
    assert "| fixmatch, published: a paper | 1.23±0.45 |" in markdown
    assert "| supervised | 40.00 (1/3 seeds) |" in markdown
    assert "| fixmatch | 2.0 |" in markdown  # wall time: 120 s
    lines = render_csv(suite, outcomes).splitlines()
    assert lines[0].startswith("row,column,algorithm,seeds_done")
    assert lines[2].startswith(f"fixmatch,digits-40,fixmatch,3,3,13.0000,{std:.4f}")
    assert lines[2].endswith("1.23±0.45 (a paper)")


def test_only_that_matches_nothing_is_an_error(tmp_path):
    suite = write_suite(tmp_path / "s.yaml", TINY)
    assert main(["bench", str(suite), "--only", "^nothing", "--out", str(tmp_path)]) == 2


def test_tiny_suite_runs_resumes_and_tabulates(tmp_path, capsys):
    suite = write_suite(tmp_path / "tiny.yaml", TINY)
    out = tmp_path / "out"
    assert main(["bench", str(suite), "--out", str(out), "--dry-run"]) == 0
    assert "[2/2] fixmatch/digits-40/seed1: would start" in capsys.readouterr().out

    assert main(["bench", str(suite), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("running ... done in") == 2
    for row in ("supervised", "fixmatch"):
        cell = out / row / "digits-40" / "seed1"
        assert json.loads((cell / "summary.json").read_text())["steps"] == 20
        assert (cell / "cell.yaml").is_file() and (cell / "metrics.jsonl").is_file()
        assert not (cell / "report.html").exists()  # cells train with --no-report
    markdown = (out / "results.md").read_text()
    fixmatch_line = next(line for line in markdown.splitlines() if line.startswith("| fixmatch |"))
    assert fixmatch_line.split("|")[2].strip()[0].isdigit()  # an error rate
    assert (out / "results.csv").read_text().count("\n") == 3

    # finished cells are skipped
    assert main(["bench", str(suite), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "supervised/digits-40/seed1: done (error" in printed
    assert "fixmatch/digits-40/seed1: done (error" in printed

    # a suite whose cell config changed leaves the started cell alone
    base = {**TINY["base"], "train.eval_every": 5}
    changed = write_suite(tmp_path / "tiny.yaml", {**TINY, "base": base})
    (out / "supervised" / "digits-40" / "seed1" / "summary.json").unlink()
    assert main(["bench", str(changed), "--out", str(out), "--only", "supervised"]) == 0
    assert "changed this cell's config" in capsys.readouterr().out

    assert main(["bench", str(suite), "--out", str(out), "--table-only"]) == 0
    assert "results.md" in capsys.readouterr().out


@pytest.mark.slow
def test_an_unfinished_cell_continues_from_its_checkpoint(tmp_path, capsys):
    spec = {**TINY, "algorithms": {"fixmatch": {}}}
    suite, out = write_suite(tmp_path / "tiny.yaml", spec), tmp_path / "out"
    assert main(["bench", str(suite), "--out", str(out)]) == 0
    cell = out / "fixmatch" / "digits-40" / "seed1"
    expected = json.loads((cell / "summary.json").read_text())["median_last20_accuracy"]
    (cell / "summary.json").unlink()  # as if the process died after its last checkpoint
    capsys.readouterr()
    assert main(["bench", str(suite), "--out", str(out)]) == 0
    assert "fixmatch/digits-40/seed1: resuming ... done" in capsys.readouterr().out
    assert json.loads((cell / "summary.json").read_text())["median_last20_accuracy"] == expected
    assert (cell / "train.log").read_text().count("--resume") == 1


def test_a_crashing_cell_is_reported_and_the_suite_goes_on(tmp_path, capsys):
    missing_data = {"data.name": "mnist", "data.download": False, "data.dir": str(tmp_path)}
    spec = {
        **TINY,
        "datasets": {"mnist": {"set": missing_data, "labels": [40]}},
        "algorithms": {"supervised": {}},
        "seeds": [1, 2],
        "published": [],
    }
    suite = write_suite(tmp_path / "s.yaml", spec)
    assert main(["bench", str(suite), "--out", str(tmp_path / "out")]) == 1
    printed = capsys.readouterr().out
    assert printed.count("failed (exit 2)") == 2
    assert "| supervised | – |" in (tmp_path / "out" / "results.md").read_text()


def test_rows_with_the_same_config_share_one_training(tmp_path, capsys):
    spec = {
        **TINY,
        "algorithms": {
            "supervised": {},
            "supervised-balanced": {"algorithm": "supervised", "metric": "test_balanced_accuracy"},
        },
        "published": [],
    }
    suite = load_suite(str(write_suite(tmp_path / "tiny.yaml", spec)))
    plain, balanced = suite.cells
    assert (plain.shares, balanced.shares) == (None, "supervised/digits-40/seed1")
    assert balanced.directory(tmp_path) == tmp_path / "supervised" / "digits-40" / "seed1"

    out = tmp_path / "out"
    assert main(["bench", str(suite.path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("running ... done in") == 1
    assert "supervised-balanced/digits-40/seed1 (the run of supervised/digits-40/seed1): done" in (
        printed
    )
    assert not (out / "supervised-balanced").exists()
    history = [
        json.loads(line) for line in (out / plain.id / "metrics.jsonl").read_text().splitlines()
    ]
    rows = {
        line.split(",")[0]: line.split(",") for line in (out / "results.csv").read_text().split()
    }
    for row, metric in (
        ("supervised", "test_accuracy"),
        ("supervised-balanced", "test_balanced_accuracy"),
    ):
        expected = median_error(history, metric)
        assert float(rows[row][5]) == pytest.approx(expected, abs=1e-4)
