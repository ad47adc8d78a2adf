"""From the `data.*` config section to a split: the one place a run's data is built.

Training, evaluation, inference of an unfinished run, reports and CReST all call `build_data`,
so a run's labeled/unlabeled split is derived in exactly one way.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from semisup.config import DataConfig
from semisup.data.base import DATASETS, ImageDataset
from semisup.data.protocols import build_protocol
from semisup.data.ssl import SSLData, build_ssl_data
from semisup.errors import UserError

# `data.*` options that change what a loader returns: a loader that cannot honour one that is
# set is an error (rather than a silently different data set).
SHAPING_OPTIONS = ("image_size", "mirror")


def accepts_option(name: str, option: str) -> bool:
    """Whether the loader of data set `name` takes the shaping option (e.g. "image_size")."""
    return option in inspect.signature(DATASETS.get(name)).parameters


def load_dataset(data: DataConfig) -> ImageDataset:
    """Calls the registered loader of `data.name` with the options it accepts.

    Raises:
        UserError: when an option that shapes the data (`data.image_size`, `data.mirror`) is set
            for a loader that has no such option.
    """
    loader = DATASETS.get(data.name)
    accepted = inspect.signature(loader).parameters
    for option in SHAPING_OPTIONS:
        if getattr(data, option) is not None and option not in accepted:
            raise UserError(
                f"data.{option} does not apply to the {data.name} data set (its images come "
                f"in one fixed form); remove data.{option}"
            )
    options = {"download": data.download, **{o: getattr(data, o) for o in SHAPING_OPTIONS}}
    kwargs = {k: v for k, v in options.items() if k in accepted}
    return loader(Path(data.dir).expanduser(), **kwargs)


def build_data(data: DataConfig, seed: int) -> SSLData:
    """Loads `data.name` and splits it into labeled and unlabeled sets.

    Args:
        data: the `data.*` section.
        seed: the seed of the labeled split (`data.split_seed`, else the run's seed).
    """
    protocol = build_protocol(
        data.imbalance_ratio,
        data.labeled_fraction,
        data.unlabeled_imbalance,
        data.mismatch,
        data.mismatch_preset,
        data.labeled_head,
        data.unlabeled_head,
        data.split_order,
    )
    dataset = load_dataset(data)
    if dataset.num_classes < 2:
        raise UserError(
            f"the {data.name} data set has {dataset.num_classes} class "
            f"({', '.join(dataset.class_names)}); a classifier needs at least two: add a folder "
            "of images for each other class"
        )
    return build_ssl_data(dataset, data.num_labels, seed, data.unlabeled_includes_labeled, protocol)
