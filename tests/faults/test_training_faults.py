"""Faults while training: a full disk, a read-only disk, NaN anywhere, signals, closed pipes.

Each fault stops the run with one `error:` line (or the interrupt line) and leaves a finite
checkpoint with metrics.jsonl matching it; resuming then ends exactly where an uninterrupted
run ends (`finished_run`, the same command without the fault).
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import semisup.files
from semisup.algorithms.fixmatch import FixMatch
from semisup.augment.ctaugment import CTAugment
from semisup.engine.checkpoint import load_checkpoint

from .helpers import (
    FAST,
    assert_clean_failure,
    assert_finite_checkpoint,
    assert_same_run,
    metrics,
    run_cli,
)


def _train(capsys, out: Path, *extra: str) -> tuple[int, str]:
    code, _, err = run_cli(capsys, "train", *FAST, "--out", str(out), "--no-report", *extra)
    return code, err


def _resume(capsys, out: Path, *extra: str) -> tuple[int, str]:
    code, _, err = run_cli(capsys, "train", "--resume", "--out", str(out), "--no-report", *extra)
    return code, err


# ============ a full or read-only disk ============
def _failing_save(monkeypatch, fail_at: int, error: BaseException) -> None:
    """torch.save raises `error` on its `fail_at`-th call (1-based), after writing some bytes."""
    save, calls = torch.save, []

    def save_or_fail(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == fail_at:
            f.write(b"partial bytes of a checkpoint")
            raise error
        return save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_or_fail)


DISK_ERRORS = [
    RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 1536 vs 1480"),
    OSError(errno.ENOSPC, "No space left on device"),
    OSError(errno.EROFS, "Read-only file system"),
    OSError(errno.EDQUOT, "Disk quota exceeded"),
]


@pytest.mark.parametrize("error", DISK_ERRORS, ids=lambda e: type(e).__name__ + str(e.args[0]))
@pytest.mark.parametrize("fail_at", [1, 2])
def test_checkpoint_write_fails(tmp_path, capsys, monkeypatch, finished_run, error, fail_at):
    out = tmp_path / "run"
    _failing_save(monkeypatch, fail_at, error)
    code, err = _train(capsys, out)
    assert_clean_failure(code, err, f"cannot write {out / 'checkpoint.pt'}")
    assert "the previous checkpoint.pt (if any) is unchanged" in err
    if fail_at == 1:
        assert not (out / "checkpoint.pt").exists() and metrics(out) == []
    else:
        assert_finite_checkpoint(out, step=2)
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]
    monkeypatch.undo()
    assert _resume(capsys, out)[0] == 0
    assert_same_run(out, finished_run)


@pytest.mark.parametrize("name", ["metrics.jsonl", "config.yaml", "summary.json", "history.jsonl"])
def test_other_writes_fail(tmp_path, capsys, monkeypatch, finished_run, name):
    """A full disk while writing `name`: that file keeps its old content, the run resumes."""
    out, sync = tmp_path / "run", semisup.files._sync_file
    stem, suffix = name.split(".")
    failed = []

    def sync_or_fail(path):
        ours = path.name.startswith(f".{stem}.tmp-") and path.suffix == f".{suffix}"
        started = name != "metrics.jsonl" or (out / "checkpoint.pt").exists()
        if ours and started and not failed:
            failed.append(path)
            raise OSError(errno.ENOSPC, "No space left on device")
        sync(path)

    monkeypatch.setattr(semisup.files, "_sync_file", sync_or_fail)
    code, err = _train(capsys, out)
    assert_clean_failure(code, err, f"cannot write {out / name}: No space left on device")
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]
    if name == "metrics.jsonl":  # written after the checkpoint: still the previous history
        assert load_checkpoint(out / "checkpoint.pt")["step"] == 2 and metrics(out) == []
    monkeypatch.undo()
    if (out / "checkpoint.pt").exists():
        assert _resume(capsys, out)[0] == 0
    else:  # failed before the run was under way (config.yaml is written last): start it again
        assert not (out / "config.yaml").exists()
        assert _train(capsys, out)[0] == 0
    assert_same_run(out, finished_run)


@contextlib.contextmanager
def _tmpfs(path: Path, size: str):
    """A small tmpfs at `path` (root only; the test is skipped where mounting is not allowed)."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_really_full_disk(tmp_path, capsys, finished_run):
    """A tmpfs with room for one checkpoint but not for a second beside it."""
    size = (finished_run / "checkpoint.pt").stat().st_size
    with _tmpfs(tmp_path / "disk", f"{size * 3 // 2 // 1024}k") as disk:
        out = disk / "run"
        code, err = _train(capsys, out)
        assert_clean_failure(code, err, f"cannot write {out / 'checkpoint.pt'}")
        assert_finite_checkpoint(out, step=2)
        shutil.copytree(out, tmp_path / "moved")
    assert _resume(capsys, tmp_path / "moved")[0] == 0
    assert_same_run(tmp_path / "moved", finished_run)


