"""A real `semisup train` process killed with SIGKILL at a random moment resumes bit-identically."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from semisup.algorithms import ALGORITHMS
from semisup.engine.checkpoint import load_checkpoint

STEPS = 8
ARGS = [
    "--steps",
    str(STEPS),
    "--set",
    "train.eval_every=1",
    "train.batch_size=8",
    "train.progress=false",
    "train.tensorboard=false",
]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _train(out: Path, algorithm: str, *extra: str) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "semisup",
        "train",
        "--algorithm",
        algorithm,
        "--out",
        str(out),
        *ARGS,
        *extra,
    ]
    return subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(process: subprocess.Popen) -> None:
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr.decode()[-3000:]


def _evaluations(run: Path) -> int:
    path = run / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def _metrics(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "wall_seconds"} for line in lines]


def _tensors(state: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor in a nested checkpoint dict, by path."""
    found = {}
    for key, value in state.items():
        path = f"{prefix}/{key}"
        if isinstance(value, torch.Tensor):
            found[path] = value
        elif isinstance(value, dict):
            found.update(_tensors(value, path))
        elif isinstance(value, list) and value and isinstance(value[0], torch.Tensor):
            found.update({f"{path}/{i}": t for i, t in enumerate(value)})
    return found


def _kill_and_resume(tmp_path: Path, algorithm: str, seed: int) -> None:
    straight = tmp_path / "straight"
    _finish(_train(straight, algorithm))

    rng = random.Random(seed)
    killed = tmp_path / "killed"
    process = _train(killed, algorithm)
    target = rng.randint(1, STEPS - 2)  # evaluations (= checkpoints) before the kill
    while _evaluations(killed) < target and process.poll() is None:
        time.sleep(0.01)
    time.sleep(rng.uniform(0, 0.3))  # land anywhere: mid-step, mid-evaluation, mid-write
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"

    _finish(_train(killed, algorithm, "--resume"))
    a = load_checkpoint(straight / "checkpoint.pt")
    b = load_checkpoint(killed / "checkpoint.pt")
    assert a["step"] == b["step"] == STEPS
    for section in ("algorithm", "ema", "optimizer", "callbacks", "samplers"):
        ta, tb = _tensors(a[section]), _tensors(b[section])
        assert ta.keys() == tb.keys()
        for name in ta:
            assert torch.equal(ta[name], tb[name]), f"{section}{name}"
    assert _metrics(straight) == _metrics(killed)


@pytest.mark.parametrize("algorithm", ["fixmatch", "remixmatch"])
def test_sigkill_then_resume_is_bit_identical(tmp_path, algorithm):
    _kill_and_resume(tmp_path, algorithm, seed=hash(algorithm) % 1000)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ALGORITHMS.names())
def test_sigkill_then_resume_every_algorithm(tmp_path, algorithm):
    _kill_and_resume(tmp_path, algorithm, seed=7)


@pytest.mark.slow
def test_sigkill_of_a_time_budget_run_resumes_as_an_uninterrupted_run(tmp_path):
    quiet = ["--set", "train.progress=false", "train.tensorboard=false", "train.batch_size=8"]
    killed, straight = tmp_path / "killed", tmp_path / "straight"

    def start(*argv: str) -> subprocess.Popen:
        command = [sys.executable, "-m", "semisup", "train", *argv, *quiet]
        return subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

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
    a, b = load_checkpoint(straight / "checkpoint.pt"), load_checkpoint(killed / "checkpoint.pt")
    assert a["step"] == b["step"] == a["config"]["train"]["steps"]
    for section in ("algorithm", "ema", "optimizer", "callbacks", "samplers"):
        ta, tb = _tensors(a[section]), _tensors(b[section])
        assert ta.keys() == tb.keys()
        for name in ta:
            assert torch.equal(ta[name], tb[name]), f"{section}{name}"
    assert _metrics(straight) == _metrics(killed)
