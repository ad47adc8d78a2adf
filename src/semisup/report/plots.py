"""The report's figures, drawn with matplotlib's object API (no pyplot, no GUI backend).

Each builder takes a `RunData` and returns a `Figure`, or a string saying why the run has no
data for that plot (a supervised run has no mask rate; a run still in progress has no final
confusion matrix yet). The page shows the note in the plot's place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from matplotlib.figure import Figure

from semisup.engine.metrics import kl_divergence
from semisup.report.run_data import RunData, class_names, labeled_class_counts, normalize

WIDE, TALL = (7.5, 3.2), (7.5, 4.2)
MAX_NAMED_CLASSES = 20  # above this, class names are left off the axes
MAX_ANNOTATED_CLASSES = 12  # confusion-matrix cells get their counts written up to this size
PHASE_LABEL = "supervised phase, EMA model"
PHASE_LOSS_LABEL = "supervised phase, loss"
PHASE_COLOUR = "0.6"


def _steps_axes(figure: Figure, ylabel: str) -> Any:
    axes = figure.add_subplot()
    axes.set_xlabel("optimizer step")
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    return axes


def _phase_boundary(axes: Any, run: RunData) -> int:
    """After a supervised phase: a dotted line where the run starts; the step it counts on from.

    Every plot over steps counts the run's own steps on from the phase's last step, so all of
    them share one x axis that covers the whole budget (0: the run had no phase).
    """
    if run.phase is None:
        return 0
    axes.axvline(run.phase.steps_done, color=PHASE_COLOUR, linestyle=":", linewidth=1)
    axes.set_xlabel("optimizer step (the supervised phase's, then this run's)")
    axes.set_xlim(left=0)
    return run.phase.steps_done


def _phase_first(axes: Any, run: RunData, key: str, scale: float, label: str) -> int:
    """Draws the supervised phase's `key` in grey, then `_phase_boundary`."""
    steps, values = run.phase.series(key) if run.phase is not None else ([], [])
    if steps:
        axes.plot(steps, [scale * v for v in values], marker="o", color=PHASE_COLOUR, label=label)
    return _phase_boundary(axes, run)


def _phase_has(run: RunData, key: str) -> bool:
    return run.phase is not None and run.phase.has(key)


def accuracy_plot(run: RunData) -> Figure | str:
    """Test accuracy of the EMA and the raw model (and logit-adjusted, if logged) over steps.

    After a supervised phase, the phase's EMA accuracy comes first (grey) and the run's own
    steps count on from the phase's last step, so the plot shows the whole budget.
    """
    if not run.has("test_accuracy") and not _phase_has(run, "test_accuracy"):
        return "no test accuracy was logged: the data set of this run has no test images"
    figure = Figure(figsize=WIDE, layout="constrained")
    axes = _steps_axes(figure, "test accuracy (%)")
    offset = _phase_first(axes, run, "test_accuracy", 100.0, PHASE_LABEL)
    # On a balanced test set the balanced accuracy equals the accuracy: it is dashed and thin,
    # and the EMA model's line is drawn last and thickest, so neither hides the other.
    for key, label, style in (
        ("test_accuracy_raw", "raw model", {"linewidth": 1.2, "alpha": 0.8}),
        ("test_balanced_accuracy", "EMA, balanced (mean per-class)", {"linestyle": "--"}),
        ("test_accuracy_la", "EMA, logit-adjusted", {"linestyle": ":"}),
        ("test_accuracy", "EMA model", {"linewidth": 2.4, "zorder": 3}),
    ):
        steps, values = run.series(key)
        if steps:
            shifted = [offset + step for step in steps]
            axes.plot(shifted, [100 * v for v in values], marker="o", label=label, **style)
    axes.legend(loc="best")
    return figure


def losses_plot(run: RunData) -> Figure | str:
    """Every logged loss term (mean over the steps between evaluations), log scale if positive.

    After a supervised phase, its loss (cross-entropy on the labeled batch) comes first, grey.
    """
    keys = sorted({k for r in run.history for k in r if k.startswith("loss")})
    keys = [k for k in keys if run.series(k)[0]]
    if not keys and not _phase_has(run, "loss"):
        return "no losses were logged yet (the first evaluation has not happened)"
    figure = Figure(figsize=WIDE, layout="constrained")
    axes = _steps_axes(figure, "training loss")
    offset = _phase_first(axes, run, "loss", 1.0, PHASE_LOSS_LABEL)
    positive = run.phase is None or min(run.phase.series("loss")[1], default=1.0) > 0
    for key in keys:
        steps, values = run.series(key)
        axes.plot([offset + step for step in steps], values, marker=".", label=key)
        positive = positive and min(values) > 0
    if positive:
        axes.set_yscale("log")
    axes.legend(loc="upper right")
    return figure


