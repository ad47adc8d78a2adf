"""The Python API: `train` (images and labels in, a run out) and `SemiSupervisedClassifier`.

See docs/python-api.md. `semisup.train` and `semisup.SemiSupervisedClassifier` re-export these.
"""

from semisup.api.estimator import SemiSupervisedClassifier
from semisup.api.training import TrainResult, train

__all__ = ["SemiSupervisedClassifier", "TrainResult", "train"]
