"""`SemiSupervisedClassifier`: scikit-learn conventions, inputs, errors, run directories."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from torch import nn

import semisup
from semisup import SemiSupervisedClassifier
from semisup.api.estimator import ESTIMATOR_DEFAULTS
from semisup.commands import cli

QUICK = {"steps": 2, "batch_size": 8, "algorithm_params": {"mu": 2}, "random_state": 0}


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """90 digits of classes 0-2 as scikit-learn gives them: rows (90, 64) in 0..16, labels,
    and the labels with all but 4 per class set to -1."""
    from sklearn.datasets import load_digits

    rows, truth = load_digits(n_class=3, return_X_y=True)
    rows, truth = rows[:90], truth[:90]
    labels = np.full_like(truth, -1)
    for c in range(3):
        labels[np.flatnonzero(truth == c)[:4]] = c
    return rows, truth, labels


def test_parameters_are_stored_unvalidated_and_clone_copies_them():
    estimator = SemiSupervisedClassifier(steps="many", algorithm_params={"threshold": 0.9})
    copy = clone(estimator)
    assert copy.get_params() == estimator.get_params() and copy is not estimator
    assert copy.get_params()["algorithm_params"] is not estimator.algorithm_params
    assert copy.set_params(steps=5, algorithm="supervised").get_params()["steps"] == 5
    with pytest.raises(ValueError, match="train.steps must be int or null, got 'many'"):
        estimator.fit(np.zeros((4, 4)), [0, 1, -1, -1])


def test_steps_come_from_the_parameter_else_config_else_the_default(digits, monkeypatch):
    rows, _, labels = digits
    monkeypatch.setitem(ESTIMATOR_DEFAULTS, "train.steps", 2)
    quick = {**QUICK, "steps": None}
    assert SemiSupervisedClassifier(**quick).fit(rows, labels).history_[-1]["step"] == 2
    configured = SemiSupervisedClassifier(**quick, config={"train.steps": 3}).fit(rows, labels)
    assert configured.history_[-1]["step"] == 3
    with pytest.raises(ValueError, match="train.steps is set both by an argument and by config"):
        SemiSupervisedClassifier(**QUICK, config={"train": {"steps": 3}}).fit(rows, labels)


def test_the_default_algorithm_resolves_as_semisup_train_resolves_it(digits, tmp_path):
    rows, _, labels = digits
    estimator = SemiSupervisedClassifier(out_dir=tmp_path / "run", **QUICK)
    assert estimator.get_params()["algorithm"] == "auto"
    estimator.fit(rows, labels)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["algorithm"] == "fixmatch"


def test_an_all_unlabeled_y_raises_a_value_error(digits):
    rows, _, _ = digits
    with pytest.raises(ValueError, match=r"every sample as unlabeled \(-1\)"):
        SemiSupervisedClassifier(**QUICK).fit(rows, np.full(len(rows), -1))


def test_fully_labeled_y_needs_the_supervised_algorithm(digits):
    rows, truth, _ = digits
    with pytest.raises(ValueError, match="every image is labeled, but fixmatch also learns"):
        SemiSupervisedClassifier(**QUICK).fit(rows, truth)
    supervised = SemiSupervisedClassifier(algorithm="supervised", steps=2, batch_size=8)
    assert supervised.fit(rows, truth).classes_.tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    ("X", "y", "message"),
    [
        (np.full((6, 4), np.nan), [0, 1, -1, -1, -1, -1], "Input X contains NaN"),
        (np.zeros(6), [0, 1, -1, -1, -1, -1], "Expected 2D array, got 1D array"),
        (np.zeros((6, 2, 2, 2, 1)), [0, 1, -1, -1, -1, -1], "Found array with dim 5"),
        (np.zeros((6, 4)), [0, 1, -1, -1, -1], "X has 6 samples but y has 5 labels"),
        (np.zeros((6, 4)), [0, 0, -1, -1, -1, -1], r"all of one class \(np.int64\(0\)\)"),
        (np.zeros((6, 4)), [0.5, 1.5, -1, -1, -1, -1], "Unknown label type"),
        (np.zeros((6, 4)), [0, 1, np.nan, -1, -1, -1], "Input y contains NaN"),
        (np.zeros((6, 4)), None, "requires y to be passed, but the target y is None"),
        (np.full((6, 3, 3), 2.0), [0, 1, -1, -1, -1, -1], r"values in \[0, 1\]"),
        (np.zeros((6, 3, 3, 2)), [0, 1, -1, -1, -1, -1], "with C in 1, 3, 4"),
    ],
)
def test_bad_input_raises_a_value_error(X, y, message):
    with pytest.raises(ValueError, match=message):
        SemiSupervisedClassifier(**QUICK).fit(X, y)


def test_flat_rows_are_the_documented_square_images(digits):
    """Rows of 64 values in 0..16 train exactly like the 8x8 images scaled to [0, 1]."""
    rows, _, labels = digits
    on_rows = SemiSupervisedClassifier(**QUICK).fit(rows, labels)
    images = rows.reshape(-1, 8, 8) / rows.max()
    on_images = SemiSupervisedClassifier(**QUICK).fit(images, labels)
    assert on_rows.n_features_in_ == 64 and on_rows.image_shape_ == (1, 8, 8)
    assert not hasattr(on_images, "n_features_in_") and on_images.flat_rows_ is None
    np.testing.assert_array_equal(on_rows.predict_proba(rows), on_images.predict_proba(images))
    with pytest.raises(ValueError, match="X has 63 features, but .* is expecting 64 features"):
        on_rows.predict(rows[:, :63])
    with pytest.raises(ValueError, match="fitted on images, so X must be images too"):
        on_images.predict(rows)


def test_string_labels_with_minus_one_in_an_object_array(digits):
    rows, _, labels = digits
    names = np.array(["zero", "one", "two"], dtype=object)[labels]
    names[labels == -1] = -1
    estimator = SemiSupervisedClassifier(**QUICK).fit(rows, names)
    assert estimator.classes_.tolist() == ["one", "two", "zero"]
    assert set(estimator.predict(rows[:10])) <= {"one", "two", "zero"}
    assert estimator.predict_proba(rows[:10]).shape == (10, 3)


def test_pil_images_file_paths_and_tensors_are_images(digits, tmp_path):
    rows, _, labels = digits
    pixels = np.rint(rows.reshape(-1, 8, 8) * 255 / 16).astype(np.uint8)
    paths = []
    for i, image in enumerate(pixels):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(image).save(paths[-1])
    on_pil = SemiSupervisedClassifier(**QUICK).fit([Image.fromarray(p) for p in pixels], labels)
    on_paths = SemiSupervisedClassifier(**QUICK).fit(paths, labels)
    on_tensor = SemiSupervisedClassifier(**QUICK).fit(torch.from_numpy(pixels)[:, None], labels)
    expected = on_pil.predict_proba(pixels)
    for estimator in (on_paths, on_tensor):
        np.testing.assert_array_equal(estimator.predict_proba(pixels), expected)
    np.testing.assert_array_equal(on_pil.predict_proba([str(p) for p in paths]), expected)


def test_score_counts_the_labeled_samples_only(digits):
    rows, truth, labels = digits
    estimator = SemiSupervisedClassifier(**QUICK).fit(rows, labels)
    predicted = estimator.predict(rows)
    partly = truth.copy()
    partly[::2] = -1
    expected = np.mean(predicted[1::2] == truth[1::2])
    assert estimator.score(rows, partly) == pytest.approx(expected)
    with pytest.raises(ValueError, match="nothing to score"):
        estimator.score(rows, np.full(len(rows), -1))


class Flat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


def test_a_module_parameter_is_copied_not_trained(digits):
    rows, _, labels = digits
    module = Flat()
    before = module.linear.weight.detach().clone()
    estimator = SemiSupervisedClassifier(model=module, **QUICK).fit(rows, labels)
    assert torch.equal(module.linear.weight, before)
    assert isinstance(estimator.model_.model, Flat) and estimator.model_.model is not module
    assert clone(estimator).model is not module


def test_fit_leaves_the_callers_random_generators_alone(digits):
    rows, _, labels = digits
    np.random.seed(5)
    torch.manual_seed(5)
    expected = np.random.rand(), torch.rand(1)
    np.random.seed(5)
    torch.manual_seed(5)
    SemiSupervisedClassifier(**QUICK).fit(rows, labels)
    assert (np.random.rand(), torch.rand(1)) == expected


def test_out_dir_keeps_a_run_for_load_predict_and_export(digits, tmp_path, capsys):
    rows, _, labels = digits
    run_dir = tmp_path / "run"
    estimator = SemiSupervisedClassifier(out_dir=run_dir, **QUICK).fit(rows, labels)
    estimator.set_params(steps=3).fit(rows, labels)  # a refit replaces the run
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3]  # only the refit's run
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["class_names"] == ["0", "1", "2"] and summary["num_labels"] == 12

    images = np.rint(rows.reshape(-1, 8, 8) * 255 / 16).astype(np.uint8)
    loaded = semisup.load(run_dir, device="cpu").predict(list(images))
    np.testing.assert_allclose(
        loaded.probabilities.numpy(), estimator.predict_proba(rows), atol=1e-6
    )
    Image.fromarray(images[0]).save(tmp_path / "first.png")
    capsys.readouterr()
    assert cli.main(["predict", str(run_dir), str(tmp_path / "first.png")]) == 0
    assert json.loads(capsys.readouterr().out)[0]["class"] == str(estimator.predict(rows[:1])[0])
    assert cli.main(["export", str(run_dir), "--pt2", str(tmp_path / "model.pt2")]) == 0
    program = torch.export.load(str(tmp_path / "model.pt2")).module()
    with torch.no_grad():
        _, probabilities = program(torch.from_numpy(images[:4, None]))
    np.testing.assert_allclose(probabilities.numpy(), estimator.predict_proba(rows[:4]), atol=1e-5)


def to_images(rows: np.ndarray) -> np.ndarray:
    """The preprocessing step of the pipeline test: 64 values in 0..16 → 8x8 in [0, 1]."""
    return rows.reshape(-1, 8, 8) / 16.0


def test_a_pipeline_in_cross_val_score(digits):
    """cross_val_score of a pipeline equals fitting and scoring each fold by hand."""
    rows, _, labels = digits
    pipeline = make_pipeline(FunctionTransformer(to_images), SemiSupervisedClassifier(**QUICK))
    folds = StratifiedKFold(n_splits=2, shuffle=True, random_state=0)
    scores = cross_val_score(pipeline, rows, labels, cv=folds)
    by_hand = [
        clone(pipeline).fit(rows[train], labels[train]).score(rows[test], labels[test])
        for train, test in folds.split(rows, labels)
    ]
    assert scores.tolist() == by_hand
    assert clone(pipeline).fit(rows, labels)[-1].image_shape_ == (1, 8, 8)
