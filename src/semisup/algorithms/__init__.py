"""SSL algorithms. Importing this package registers every algorithm in `ALGORITHMS`."""

from semisup.algorithms import (  # noqa: F401  (registration)
    adamatch,
    comatch,
    crest,
    darp,
    dash,
    defixmatch,
    fixmatch,
    fixmatch_da,
    flexmatch,
    freematch,
    meanteacher,
    mixmatch,
    pimodel,
    pseudolabel,
    realmix,
    remixmatch,
    simmatch,
    softmatch,
    supervised,
    uda,
    udal,
    vat,
)
from semisup.algorithms.base import Algorithm, TaskInfo
from semisup.algorithms.registry import ALGORITHMS

__all__ = ["ALGORITHMS", "Algorithm", "TaskInfo"]
