"""Distributed data parallel on CPU: 2 processes with the gloo backend, started by torchrun."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.ddp

WORKER = Path(__file__).with_name("ddp_worker.py")
COMMON = [
    "train.steps=4",
    "train.eval_every=2",
    "train.batch_size=16",
    "train.progress=false",
    "algorithm.mu=2",
]
# Deterministic views and no BatchNorm: each image's gradient is then independent of which
# rank holds it, so 2 ranks x 8 images must equal 1 process x 16 images.
EQUIVALENT = [
    *COMMON,
    "augment.strong=none",
    "augment.cutout=false",
    "augment.weak_shift=0",
    "augment.hflip=false",
    "model.norm=none",
    "algorithm.threshold=0.5",
    "train.precision=fp32",  # the tolerances are fp32 sums in another order, whatever auto is
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(nproc: int, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_two_ranks_match_one_process_with_the_same_global_batch(tmp_path):
    _torchrun(2, str(WORKER), str(tmp_path / "ddp"), *EQUIVALENT)
    single = subprocess.run(
        [sys.executable, str(WORKER), str(tmp_path / "single"), *EQUIVALENT],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert single.returncode == 0, single.stderr
    rank0 = torch.load(tmp_path / "ddp" / "rank0.pt", weights_only=False)
    rank1 = torch.load(tmp_path / "ddp" / "rank1.pt", weights_only=False)
    alone = torch.load(tmp_path / "single" / "rank0.pt", weights_only=False)
    for name, value in rank0["algorithm"].items():
        assert torch.equal(value, rank1["algorithm"][name]), name  # ranks hold identical weights
        assert torch.allclose(value, alone["algorithm"][name], atol=1e-5), name
    for name, value in rank0["ema"].items():
        assert torch.allclose(value, alone["ema"][name], atol=1e-5), name
    for a, b in zip(rank0["history"], alone["history"], strict=True):
        assert a["test_accuracy"] == pytest.approx(b["test_accuracy"], abs=1 / 450)
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)


def test_ctaugment_rates_and_weights_stay_identical_across_ranks(tmp_path):
    _torchrun(2, str(WORKER), str(tmp_path), *COMMON, "augment.strong=ctaugment")
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    for name, value in rank0["algorithm"].items():
        assert torch.equal(value, rank1["algorithm"][name]), name
    rates0 = rank0["callbacks"]["ctaugment"]["rates"]
    rates1 = rank1["callbacks"]["ctaugment"]["rates"]
    changed = 0
    for op, vectors in rates0.items():
        for a, b in zip(vectors, rates1[op], strict=True):
            assert torch.equal(a, b), op
            changed += int((a != 1).any())
    assert changed > 0  # the rates did move: 4 steps x 16 probes from both ranks


def test_torchrun_cli_writes_one_run_from_rank_zero(tmp_path):
    result = _torchrun(
        2,
        "-m",
        "semisup",
        "train",
        "--steps",
        "4",
        "--out",
        str(tmp_path / "run"),
        "--set",
        "train.eval_every=2",
        "train.batch_size=16",
        "algorithm.mu=2",
        "train.tensorboard=false",
        cwd=tmp_path,
    )
    assert result.stdout.count("run saved in") == 1  # only rank 0 prints
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 4
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in metrics] == [2, 4]
    assert "on 2 processes" in result.stderr


def test_torchrun_runs_the_supervised_phase_then_the_algorithm(tmp_path):
    result = _torchrun(
        2,
        "-m",
        "semisup",
        "train",
        "--steps",
        "2",
        "--out",
        str(tmp_path / "run"),
        "--no-report",
        "--set",
        "train.supervised_steps=4",
        "train.eval_every=2",
        "train.batch_size=16",
        "algorithm.mu=2",
        "train.tensorboard=false",
        cwd=tmp_path,
    )
    assert result.stdout.count("started from 4 steps of supervised training") == 1
    phase = json.loads((tmp_path / "run" / "supervised-first" / "summary.json").read_text())
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (phase["steps"], summary["steps"], summary["supervised_phase"]["steps"]) == (4, 2, 4)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["flexmatch", "freematch", "softmatch", "adamatch"])
def test_gathered_algorithm_state_is_the_same_on_every_rank(tmp_path, algorithm):
    # Their state (a pseudo-label table, EMAs of confidences and class distributions) is
    # computed from every rank's batch; it must match a single process with the global batch.
    # AdaMatch's threshold is the mean confidence of each rank's own labeled batch (as in USB),
    # so its weights, and with them its later estimates, differ slightly from one process.
    settings = [s for s in EQUIVALENT if not s.startswith("algorithm.threshold")]
    settings.append(f"algorithm.name={algorithm}")
    if algorithm == "flexmatch":
        settings.append("algorithm.threshold=0.11")  # 4 steps predict max p ≈ 0.10-0.13
    _torchrun(2, str(WORKER), str(tmp_path / "ddp"), *settings)
    single = subprocess.run(
        [sys.executable, str(WORKER), str(tmp_path / "single"), *settings],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert single.returncode == 0, single.stderr
    rank0 = torch.load(tmp_path / "ddp" / "rank0.pt", weights_only=False)["algorithm"]
    rank1 = torch.load(tmp_path / "ddp" / "rank1.pt", weights_only=False)["algorithm"]
    alone = torch.load(tmp_path / "single" / "rank0.pt", weights_only=False)["algorithm"]
    if algorithm == "flexmatch":
        assert (rank0["selected_label"] >= 0).any()  # the table was written
    for name, value in rank0.items():
        assert torch.equal(value, rank1[name]), name
        if algorithm != "adamatch":
            assert torch.allclose(value.float(), alone[name].float(), atol=1e-5), name
