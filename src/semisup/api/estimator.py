"""`SemiSupervisedClassifier`: any semisup algorithm as a scikit-learn classifier.

`fit(X, y)` takes the scikit-learn convention of `sklearn.semi_supervised`: `y == -1` marks an
unlabeled sample; other labels may be any values (ints, strings in an object array, ...), and
`classes_` is their sorted set. X is a batch or sequence of images (see `api.images`: uint8 or
[0, 1] float arrays (N, H, W) / (N, H, W, C), torch tensors, PIL images, file paths) or a 2-D
array of flattened grey images (see `api.flat_rows`, e.g. scikit-learn's digits as they come).

Training is `semisup.train`'s (`api.training.run_training`): the same Config, trainer and, with
`out_dir`, the same run directory as `semisup train`. Predictions come from the run's EMA model.
"""

from __future__ import annotations

import copy
import numbers
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import accuracy_score
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    assert_all_finite,
    check_array,
    check_is_fitted,
    column_or_1d,
    validate_data,
)
from torch import nn

from semisup.api.data import build_split
from semisup.api.flat_rows import FlatRows
from semisup.api.images import ImageFormat, Images, prepare_images
from semisup.api.training import make_config, run_training

# Optimizer steps when `steps` is None: FixMatch on 8x8 digits takes about 3 minutes of one CPU
# core for them (600 steps score 0.92-0.95, docs/python-api.md); larger images take far longer.
DEFAULT_STEPS = 1000
UNLABELED = -1
# Settings for the short runs an estimator makes, which `config` may override: DEFAULT_STEPS,
# an EMA that forgets its random start within a few hundred steps, and no TensorBoard files.
ESTIMATOR_DEFAULTS = {
    "train.steps": DEFAULT_STEPS,
    "train.ema_warmup": True,
    "train.tensorboard": False,
}