def test_a_read_only_disk(tmp_path, capsys, finished_run):
    with _tmpfs(tmp_path / "disk", "16m") as disk:
        shutil.copytree(finished_run, disk / "run")
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        code, err = _resume(capsys, disk / "run", "--steps", "6")
        assert_clean_failure(code, err, "Read-only file system; choose another --out")
        assert_same_run(disk / "run", finished_run)


# ============ NaN and infinity ============
def _break_forward(monkeypatch, at_step: int, damage) -> None:
    """FixMatch's forward calls `damage(algorithm, out)` at step `at_step` (0-based)."""
    forward = FixMatch.forward

    def broken(self, batch, step):
        out = forward(self, batch, step)
        if step == at_step:
            damage(self, out)
        return out

    monkeypatch.setattr(FixMatch, "forward", broken)


def _nan_loss(algorithm, out):
    out["loss"] = out["loss"] * math.nan


def _inf_loss(algorithm, out):
    out["loss"] = out["loss"] + math.inf


def _nan_gradients(algorithm, out):
    weight = next(algorithm.model.parameters())
    out["loss"] = out["loss"] + (weight * 0).abs().sqrt().sum()  # value 0, gradient NaN


def _inf_batchnorm_statistics(algorithm, out):
    norm = next(m for m in algorithm.model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    norm.running_var = torch.full_like(norm.running_var, math.inf)  # as an overflow leaves it


def _nan_state_output(algorithm, out):
    out["state"] = {"queue": torch.full((3,), math.nan)}


NONFINITE = [
    (_nan_loss, "the loss became non-finite"),
    (_inf_loss, "the loss became non-finite"),
    (_nan_gradients, "the gradients became non-finite"),
    # The EMA averages the inf into its statistics (inf − inf: NaN), and CTAugment's feedback,
    # which the EMA model gives, turns NaN too.
    (
        _inf_batchnorm_statistics,
        "the model buffers (BatchNorm statistics), EMA model and ctaugment state became",
    ),
    (_nan_state_output, "the state outputs became non-finite"),
]


@pytest.mark.parametrize(("damage", "message"), NONFINITE)
def test_nonfinite_stops_with_a_finite_checkpoint(tmp_path, capsys, monkeypatch, damage, message):
    out = tmp_path / "run"
    _break_forward(monkeypatch, 2, damage)
    code, err = _train(capsys, out)
    assert_clean_failure(code, err, f"training stopped at step 3: {message}")
    assert f"the last good checkpoint is {out / 'checkpoint.pt'} (step 2)" in err
    assert "--set optim.lr=0.003" in err
    assert_finite_checkpoint(out, step=2)
    monkeypatch.undo()
    code, err = _resume(capsys, out, "--set", "optim.lr=0.01")
    assert code == 0 and "optim.lr changed from 0.03 to 0.01" in err


def _break_after_step(monkeypatch, at_step: int, damage) -> None:
    """`damage(trainer-less optimizer)` right after optimizer step `at_step` (0-based)."""
    decay, calls = semisup.engine.trainer.decay_kernels, []

    def decay_then_damage(optimizer, settings, lr):
        decay(optimizer, settings, lr)
        calls.append(1)
        if len(calls) == at_step + 1:
            damage(optimizer)

    monkeypatch.setattr(semisup.engine.trainer, "decay_kernels", decay_then_damage)


def _inf_weight(optimizer):
    optimizer.param_groups[0]["params"][0].data.view(-1)[0] = math.inf


def _nan_momentum(optimizer):
    state = optimizer.state[optimizer.param_groups[0]["params"][0]]
    state["momentum_buffer"].view(-1)[0] = math.nan


def _nan_cta_rates(monkeypatch, at_call: int) -> None:
    update, calls = CTAugment.update, []

    def update_then_damage(self, policy, proximity):
        calls.append(1)
        update(self, policy, proximity)
        if len(calls) == at_call:
            self._rates[0, 0, 0] = math.nan  # as a NaN proximity from an overflowing EMA would

    monkeypatch.setattr(CTAugment, "update", update_then_damage)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_inf_weight, "the model parameters, EMA model and ctaugment state became non-finite"),
        (_nan_momentum, "the optimizer state became non-finite"),
        ("cta", "the ctaugment state became non-finite"),
    ],
)
def test_nonfinite_state_after_the_step_stops(tmp_path, capsys, monkeypatch, damage, message):
    out = tmp_path / "run"
    if damage == "cta":
        _nan_cta_rates(monkeypatch, 3)
    else:
        _break_after_step(monkeypatch, 2, damage)
    code, err = _train(capsys, out)
    assert_clean_failure(code, err, f"training stopped at step 3: {message}")
    assert_finite_checkpoint(out, step=2)
    monkeypatch.undo()
    assert _resume(capsys, out)[0] == 0