def pseudo_label_plot(run: RunData) -> Figure | str:
    """Mask rate (share of unlabeled images whose pseudo-label is used) and its accuracy."""
    if not run.has("mask_rate") and not run.has("pseudo_label_accuracy"):
        return (
            "this algorithm logs no mask rate or pseudo-label accuracy (supervised training or "
            "an algorithm without confidence-masked pseudo-labels)"
        )
    figure = Figure(figsize=WIDE, layout="constrained")
    axes = _steps_axes(figure, "%")
    offset = _phase_boundary(axes, run)  # the phase used no unlabeled images: nothing to draw
    for key, label in (
        ("mask_rate", "mask rate (unlabeled images above the threshold)"),
        ("pseudo_label_accuracy", "pseudo-label accuracy (of the masked-in images)"),
    ):
        steps, values = run.series(key)
        if steps:
            axes.plot(
                [offset + s for s in steps], [100 * v for v in values], marker=".", label=label
            )
    axes.set_ylim(-2, 102)
    axes.legend(loc="lower right")
    return figure


def _distributions(run: RunData) -> tuple[list[float], list[int], list[list[float]]] | str:
    """(labeled distribution, evaluation steps, unlabeled predicted distributions) or a note."""
    predicted = [
        (r["step"], r["unlabeled_distribution"])
        for r in run.history
        if r.get("unlabeled_distribution")
    ]
    if not predicted:
        return (
            "no predicted class distribution on unlabeled data was logged (supervised training, "
            "or an algorithm that does not report `unlabeled_distribution`)"
        )
    try:
        counts = labeled_class_counts(run)
    except Exception as e:  # the data set may be unavailable where the report is made
        return f"the labeled class distribution could not be rebuilt from config.yaml: {e}"
    if counts is None:
        return "the labeled class distribution is unknown (no summary.json or config.yaml)"
    if any(len(d) != len(counts) for _, d in predicted):
        return (
            f"the logged predicted distributions do not have the {len(counts)} classes of the "
            "labeled set"
        )
    return normalize(counts), [s for s, _ in predicted], [d for _, d in predicted]


def distribution_plot(run: RunData) -> Figure | str:
    """Labeled class distribution vs the mean prediction on unlabeled data (first and last)."""
    found = _distributions(run)
    if isinstance(found, str):
        return found
    labeled, steps, predicted = found
    num_classes = len(labeled)
    positions = list(range(num_classes))
    figure = Figure(figsize=TALL, layout="constrained")
    axes = figure.add_subplot()
    width = 0.28
    bars = (
        (labeled, "labeled data (ground truth)", -width),
        (predicted[0], f"prediction on unlabeled data, step {steps[0]}", 0.0),
        (predicted[-1], f"prediction on unlabeled data, step {steps[-1]}", width),
    )
    for values, label, offset in bars:
        axes.bar([p + offset for p in positions], [100 * v for v in values], width, label=label)
    _class_ticks(axes, class_names(run, num_classes), "x")
    axes.set_ylabel("share of images (%)")
    axes.legend(loc="upper right", fontsize="small")
    return figure


def kl_plot(run: RunData) -> Figure | str:
    """KL(labeled distribution ‖ mean unlabeled prediction) over steps (ReMixMatch, Figure 2)."""
    found = _distributions(run)
    if isinstance(found, str):
        return found
    labeled, steps, predicted = found
    figure = Figure(figsize=WIDE, layout="constrained")
    axes = _steps_axes(figure, "KL(labeled ‖ predicted) (nats)")
    offset = _phase_boundary(axes, run)
    axes.plot(
        [offset + s for s in steps], [kl_divergence(labeled, q) for q in predicted], marker="."
    )
    return figure


