"""The estimator's rule for 2-D X: every row is one flattened grey image.

A row of D numbers becomes a grey S x S image, S = ⌈√D⌉, filled row by row (the order in which
`images.reshape(len(images), -1)` flattens images), the last S² − D pixels set to the low end of
the range when D is not a square. Values are scaled from the range of the X given to `fit` (its
smallest and largest value) to 0..255, and clipped to that range at prediction. scikit-learn's
digits (8x8 images flattened to 64 values in 0..16) thus become their 8x8 images, 0 → 0 and
16 → 255; any numeric table is accepted, but only images flattened this way make sense to the
convolutional networks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FlatRows:
    """The range and width of the flat rows an estimator was fitted on."""

    num_features: int
    low: float
    high: float

    @classmethod
    def fit(cls, rows: np.ndarray) -> FlatRows:
        """The width and value range of finite numeric rows (N, D)."""
        return cls(rows.shape[1], float(rows.min()), float(rows.max()))

    @property
    def side(self) -> int:
        """S = ⌈√D⌉, the side of the images."""
        return math.isqrt(self.num_features - 1) + 1

    def to_images(self, rows: np.ndarray) -> np.ndarray:
        """Rows (N, D) as uint8 grey images (N, S, S)."""
        span = self.high - self.low or 1.0
        scaled = np.clip((rows.astype(np.float64) - self.low) / span, 0.0, 1.0)
        padded = np.zeros((len(rows), self.side * self.side))
        padded[:, : self.num_features] = scaled
        return np.rint(padded * 255.0).astype(np.uint8).reshape(-1, self.side, self.side)
