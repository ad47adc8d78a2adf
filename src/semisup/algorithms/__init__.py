"""SSL algorithms. Importing this package registers every algorithm in `ALGORITHMS`."""

from semisup.algorithms import fixmatch, supervised  # noqa: F401  (registration)
from semisup.algorithms.base import Algorithm, TaskInfo
from semisup.algorithms.registry import ALGORITHMS

__all__ = ["ALGORITHMS", "Algorithm", "TaskInfo"]
