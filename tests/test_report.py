from __future__ import annotations

import html
import json
import logging
import math
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from semisup.commands.cli import main
from semisup.errors import UserError
from semisup.report import kl_divergence, load_run, report_after_training
from semisup.report.page import render, write_report
from semisup.report.plots import (
    PHASE_LABEL,
    PHASE_LOSS_LABEL,
    PLOTS,
    accuracy_plot,
    distribution_plot,
    kl_plot,
    losses_plot,
    pseudo_label_plot,
)

PLOT_IDS = [plot_id for plot_id, *_ in PLOTS]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def digits_config(algorithm: str = "fixmatch") -> dict:
    return {
        "algorithm": {"name": algorithm},
        "model": {"name": "cnn"},
        "data": {"name": "digits", "num_labels": 40},
        "train": {"steps": 300, "seed": 0},
    }


def write_run(
    run_dir: Path,
    *,
    semi_supervised: bool = True,
    test_set: bool = True,
    finished: bool = True,
    evaluations: int = 4,
) -> Path:
    """A run directory with hand-made metrics.jsonl / summary.json / config.yaml."""
    run_dir.mkdir(parents=True)
    records = []
    for i in range(1, evaluations + 1):
        record: dict = {"step": 25 * i, "loss": 1.0 / i, "loss_x": 0.6 / i}
        if semi_supervised:
            record.update(
                loss_u=0.4 / i,
                mask_rate=0.2 * i,
                pseudo_label_accuracy=None if i == 1 else 0.9,
                unlabeled_distribution=[0.1 + 0.01 * (c - 4.5) * i for c in range(10)],
            )
        if test_set:
            record.update(
                test_accuracy=0.5 + 0.1 * i,
                test_accuracy_raw=0.45 + 0.1 * i,
                test_balanced_accuracy=0.5 + 0.1 * i,
                per_class_accuracy=[0.9, 0.5, None, *[0.7] * 7],
            )
        records.append(record)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run_dir / "config.yaml").write_text(yaml.safe_dump(digits_config()))
    confusion = [[9 if i == j else 1 for j in range(10)] for i in range(10)]
    confusion[2] = [0] * 10
    if finished:
        summary = {
            "algorithm": "fixmatch",
            "steps": 25 * evaluations,
            "class_names": ["cat", "dog", "bird", *map(str, range(3, 10))],
            "labeled_class_counts": [4] * 10,
            "confusion_matrix": confusion if test_set else None,
        }
        (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


class FigureFinder(HTMLParser):
    """Collects, for each <figure id=...>, how many SVG drawing elements it holds."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: dict[str, int] = {}
        self.notes: set[str] = set()
        self.current: str | None = None
        self.depth = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attributes = dict(attrs)
        if tag == "figure":
            self.current, self.depth = attributes.get("id"), 0
            self.figures[self.current] = 0
        elif tag == "p" and "note" in (attributes.get("class") or ""):
            self.notes.add(attributes["id"])
        elif self.current and tag in ("path", "use", "text", "image", "rect"):
            self.figures[self.current] += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "figure":
            self.current = None


def parse(page: str) -> FigureFinder:
    finder = FigureFinder()
    finder.feed(page)
    return finder


def test_kl_divergence_matches_hand_computation():
    p, q = [0.5, 0.5, 0.0], [0.25, 0.5, 0.25]
    assert kl_divergence(p, q) == pytest.approx(0.5 * math.log(2.0))
    assert kl_divergence(q, q) == 0.0
    with pytest.raises(ValueError, match="different lengths"):
        kl_divergence([1.0], [0.5, 0.5])


@pytest.fixture(scope="module")
def full_report(tmp_path_factory) -> Path:
    """report.html of a finished semi-supervised run with a test set (rendered once)."""
    return write_report(write_run(tmp_path_factory.mktemp("full") / "run"))


def test_full_run_has_every_plot_and_the_config(full_report):
    page = full_report.read_text()
    finder = parse(page)
    assert set(finder.figures) == set(PLOT_IDS)
    assert all(count > 0 for count in finder.figures.values()), finder.figures
    assert not finder.notes
    assert "name: digits" in page  # the resolved config is shown
    assert "cat" in page and "bird" in page  # class names from summary.json label the axes
    # median of the four EMA accuracies 0.6..0.9 is 0.75: error 25.00%
    assert "75.00%" in page and "25.00%" in page


def test_a_run_after_a_supervised_phase_says_so(tmp_path):
    run_dir = write_run(tmp_path / "run")
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["supervised_phase"] = {"steps": 812, "run_dir": "runs/x/supervised-first"}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    page = render(load_run(run_dir))
    fact = "812 steps before this run's first step, a run of its own in runs/x/supervised-first"
    assert f"<td>supervised training first</td><td>{html.escape(fact)}</td>" in page


def test_the_accuracy_plot_puts_the_supervised_phase_first(tmp_path):
    run_dir = write_run(tmp_path / "run", evaluations=3)  # steps 25, 50, 75
    write_run(run_dir / "supervised-first", semi_supervised=False, evaluations=4)  # 25..100
    run = load_run(run_dir)
    figure = accuracy_plot(run)
    lines = {line.get_label(): line for line in figure.axes[0].get_lines()}
    phase = lines[PHASE_LABEL]
    assert list(phase.get_xdata()) == [25, 50, 75, 100]
    assert list(phase.get_ydata()) == pytest.approx([60.0, 70.0, 80.0, 90.0])
    # the run's own steps count on from the phase's 100
    assert list(lines["EMA model"].get_xdata()) == [125, 150, 175]
    assert list(lines["raw model"].get_xdata()) == [125, 150, 175]
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["supervised_phase"] = {"steps": 100}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    fact = "100 steps before this run's first step; its EMA model ended at 90.00%"
    assert f"<td>{html.escape(fact)}</td>" in render(load_run(run_dir))


def test_the_other_plots_over_steps_count_on_from_the_supervised_phase(tmp_path):
    run_dir = write_run(tmp_path / "run", evaluations=3)  # steps 25, 50, 75
    write_run(run_dir / "supervised-first", semi_supervised=False, evaluations=4)  # 25..100
    run = load_run(run_dir)
    losses = {line.get_label(): line for line in losses_plot(run).axes[0].get_lines()}
    assert list(losses[PHASE_LOSS_LABEL].get_xdata()) == [25, 50, 75, 100]
    assert list(losses[PHASE_LOSS_LABEL].get_ydata()) == pytest.approx([1.0, 1 / 2, 1 / 3, 1 / 4])
    assert list(losses["loss_u"].get_xdata()) == [125, 150, 175]
    for plot in (pseudo_label_plot, kl_plot):  # the phase has no unlabeled images: only a line
        boundary, *lines = plot(run).axes[0].get_lines()
        assert list(boundary.get_xdata()) == [100, 100]
        assert list(lines[0].get_xdata()) == [125, 150, 175]  # mask rate; KL


def test_a_run_still_in_its_supervised_phase_plots_the_phase(tmp_path):
    run_dir = tmp_path / "run"
    write_run(run_dir / "supervised-first", semi_supervised=False, finished=False)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(digits_config()))
    phase, boundary = accuracy_plot(load_run(run_dir)).axes[0].get_lines()
    assert phase.get_label() == PHASE_LABEL
    assert list(boundary.get_xdata()) == [100, 100]  # at the phase's last evaluation so far


def test_supervised_run_without_test_set_gets_notes_instead_of_plots(tmp_path):
    run = load_run(write_run(tmp_path / "run", semi_supervised=False, test_set=False))
    page = render(run)
    finder = parse(page)
    assert set(finder.figures) == {"plot-losses"}
    expected_notes = {f"{plot_id}-note" for plot_id in PLOT_IDS if plot_id != "plot-losses"}
    assert finder.notes == expected_notes
    assert "supervised training" in page


def test_run_in_progress_rebuilds_the_labeled_distribution_from_its_config(tmp_path):
    run = load_run(write_run(tmp_path / "run", finished=False))
    page = render(run)
    finder = parse(page)
    assert finder.notes == {"plot-confusion-note"}
    assert "written to summary.json when training ends" in page
    assert "in progress" in page
    # the labeled distribution comes from rebuilding the digits split (40 labels, 10 classes)
    assert finder.figures["plot-distribution"] > 0 and finder.figures["plot-kl"] > 0


def test_predictions_with_another_class_count_get_a_note(tmp_path):
    run_dir = write_run(tmp_path / "run")
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["labeled_class_counts"] = [1, 1, 1]
    (run_dir / "summary.json").write_text(json.dumps(summary))
    run = load_run(run_dir)
    for build in (distribution_plot, kl_plot):
        assert "do not have the 3 classes of the labeled set" in build(run)


def test_torn_last_line_of_a_run_being_written_is_skipped(tmp_path):
    run_dir = write_run(tmp_path / "run")
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"step": 125, "loss"')
    assert len(load_run(run_dir).history) == 4


def test_a_folder_without_run_files_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not a run directory"):
        load_run(tmp_path)


def test_report_command_writes_the_page(tmp_path, capsys):
    run_dir = write_run(tmp_path / "run", semi_supervised=False, test_set=False)
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "report.html").is_file()
    assert str(run_dir / "report.html") in capsys.readouterr().out


def test_report_failure_after_training_only_warns(tmp_path, caplog):
    run_dir = write_run(tmp_path / "run")
    (run_dir / "summary.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="semisup"):
        report_after_training(run_dir)
    assert "run report could not be written" in caplog.text
    assert not (run_dir / "report.html").exists()


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("chromium is not installed (apt-get install chromium); .ci/run installs it")
    return path


def test_every_plot_renders_in_headless_chromium(tmp_path, full_report):
    browser = chromium()
    url = full_report.resolve().as_uri()
    dom = subprocess.run(
        [browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile1'}", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    finder = parse(dom)
    assert set(finder.figures) == set(PLOT_IDS)
    assert all(count > 0 for count in finder.figures.values()), finder.figures

    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            browser,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile2'}",
            f"--screenshot={shot}",
            "--window-size=1000,3000",
            url,
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    from PIL import Image

    image = Image.open(shot).convert("L")
    low, high = image.getextrema()
    assert high - low > 100  # not a blank page: dark text and lines on white
    histogram = image.histogram()
    assert sum(histogram[:128]) > 0.005 * image.width * image.height
