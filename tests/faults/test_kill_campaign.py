"""`kill -9` at random moments and in the middle of checkpoint writes, then `--resume`.

Each trial trains a real `semisup train` process, kills it with SIGKILL either at a random
moment after some evaluations or while a checkpoint's temporary file is being written,
resumes it, and compares the final checkpoint (every tensor) and metrics.jsonl with an
uninterrupted run of the same command. The default suite runs a random-moment trial of
FixMatch (CTAugment) and a mid-write trial of ReMixMatch; the campaign (`-m slow`) runs four
trials of each of several algorithms (SimMatch with a labeled batch larger than the labeled
set, on two threads: repeated bank indices in one tensor write used to land in a varying
order) and one of every registered algorithm.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from semisup.algorithms import ALGORITHMS
from semisup.run_files import PHASE_DIR

from .helpers import assert_finite_checkpoint, assert_same_run

STEPS = 8
COMMON = [
    "--steps",
    str(STEPS),
    "--no-report",
    "--set",
    "train.eval_every=1",
    "train.batch_size=8",
    "train.progress=false",
    "train.tensorboard=false",
]


def precision_flag() -> str:
    """The test precision (conftest), so that separate processes never time their own choice."""
    return f"train.precision={os.environ['SEMISUP_TEST_PRECISION']}"


# Per algorithm: extra flags (after COMMON's --set values) and the threads the process uses.
CAMPAIGN = {
    "fixmatch": (["algorithm.mu=2"], 1),  # CTAugment, its rates checkpointed
    "remixmatch": ([], 1),
    # 10 labels and a labeled batch of 16: every batch repeats labeled indices in the bank write
    "simmatch": (["algorithm.mu=2", "algorithm.start_steps=2", "train.batch_size=16"], 2),
    "comatch": (["algorithm.mu=2", "algorithm.queue_size=64"], 1),
    "darp": (["algorithm.warmup_fraction=0.25", "algorithm.period=2"], 1),
    "mixmatch": ([], 1),
    "uda": (["algorithm.mu=2"], 1),
    "supervised": ([], 1),
}


def _start(out: Path, algorithm: str, threads: int, *extra: str) -> subprocess.Popen:
    flags = CAMPAIGN.get(algorithm, ([], 1))[0]
    labels = ["--num-labels", "10"] if algorithm == "simmatch" else []
    command = [sys.executable, "-m", "semisup", "train", "--algorithm", algorithm, *labels]
    command += ["--out", str(out), *COMMON, precision_flag(), *flags, *extra]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(process: subprocess.Popen) -> None:
    _, stderr = process.communicate(timeout=900)
    assert process.returncode == 0, stderr.decode()[-3000:]
    assert b"Traceback" not in stderr


def _evaluations(run: Path) -> int:
    path = run / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def _kill(process: subprocess.Popen, run: Path, moment: str, rng: random.Random) -> None:
    """SIGKILL after a random number of evaluations, at a random moment or mid-write."""
    target = rng.randint(1, STEPS - 2)
    while _evaluations(run) < target and process.poll() is None:
        time.sleep(0.002)
    if moment == "random":
        time.sleep(rng.uniform(0, 0.3))
    else:  # as soon as the next checkpoint's temporary file appears
        while process.poll() is None and not list(run.glob(".checkpoint.tmp-*")):
            time.sleep(0.0005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"


def _trial(
    tmp_path: Path, straight: Path, algorithm: str, threads: int, moment: str, seed: int
) -> None:
    killed = tmp_path / f"killed-{moment}-{seed}"
    _kill(_start(killed, algorithm, threads), killed, moment, random.Random(seed))
    _finish(_start(killed, algorithm, threads, "--resume"))
    assert_finite_checkpoint(killed, STEPS)
    assert_same_run(straight, killed)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, int], Path]:
    """The uninterrupted run of an algorithm on a number of threads, trained on first use."""
    root, runs = tmp_path_factory.mktemp("straight"), {}

    def get(algorithm: str, threads: int) -> Path:
        if (algorithm, threads) not in runs:
            runs[algorithm, threads] = root / f"{algorithm}-{threads}"
            _finish(_start(runs[algorithm, threads], algorithm, threads))
        return runs[algorithm, threads]

    return get


@pytest.mark.parametrize(
    ("algorithm", "moment"), [("fixmatch", "random"), ("remixmatch", "mid-write")]
)
def test_kill_then_resume_is_bit_identical(tmp_path, straight_run, algorithm, moment):
    _trial(tmp_path, straight_run(algorithm, 1), algorithm, 1, moment, seed=3)


@pytest.mark.parametrize("phase", ["supervised", "algorithm"])
def test_kill_in_either_phase_then_resume_is_bit_identical(tmp_path, phase):
    """A run with a supervised phase, killed in the phase (mid-write) or after it, resumed."""
    steps = "train.supervised_steps=6"
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    _finish(_start(straight, "fixmatch", 1, steps))
    watched, moment = (
        (killed / PHASE_DIR, "mid-write") if phase == "supervised" else (killed, "random")
    )
    _kill(_start(killed, "fixmatch", 1, steps), watched, moment, random.Random(2))
    assert (killed / PHASE_DIR / "summary.json").exists() == (phase == "algorithm")
    _finish(_start(killed, "fixmatch", 1, steps, "--resume"))
    assert_same_run(straight / PHASE_DIR, killed / PHASE_DIR)
    assert_same_run(straight, killed)


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(4))
@pytest.mark.parametrize("algorithm", list(CAMPAIGN))
def test_kill_campaign(tmp_path, straight_run, algorithm, trial):
    moment, threads = "mid-write" if trial % 2 else "random", CAMPAIGN[algorithm][1]
    straight = straight_run(algorithm, threads)
    _trial(tmp_path, straight, algorithm, threads, moment, seed=100 * trial + 7)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ALGORITHMS.names())
def test_kill_every_algorithm(tmp_path, straight_run, algorithm):
    _trial(tmp_path, straight_run(algorithm, 1), algorithm, 1, "random", seed=7)


@pytest.mark.slow
def test_sigkill_of_a_time_budget_run_resumes_as_an_uninterrupted_run(tmp_path):
    quiet = ["--no-report", "--set", "train.progress=false", "train.tensorboard=false"]
    killed, straight = tmp_path / "killed", tmp_path / "straight"

    def start(*argv: str) -> subprocess.Popen:
        command = [sys.executable, "-m", "semisup", "train", *argv, *quiet, "train.batch_size=8"]
        command.append(precision_flag())
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    process = start("--time", "30s", "--out", str(killed))
    while _evaluations(killed) < 3 and process.poll() is None:
        time.sleep(0.01)
    time.sleep(random.Random(3).uniform(0, 0.5))
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    _finish(start("--out", str(killed), "--resume"))
    # The plan (steps, evaluations, model, ...) is in config.yaml: run it again, uninterrupted.
    _finish(start("--config", str(killed / "config.yaml"), "--out", str(straight)))
    assert_same_run(straight, killed)
