"""Shared fixtures: the real data sets beside the project, and the numerics every test runs under.

Tests pin what their outcome depends on, so the suite gives the same answers on any machine:
`SEMISUP_TEST_THREADS` torch threads (default 1), deterministic algorithms, and
`train.precision=auto` run as `SEMISUP_TEST_PRECISION` (fp32 or bf16, default fp32) whatever
"auto" picks on the machine; a test that starts `semisup train` as a process passes
`train.precision=$SEMISUP_TEST_PRECISION` on. A test of precision itself sets `train.precision`.
`benchmarks/run_test_matrix.sh` runs the suite under each setting.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from semisup import experiment, planning
from semisup.config import Config, TrainConfig
from semisup.engine.runtime import Runtime

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO_ROOT.parent / "shared" / "datasets"
TEST_PRECISIONS = ("fp32", "bf16")
CHOOSE_PRECISION = planning.choose_precision  # before `pinned_precision` replaces it


def threads_setting() -> int:
    """Torch threads of the test process: $SEMISUP_TEST_THREADS, default 1.

    Tests run small models, where one thread is as fast as two on an idle machine and far faster
    on a busy one (oversubscribed threads slowed small BatchNorm calls 10-30x).
    """
    value = os.environ.get("SEMISUP_TEST_THREADS", "1")
    if not value.isdigit() or int(value) < 1:
        raise pytest.UsageError(f"SEMISUP_TEST_THREADS={value!r}: give a positive whole number")
    return int(value)


def precision_setting() -> str:
    """What `train.precision=auto` runs as in tests: $SEMISUP_TEST_PRECISION, default fp32."""
    value = os.environ.get("SEMISUP_TEST_PRECISION", "fp32")
    if value not in TEST_PRECISIONS:
        raise pytest.UsageError(
            f"SEMISUP_TEST_PRECISION={value!r}: use one of {', '.join(TEST_PRECISIONS)}"
        )
    return value


def pytest_configure(config: pytest.Config) -> None:
    # A bad value stops here, before any test; subprocesses pass the value on (`train.precision`).
    os.environ["SEMISUP_TEST_PRECISION"] = precision_setting()
    torch.set_num_threads(threads_setting())
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS on GPUs
    # An op without a deterministic kernel (a few CUDA backward passes) warns instead of failing.
    torch.use_deterministic_algorithms(True, warn_only=True)


def pytest_report_header(config: pytest.Config) -> str:
    return (
        f"semisup tests: {threads_setting()} torch thread(s), train.precision=auto runs as "
        f"{precision_setting()} (SEMISUP_TEST_THREADS, SEMISUP_TEST_PRECISION)"
    )


@pytest.fixture(autouse=True, scope="session")
def pinned_precision() -> Iterator[None]:
    """Runs `train.precision=auto` as the test precision, written back into the config.

    Both places that decide "auto" are pinned: `semisup.planning` (the CLI and the Python API,
    which measure bf16 on CPUs that have it) and `semisup.experiment` (runs built directly).
    """
    precision = precision_setting()
    resolve = experiment.resolve_runtime

    def pinned_runtime(train: TrainConfig, device: torch.device) -> Runtime:
        if train.precision == "auto":
            train.precision = precision
        return resolve(train, device)

    def pinned_choice(cfg: Config, data: object, device: torch.device) -> str:
        cfg.train.precision = precision
        return f"precision {precision} (pinned by the tests)"

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(experiment, "resolve_runtime", pinned_runtime)
        patch.setattr(planning, "choose_precision", pinned_choice)
        yield


@pytest.fixture
def measured_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unpins `semisup.planning`'s choice of precision, for the tests of that choice."""
    monkeypatch.setattr(planning, "choose_precision", CHOOSE_PRECISION)


@pytest.fixture(autouse=True)
def pinned_threads() -> None:
    """Every test starts with the test thread count, whatever an earlier test set."""
    torch.set_num_threads(threads_setting())


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """`../shared/datasets` (MNIST, Fashion-MNIST, CIFAR-10 JPEGs); skips where it is absent."""
    if not (SHARED_DATASETS / "mnist").is_dir():
        pytest.skip(
            f"real data sets not found at {SHARED_DATASETS}: they sit beside the project in CI "
            "and on the developers' machines, not in a user's clone"
        )
    return SHARED_DATASETS
