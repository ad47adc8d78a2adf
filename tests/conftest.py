"""Shared fixtures: the real data sets beside the project, and the slow-test switch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# Tests run small models, where one thread is as fast as two on an idle machine and far faster
# on a busy one (oversubscribed threads slowed small BatchNorm calls 10-30x). It also keeps
# floating-point reductions in one fixed order.
torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO_ROOT.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """`../shared/datasets` (MNIST, Fashion-MNIST, CIFAR-10 JPEGs); skips where it is absent."""
    if not (SHARED_DATASETS / "mnist").is_dir():
        pytest.skip(
            f"real data sets not found at {SHARED_DATASETS}: they sit beside the project in CI "
            "and on the developers' machines, not in a user's clone"
        )
    return SHARED_DATASETS