@pytest.mark.parametrize(
    "damage",
    [_nan_loss, _nan_gradients, _inf_batchnorm_statistics, _nan_state_output, _inf_weight, "cta"],
)
def test_skipping_never_keeps_a_nonfinite_value(tmp_path, capsys, monkeypatch, damage):
    out = tmp_path / "run"
    if damage == "cta":
        _nan_cta_rates(monkeypatch, 3)
    elif damage is _inf_weight:
        _break_after_step(monkeypatch, 2, damage)
    else:
        _break_forward(monkeypatch, 2, damage)
    code, err = _train(capsys, out, "--set", "train.nonfinite=skip")
    assert code == 0 and "skipped step 3: non-finite" in err
    assert_finite_checkpoint(out, step=4)
    assert metrics(out)[-1]["skipped_steps"] == 1


def test_skipped_first_step_leaves_no_optimizer_state(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    _break_after_step(monkeypatch, 0, _inf_weight)
    code, err = _train(capsys, out, "--set", "train.nonfinite=skip", "train.eval_every=1")
    assert code == 0 and "skipped step 1" in err
    first = load_checkpoint(out / "checkpoint.pt")
    assert first["step"] == 4 and metrics(out)[0]["skipped_steps"] == 1


# ============ signals ============
def _signal_at(monkeypatch, at_step: int, signals: list[int]) -> None:
    def send(algorithm, out):
        for number in signals:
            os.kill(os.getpid(), number)

    _break_forward(monkeypatch, at_step, send)


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_checkpoints_the_step_then_stops(
    tmp_path, capsys, monkeypatch, finished_run, number
):
    out = tmp_path / "run"
    _signal_at(monkeypatch, 2, [number])
    code, err = _train(capsys, out)
    name = signal.Signals(number).name
    assert code == 130 and f"interrupted: {name} at step 3: training stopped" in err
    assert "Traceback" not in err and "--resume" in err
    assert_finite_checkpoint(out, step=3)
    monkeypatch.undo()
    assert _resume(capsys, out)[0] == 0
    assert_same_run(out, finished_run)


def test_a_second_signal_stops_at_once(tmp_path, capsys, monkeypatch, finished_run):
    out = tmp_path / "run"
    _signal_at(monkeypatch, 2, [signal.SIGINT, signal.SIGTERM])
    code, err = _train(capsys, out)
    assert code == 130 and err.rstrip().endswith("interrupted") and "Traceback" not in err
    assert_finite_checkpoint(out, step=2)
    monkeypatch.undo()
    assert _resume(capsys, out)[0] == 0
    assert_same_run(out, finished_run)


def test_handlers_are_restored(tmp_path, capsys):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    assert _train(capsys, tmp_path / "run")[0] == 0
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


# ============ output pipes ============
class ClosedPipe:
    """A stdout whose reader went away (`| head`)."""

    def write(self, text):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    def flush(self):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")


@pytest.mark.parametrize("output_format", ["json", "csv"])
def test_a_closed_pipe_ends_quietly(finished_run, tmp_path, capsys, monkeypatch, output_format):
    image = tmp_path / "seven.png"
    Image.fromarray(np.full((8, 8), 128, np.uint8)).save(image)
    monkeypatch.setattr("sys.stdout", ClosedPipe())
    code, _, err = run_cli(
        capsys, "predict", str(finished_run), str(image), "--format", output_format
    )
    assert code == 141 and "Traceback" not in err and "error" not in err