def confusion_plot(run: RunData) -> Figure | str:
    """Confusion matrix of the EMA model at the last evaluation (rows: true class)."""
    if run.summary is None:
        return "the confusion matrix is written to summary.json when training ends"
    matrix = run.summary.get("confusion_matrix")
    if not matrix:
        return "no confusion matrix: the data set of this run has no test images"
    num_classes = len(matrix)
    rows = [[count / max(sum(row), 1) for count in row] for row in matrix]
    size = min(4.0 + 0.3 * num_classes, 9.0)
    figure = Figure(figsize=(size + 1.2, size), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(rows, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, label="share of the true class")
    names = class_names(run, num_classes)
    _class_ticks(axes, names, "x")
    _class_ticks(axes, names, "y")
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    if num_classes <= MAX_ANNOTATED_CLASSES:
        for i, row in enumerate(matrix):
            for j, count in enumerate(row):
                color = "white" if rows[i][j] > 0.5 else "black"
                axes.text(j, i, str(count), ha="center", va="center", color=color, fontsize=8)
    return figure


def per_class_plot(run: RunData) -> Figure | str:
    """Test accuracy of each class at the first and the last evaluation (EMA model)."""
    records = [r for r in run.history if r.get("per_class_accuracy")]
    if not records:
        return "no per-class accuracy was logged: the data set of this run has no test images"
    first, last = records[0], records[-1]
    num_classes = len(last["per_class_accuracy"])
    positions = list(range(num_classes))
    figure = Figure(figsize=TALL, layout="constrained")
    axes = figure.add_subplot()
    width = 0.4
    for record, offset in ((first, -width / 2), (last, width / 2)):
        values = [100 * (a or 0.0) for a in record["per_class_accuracy"]]
        axes.bar([p + offset for p in positions], values, width, label=f"step {record['step']}")
    _class_ticks(axes, class_names(run, num_classes), "x")
    axes.set_ylabel("test accuracy (%)")
    axes.set_ylim(0, 100)
    axes.legend(loc="lower right", fontsize="small")
    return figure


def _class_ticks(axes: Any, names: list[str], which: str) -> None:
    positions = list(range(len(names)))
    if which == "x":
        axes.set_xlabel("class")
        if len(names) <= MAX_NAMED_CLASSES:
            axes.set_xticks(positions, names, rotation=45 if max(map(len, names)) > 3 else 0)
    elif len(names) <= MAX_NAMED_CLASSES:
        axes.set_yticks(positions, names)


# (id, title, caption, builder), in page order.
PLOTS: tuple[tuple[str, str, str, Callable[[RunData], Figure | str]], ...] = (
    (
        "plot-accuracy",
        "Test accuracy",
        "EMA model (what `semisup evaluate` reports) and raw weights, at every evaluation; a "
        "run that trained supervised first shows that phase's EMA model before its own steps.",
        accuracy_plot,
    ),
    (
        "plot-losses",
        "Losses",
        "Mean of each loss term over the steps since the previous evaluation (after a "
        "supervised phase, its loss first).",
        losses_plot,
    ),
    (
        "plot-pseudo-labels",
        "Mask rate and pseudo-label accuracy",
        "Share of unlabeled images whose pseudo-label passes the confidence threshold, and how "
        "often those pseudo-labels are right (measured with the hidden labels of the unlabeled "
        "images; never used for training).",
        pseudo_label_plot,
    ),
    (
        "plot-distribution",
        "Class distribution: labeled data vs predictions on unlabeled data",
        "Mean predicted class distribution on the (weakly augmented) unlabeled batch at the "
        "first and last evaluation, beside the class distribution of the labeled set.",
        distribution_plot,
    ),
    (
        "plot-kl",
        "KL divergence between labeled and predicted class distributions",
        "KL(p_labeled ‖ mean prediction on unlabeled data) at each evaluation, as in the "
        "ReMixMatch paper's distribution-alignment figure: it stays low when predictions on "
        "unlabeled data keep the labeled marginal.",
        kl_plot,
    ),
    (
        "plot-confusion",
        "Confusion matrix (test set, EMA model, last evaluation)",
        "Each row is a true class, normalised to 1; cells show counts for small class sets.",
        confusion_plot,
    ),
    (
        "plot-per-class",
        "Per-class test accuracy",
        "EMA model at the first and the last evaluation.",
        per_class_plot,
    ),
)
