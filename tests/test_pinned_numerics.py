"""The numerics tests/conftest.py pins for every test: threads, determinism, auto precision."""

import os

import torch

from semisup.config import build_config
from semisup.experiment import build_trainer


def test_threads_and_deterministic_algorithms_are_pinned():
    assert torch.get_num_threads() == int(os.environ.get("SEMISUP_TEST_THREADS", "1"))
    assert torch.are_deterministic_algorithms_enabled()


def test_auto_precision_runs_as_the_test_precision_and_is_written_into_the_config():
    precision = os.environ.get("SEMISUP_TEST_PRECISION", "fp32")
    cfg = build_config(None, {"train.progress": False})
    auto = build_trainer(cfg, None)
    assert cfg.train.precision == precision
    assert auto.runtime.autocast_dtype == {"fp32": None, "bf16": torch.bfloat16}[precision]
    explicit = build_trainer(build_config(None, {"train.precision": "bf16"}), None)
    assert explicit.runtime.autocast_dtype == torch.bfloat16  # a precision test's own
