"""semisup: deep semi-supervised image classification in PyTorch.

`semisup.load(run_dir)` returns the EMA model of a trained run (a `semisup.inference.TrainedModel`,
with `predict(images)`); `semisup.train(data, ...)` trains on images and labels held in Python, and
`semisup.SemiSupervisedClassifier` is a scikit-learn estimator (`semisup.api`, see
docs/python-api.md). The rest lives in the subpackages, and the `semisup` command in
`semisup.commands.cli`. Importing this package imports neither torch nor Pillow: these names are
imported on first use.

Imported before torch, it makes OpenMP's threads sleep instead of spin while they wait
(OMP_WAIT_POLICY=PASSIVE, unless set already): on a CPU shared with other work, spinning threads
made small batched operations about 10 times slower (docs/practical.md#the-process).
"""

from __future__ import annotations

import importlib
import os
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

if TYPE_CHECKING:
    from semisup.api import SemiSupervisedClassifier, TrainResult, train
    from semisup.inference import load

try:
    __version__ = version("semisup")
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"

__all__ = ["SemiSupervisedClassifier", "TrainResult", "__version__", "load", "train"]
_LAZY = {
    "load": "semisup.inference",
    "train": "semisup.api",
    "TrainResult": "semisup.api",
    "SemiSupervisedClassifier": "semisup.api",
}


def __getattr__(name: str) -> Any:
    """Imports `load`, `train`, ... (and with them torch) when one is first used."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'semisup' has no attribute {name!r}")
