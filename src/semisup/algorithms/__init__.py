"""SSL algorithms. Importing this package registers every algorithm in `ALGORITHMS`."""

from semisup.algorithms import (  # noqa: F401  (registration)
    comatch,
    crest,
    darp,
    dash,
    fixmatch,
    fixmatch_da,
    meanteacher,
    mixmatch,
    pimodel,
    pseudolabel,
    realmix,
    remixmatch,
    simmatch,
    supervised,
    uda,
    udal,
    vat,
)
from semisup.algorithms.base import Algorithm, TaskInfo
from semisup.algorithms.registry import ALGORITHMS

__all__ = ["ALGORITHMS", "Algorithm", "TaskInfo"]
