"""The report page: one self-contained HTML file with the plots as inline SVG."""

from __future__ import annotations

import html
import io
import statistics
from pathlib import Path
from typing import Any

import matplotlib as mpl
from matplotlib.figure import Figure

from semisup.files import write_text
from semisup.report.plots import PLOTS
from semisup.report.run_data import RunData, load_run

STYLE = """
body { font-family: sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem;
       color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
table.facts { border-collapse: collapse; }
table.facts td { padding: 0.15rem 0.8rem 0.15rem 0; vertical-align: top; }
table.facts td:first-child { color: #555; }
figure { margin: 0; } figure svg { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: 0.9rem; }
p.note { background: #f4f4f4; border-left: 4px solid #bbb; padding: 0.5rem 0.8rem; }
pre { background: #f7f7f7; padding: 0.8rem; overflow-x: auto; font-size: 0.85rem; }
"""


def figure_svg(figure: Figure, plot_id: str) -> str:
    """The figure as an inline <svg> element.

    Text stays text (`svg.fonttype: none`), and the hash salt is the plot id, so clip-path ids
    are unique on the page and the output is reproducible.
    """
    buffer = io.StringIO()
    with mpl.rc_context({"svg.hashsalt": plot_id, "svg.fonttype": "none"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _percent(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.2f}%"


def _facts(run: RunData) -> list[tuple[str, str]]:
    config, summary = run.config or {}, run.summary or {}
    data, train = config.get("data", {}), config.get("train", {})
    step = run.history[-1]["step"] if run.history else 0
    total = run.total_steps
    if run.finished:
        status = f"finished: {summary.get('steps', step)} steps"
    else:
        status = f"in progress (or stopped): step {step} of {total or '?'} at the last evaluation"
    accuracies = [r["test_accuracy"] for r in run.history if r.get("test_accuracy") is not None]
    median = statistics.median(accuracies[-20:]) if accuracies else None
    wall = summary.get("wall_seconds") or (
        run.history[-1].get("wall_seconds") if run.history else None
    )
    phase = summary.get("supervised_phase")
    first = [] if not phase else [("supervised training first", _phase_fact(phase, run.phase))]
    return [
        ("algorithm", str(config.get("algorithm", {}).get("name", summary.get("algorithm", "?")))),
        ("data set", str(data.get("name", summary.get("dataset", "?")))),
        ("labeled images", str(data.get("num_labels", summary.get("num_labels", "?")))),
        ("seed", str(train.get("seed", summary.get("seed", "?")))),
        ("model", str(config.get("model", {}).get("name", "?"))),
        *first,
        ("status", status),
        ("test accuracy, EMA (last evaluation)", _percent(run.last("test_accuracy"))),
        ("test accuracy, raw weights (last evaluation)", _percent(run.last("test_accuracy_raw"))),
        ("median of the last 20 evaluations (EMA; the papers' metric)", _percent(median)),
        ("error = 100 − that median", "–" if median is None else f"{100 - 100 * median:.2f}%"),
        ("evaluations", str(len(run.history))),
        ("training time", "–" if wall is None else f"{wall / 60:.1f} min"),
    ]


def _phase_fact(phase: dict[str, Any], phase_run: RunData | None) -> str:
    """The supervised phase a run started from: its steps, run directory and final accuracy."""
    where = f", a run of its own in {phase['run_dir']}" if phase.get("run_dir") else ""
    accuracy = None if phase_run is None else phase_run.last("test_accuracy")
    ended = "" if accuracy is None else f"; its EMA model ended at {_percent(accuracy)}"
    return f"{phase['steps']} steps before this run's first step{where}{ended}"


def render(run: RunData) -> str:
    """The whole HTML page for a run."""
    title = f"semisup run report: {run.run_dir.name}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Run directory: <code>{html.escape(str(run.run_dir.resolve()))}</code></p>",
        '<table class="facts" id="facts">',
        *(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in _facts(run)),
        "</table>",
    ]
    for plot_id, heading, caption, build in PLOTS:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        result = build(run)
        if isinstance(result, str):
            parts.append(
                f'<p class="note" id="{plot_id}-note">Not shown: {html.escape(result)}.</p>'
            )
            continue
        parts.append(
            f'<figure id="{plot_id}">{figure_svg(result, plot_id)}'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    parts.append("<h2>Configuration (config.yaml, every default resolved)</h2>")
    config = run.config_text or "config.yaml is missing from the run directory"
    parts.append(f'<pre id="config">{html.escape(config)}</pre>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Writes RUN_DIR/report.html (or `out`) and returns its path."""
    run = load_run(run_dir)
    path = Path(out) if out is not None else run.run_dir / "report.html"
    write_text(path, render(run))
    return path
