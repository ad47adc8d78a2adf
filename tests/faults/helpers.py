"""Shared by the fault tests: the CLI in this process, the clean-failure check, file snapshots."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from semisup.commands.cli import main
from semisup.engine.checkpoint import load_checkpoint

# A few steps of FixMatch on digits: every evaluation writes a checkpoint.
TINY = [
    "--algorithm",
    "fixmatch",
    "--steps",
    "4",
    "--set",
    "train.eval_every=2",
    "train.batch_size=8",
    "train.progress=false",
    "train.tensorboard=false",
    "model.name=cnn",  # not chosen by timing: the model of every run is the same
]
FAST = [*TINY, "algorithm.mu=2"]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """`semisup ARGV` in this process: (exit status, stdout, stderr)."""
    code = main([*argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_clean_failure(code: int, err: str, fragment: str) -> None:
    """Exit status 2, exactly one `error:` line holding `fragment`, and no traceback."""
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, err
    assert len(lines) == 1, err
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in err


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (relative path) with the SHA-256 of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def assert_unchanged(before: dict[str, str], folder: Path) -> None:
    """The files of `before` are there with the same bytes, and nothing else but a lock file."""
    after = snapshot(folder)
    assert {k: after.get(k) for k in before} == before
    assert {Path(k).name for k in set(after) - set(before)} <= {".lock"}


def checkpoint_tensors(state: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of a nested checkpoint dict, by path."""
    found = {}
    for key, value in state.items():
        path = f"{prefix}/{key}"
        if isinstance(value, torch.Tensor):
            found[path] = value
        elif isinstance(value, dict):
            found.update(checkpoint_tensors(value, path))
        elif isinstance(value, (list, tuple)):
            found.update(checkpoint_tensors(dict(enumerate(value)), path))
    return found


def metrics(run: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock times."""
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "wall_seconds"} for line in lines]


def assert_same_run(a: Path, b: Path) -> None:
    """Two run directories end in bit-identical checkpoints and equal metrics.jsonl."""
    state_a, state_b = load_checkpoint(a / "checkpoint.pt"), load_checkpoint(b / "checkpoint.pt")
    assert state_a["step"] == state_b["step"]
    for section in ("algorithm", "ema", "optimizer", "callbacks", "samplers", "meter"):
        tensors_a = checkpoint_tensors(state_a[section])
        tensors_b = checkpoint_tensors(state_b[section])
        assert tensors_a.keys() == tensors_b.keys(), section
        for name, tensor in tensors_a.items():
            assert torch.equal(tensor, tensors_b[name]), f"{section}{name}"
    assert metrics(a) == metrics(b)


def assert_finite_checkpoint(run: Path, step: int) -> None:
    """RUN/checkpoint.pt is of `step`, holds only finite values, and metrics.jsonl matches it."""
    state = load_checkpoint(run / "checkpoint.pt")
    assert state["step"] == step
    tensors = checkpoint_tensors({k: state[k] for k in ("algorithm", "ema", "optimizer")})
    tensors |= checkpoint_tensors(state["callbacks"])
    assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())
    assert [r["step"] for r in metrics(run)] == [r["step"] for r in state["history"]]
    assert not [p.name for p in run.iterdir() if ".tmp-" in p.name]