class SemiSupervisedClassifier(ClassifierMixin, BaseEstimator):
    """A semi-supervised image classifier with the scikit-learn estimator interface.

    Args:
        algorithm: a registered algorithm (`semisup list`): "fixmatch", "supervised", ...;
            "auto": FlexMatch when `time` sizes the run, else FixMatch (as `semisup.train`).
        model: a registered model name ("auto": by image size) or an `nn.Module` mapping float
            images (N, C, S, S) in [−1, 1] to (N, K) logits; `fit` trains a copy of it.
        steps: optimizer steps (None: DEFAULT_STEPS, or what `time` allows).
        time: a wall-clock budget ("90s", "20m", or seconds): the run measures its speed and
            sizes its steps, evaluations and schedules to it (docs/practical.md).
        batch_size: labeled images per step (unlabeled ones: the algorithm's μ times this).
        algorithm_params: keyword arguments of the algorithm, e.g. {"threshold": 0.9}.
        model_params: keyword arguments of the registered model, e.g. {"width": 32}.
        config: any other config keys, dotted ({"optim.lr": 0.01}) or as sections, as
            `semisup train --set` takes them.
        image_size: the side images are resized to (None: theirs, see `api.images`).
        device: "auto" (CUDA when available), "cpu", "cuda" or "cuda:N".
        out_dir: keep the run directory here (config.yaml, checkpoint.pt, metrics.jsonl,
            summary.json) for `semisup.load`, `semisup predict` and `semisup export`; each fit
            replaces the run it holds. None: nothing is written.
        random_state: seeds the weights, batches and augmentation (an int, a RandomState, or
            None for a fresh seed at each fit).
        verbose: 0: silent; 1 or more: a line per evaluation and a progress bar on a terminal.

    Attributes:
        classes_: the sorted labels of the labeled samples.
        model_: the trained EMA model (`semisup.inference.TrainedModel`; its `model` is the
            `nn.Module`).
        image_shape_: (C, S, S), the shape every image is converted to.
        n_features_in_: D, when fitted on a 2-D X of flattened images.
        flat_rows_: the width and value range of that 2-D X (`api.flat_rows.FlatRows`), or
            None when fitted on images.
        history_: the run's evaluation records (as metrics.jsonl).
    """

    def __init__(
        self,
        algorithm: str = "auto",
        model: str | nn.Module = "auto",
        steps: int | None = None,
        time: str | float | None = None,
        batch_size: int = 64,
        algorithm_params: dict[str, Any] | None = None,
        model_params: dict[str, Any] | None = None,
        config: dict[str, Any] | None = None,
        image_size: int | None = None,
        device: str = "auto",
        out_dir: str | Path | None = None,
        random_state: int | np.random.RandomState | None = None,
        verbose: int = 0,
    ) -> None:
        self.algorithm = algorithm
        self.model = model
        self.steps = steps
        self.time = time
        self.batch_size = batch_size
        self.algorithm_params = algorithm_params
        self.model_params = model_params
        self.config = config
        self.image_size = image_size
        self.device = device
        self.out_dir = out_dir
        self.random_state = random_state
        self.verbose = verbose

    def fit(self, X: Any, y: Any) -> SemiSupervisedClassifier:
        """Trains on the images X; `y == -1` marks the unlabeled ones.

        Raises:
            ValueError: for unusable X or y (NaN, wrong shapes, lengths that differ, no labeled
                sample, one class only, no unlabeled sample for an algorithm that needs them),
                or unusable settings.
        """
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None; "
                "give every sample its label, -1 for unlabeled ones"
            )
        images, flat_rows = self._read_images(X, fitting=True)
        classes, codes = encode_labels(y, len(images))
        pixels, image_format = prepare_images(images, None, self.image_size)
        cfg = make_config(self._arguments(), self.config, self.steps, ESTIMATOR_DEFAULTS, self.time)
        names = tuple(str(c) for c in classes)
        split = build_split(pixels, codes, names, cfg.data.unlabeled_includes_labeled)
        module = copy.deepcopy(self.model) if isinstance(self.model, nn.Module) else None
        result = run_training(cfg, split, module, self.out_dir, self.verbose > 0, replace=True)
        self.classes_ = classes
        self.model_ = result.model
        self.image_shape_ = image_format.shape
        self.flat_rows_ = flat_rows
        self.history_ = result.history
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (N, K) of the EMA model, columns in the order of `classes_`."""
        check_is_fitted(self)
        images, _ = self._read_images(X, fitting=False)
        channels, size, _ = self.image_shape_
        pixels, _ = prepare_images(images, ImageFormat(channels, size))
        return self.model_.predict(pixels).probabilities.numpy().astype(np.float64)

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each image, as a label of `classes_`."""
        probabilities = self.predict_proba(X)
        return self.classes_[probabilities.argmax(axis=1)]

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Accuracy on the labeled samples of X (those whose label is not -1)."""
        y = column_or_1d(y)
        labeled = ~unlabeled_mask(y)
        if not labeled.any():
            raise ValueError("y marks every sample as unlabeled (-1): nothing to score")
        predicted = self.predict(_select(X, labeled))
        weights = None if sample_weight is None else np.asarray(sample_weight)[labeled]
        return float(accuracy_score(y[labeled], predicted, sample_weight=weights))

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        return tags

    def _arguments(self) -> dict[str, Any]:
        """The config keys the parameters set."""
        arguments: dict[str, Any] = {
            "algorithm.name": self.algorithm,
            "train.batch_size": self.batch_size,
            "train.seed": _seed(self.random_state),
            "train.device": self.device,
            **{f"algorithm.{k}": v for k, v in (self.algorithm_params or {}).items()},
            **{f"model.{k}": v for k, v in (self.model_params or {}).items()},
        }
        if not isinstance(self.model, nn.Module):
            arguments["model.name"] = self.model
        return arguments

    def _read_images(self, X: Any, fitting: bool) -> tuple[Images, FlatRows | None]:
        """X as images, and the rule that read its rows (`api.flat_rows`; None for images).

        A batch or sequence of images is taken as it is, 2-D rows become their images. In
        `fit`, the rule is fitted to the rows; at prediction, X must be rows of the fitted width
        when the estimator was fitted on rows, else images.
        """
        flat_rows = None if fitting else self.flat_rows_
        if fitting and hasattr(self, "n_features_in_"):  # a refit on images after one on rows
            del self.n_features_in_
        if flat_rows is None and _is_image_input(X):
            images = check_array(X, allow_nd=True, dtype=None) if isinstance(X, np.ndarray) else X
            return images, None
        if flat_rows is None and not fitting:
            raise ValueError(
                f"{type(self).__name__} was fitted on images, so X must be images too, not "
                f"rows of numbers (got a {type(X).__name__} of rank {np.ndim(X)})"
            )
        rows = validate_data(self, X, reset=fitting)
        flat_rows = FlatRows.fit(rows) if flat_rows is None else flat_rows
        return flat_rows.to_images(rows), flat_rows


def unlabeled_mask(y: np.ndarray) -> np.ndarray:
    """Which labels are the integer −1 (in a numeric or an object array)."""
    if y.dtype.kind in "iuf":
        return y == UNLABELED
    if y.dtype == object:
        return np.array([isinstance(v, numbers.Number) and v == UNLABELED for v in y], dtype=bool)
    return np.zeros(len(y), dtype=bool)


def encode_labels(y: Any, num_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """The sorted classes of the labeled samples, and each sample's class id (−1: unlabeled).

    Raises:
        ValueError: for a length other than `num_samples`, no labeled sample, labels that are
            not classes (continuous values, NaN) or a single class.
    """
    y = column_or_1d(y, warn=True)
    if y.dtype.kind == "f":
        assert_all_finite(y, input_name="y")
    if len(y) != num_samples:
        raise ValueError(f"X has {num_samples} samples but y has {len(y)} labels")
    unlabeled = unlabeled_mask(y)
    labeled = y[~unlabeled]
    if not labeled.size:
        raise ValueError(
            "y marks every sample as unlabeled (-1): label a few samples of each class"
        )
    check_classification_targets(labeled)
    classes, codes = np.unique(labeled, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(
            f"the labeled samples are all of one class ({classes[0]!r}): a classifier needs "
            "labeled samples of two classes at least"
        )
    all_codes = np.full(len(y), UNLABELED, dtype=np.int64)
    all_codes[~unlabeled] = codes
    return classes, all_codes


def _is_image_input(X: Any) -> bool:
    """A torch tensor, an array of rank 3 or 4, or a sequence of images (not of numbers)."""
    if isinstance(X, torch.Tensor) or (isinstance(X, np.ndarray) and X.ndim in (3, 4)):
        return True
    if isinstance(X, (list, tuple)) and X:
        first = X[0]
        return isinstance(first, (str, Path, Image.Image, torch.Tensor)) or np.ndim(first) >= 2
    return False


def _select(X: Any, mask: np.ndarray) -> Any:
    """The samples of X where `mask` holds (arrays, tensors, data frames and sequences)."""
    if mask.all():
        return X
    if isinstance(X, (np.ndarray, torch.Tensor)):
        return X[torch.from_numpy(mask) if isinstance(X, torch.Tensor) else mask]
    if hasattr(X, "iloc"):
        return X.iloc[mask]
    return [x for x, keep in zip(X, mask, strict=True) if keep]


def _seed(random_state: int | np.random.RandomState | None) -> int:
    """An int `random_state` as it is; else a seed drawn from it (or from NumPy's global RNG)."""
    if isinstance(random_state, numbers.Integral):
        return int(random_state)
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
