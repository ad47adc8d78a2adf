"""A finished tiny run, trained once per session, copied for every test that damages it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from semisup.commands.cli import main

from .helpers import FAST


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A FixMatch run on digits, 4 steps, checkpoints at steps 2 and 4 (read only: copy it)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", *FAST, "--out", str(out), "--no-report"]) == 0
    return out


@pytest.fixture
def run_dir(finished_run: Path, tmp_path: Path) -> Path:
    """A private copy of `finished_run`."""
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy
