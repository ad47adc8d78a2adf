"""The supervised phase: its config, its planning, its errors, and its equality with two runs."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

import semisup
from semisup import planning
from semisup.config import build_config
from semisup.experiment import prepare_data
from semisup.run_files import PHASE_DIR
from semisup.supervised_phase import phase_config, phase_seconds

from .helpers import assert_clean_failure, assert_same_run, run_cli

QUIET = {"train.progress": False, "train.tensorboard": False}
# FixMatch after 6 supervised steps, 4 steps of its own, every step evaluated and checkpointed.
RUN = ["--algorithm", "fixmatch", "--steps", "4", "--no-report", "--set", "model.name=cnn"]
ENGINE = ["train.batch_size=8", "train.progress=false", "train.tensorboard=false"]


def test_the_phase_is_the_run_with_supervised_training_for_its_steps():
    keys = {"algorithm.name": "fixmatch", "algorithm.threshold": 0.9, "model.name": "cnn"}
    cfg = build_config(None, {**keys, "train.supervised_steps": 40, "train.time_budget": "1m"})
    cfg.augment.labeled, cfg.train.seed = "simclr", 7
    phase = phase_config(cfg)
    assert phase.algorithm == {"name": "supervised"}
    t = phase.train
    assert (t.steps, t.eval_every, t.time_budget, t.seed) == (40, 4, None, 7)
    assert (t.supervised_first, t.supervised_steps) == (0.0, 0)  # no phase of its own
    assert phase.model == cfg.model and phase.augment == cfg.augment and phase.data == cfg.data
    assert cfg.algorithm["name"] == "fixmatch"  # the run's own config is left as it was


def test_the_phase_gets_its_share_of_the_time_left_or_of_a_resumed_budget():
    cfg = build_config(None, {"train.time_budget": "2m", "train.supervised_first": 0.25})
    deadline = time.monotonic() + 100
    assert phase_seconds(cfg, deadline, resumed=False) == pytest.approx(25, abs=0.5)
    assert phase_seconds(cfg, deadline, resumed=True) == 30  # a quarter of 2 minutes
    cfg.train.supervised_first = 0.0  # a phase of given steps: no deadline of its own
    assert phase_seconds(cfg, deadline, resumed=True) is None


def _plan(overrides):
    cfg = build_config(None, {**QUIET, **overrides})
    plan = planning.plan_run(cfg, prepare_data(cfg), time.monotonic())
    return cfg, plan


def test_a_budget_is_split_between_the_phase_and_the_algorithm():
    # SimCLR's labeled view (which colour images get) brings the phase with it.
    keys = {"train.time_budget": "30s", "model.name": "cnn", "augment.labeled": "simclr"}
    cfg, plan = _plan(keys)
    t = cfg.train
    assert cfg.algorithm["name"] == "flexmatch" and t.supervised_first == 0.5
    # The halves take the same time; a supervised step passes 1/15 of FlexMatch's images.
    assert t.supervised_steps > 2 * t.steps > 0
    assert any(note.startswith("supervised training first for 50%") for note in plan.notes)
    assert any(note.startswith("supervised phase ") for note in plan.notes)


@pytest.mark.parametrize(
    ("overrides", "share", "steps"),
    [
        ({"augment.labeled": "simclr", "algorithm.name": "supervised"}, None, None),
        ({}, None, None),  # grey digits, the weak labeled view: no phase
        ({"train.supervised_first": 0.0}, 0.0, None),  # turned off
        ({"train.supervised_first": 0.25}, 0.25, "sized"),
    ],
)
def test_the_phase_is_only_for_semi_supervised_algorithms_and_can_be_turned_off(
    overrides, share, steps
):
    cfg, _ = _plan({"train.time_budget": "60s", "model.name": "cnn", **overrides})
    assert cfg.train.supervised_first == share
    assert (cfg.train.supervised_steps is not None) == (steps == "sized")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--algorithm", "supervised", "--steps", "3", "--set", "train.supervised_steps=2"],
            "algorithm supervised trains that way throughout: leave them unset",
        ),
        (
            ["--steps", "3", "--set", "train.supervised_first=0.5"],
            "train.supervised_first=0.5 is a share of the time budget, but this run's steps are "
            "set: give --time instead of --steps, or the supervised phase's own length as "
            "train.supervised_steps",
        ),
        (["--set", "train.supervised_first=1"], "train.supervised_first must be in [0, 1)"),
        (["--set", "train.supervised_steps=-1"], "train.supervised_steps must be >= 0"),
    ],
)
def test_settings_that_cannot_run_are_refused_in_one_line(tmp_path, capsys, argv, message):
    code, _, err = run_cli(capsys, "train", "--out", str(tmp_path / "run"), *argv)
    assert_clean_failure(code, err, message)
    assert not (tmp_path / "run").exists()


def test_one_run_with_a_phase_equals_a_supervised_run_then_init_from(tmp_path, capsys):
    """The phase, then the algorithm from its EMA weights: `--init-from` of a supervised run."""
    one, first, second = tmp_path / "one", tmp_path / "first", tmp_path / "second"
    code, out, err = run_cli(
        capsys, "train", *RUN, "train.supervised_steps=6", "train.eval_every=2", *ENGINE,
        "--out", str(one),
    )  # fmt: skip
    assert code == 0, err
    assert f"fixmatch started from 6 steps of supervised training (train.supervised_steps), " \
        f"saved in {one / PHASE_DIR}" in out  # fmt: skip
    supervised = ["--algorithm", "supervised", "--steps", "6", "--no-report", "--set"]
    supervised += ["model.name=cnn", "train.eval_every=1", *ENGINE]
    assert run_cli(capsys, "train", *supervised, "--out", str(first))[0] == 0
    then = [*RUN, "train.eval_every=2", *ENGINE, "--init-from", str(first)]
    assert run_cli(capsys, "train", *then, "--out", str(second))[0] == 0
    assert_same_run(one / PHASE_DIR, first)
    assert_same_run(one, second)
    summary = json.loads((one / "summary.json").read_text())
    assert summary["supervised_phase"]["steps"] == 6 and summary["steps"] == 4


def test_a_run_stopped_between_its_phases_resumes_from_the_finished_phase(tmp_path, capsys):
    argv = ["train", *RUN, "train.supervised_steps=6", "train.eval_every=2", *ENGINE]
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert run_cli(capsys, *argv, "--out", str(straight))[0] == 0
    assert run_cli(capsys, *argv, "--out", str(stopped))[0] == 0
    # What a kill right after the phase leaves: config.yaml (written before it) and the phase.
    for path in [*stopped.glob("checkpoint*.pt"), stopped / "metrics.jsonl"]:
        path.unlink()
    phase_checkpoint = (stopped / PHASE_DIR / "checkpoint.pt").read_bytes()
    code, _, err = run_cli(capsys, *argv, "--out", str(stopped), "--resume")
    assert code == 0, err
    assert "supervised phase: finished earlier (6 steps" in err
    assert (stopped / PHASE_DIR / "checkpoint.pt").read_bytes() == phase_checkpoint  # not rerun
    assert_same_run(straight, stopped)


def test_the_python_api_runs_the_phase_and_refuses_it_for_a_module():
    from sklearn.datasets import load_digits

    bunch = load_digits(n_class=3)
    images = np.rint(bunch.images[:60] * 255 / 16).astype(np.uint8)
    labels = bunch.target[:60].copy()
    labels[12:] = -1
    quick = {"train.batch_size": 8, "algorithm.mu": 2, "train.tensorboard": False}
    result = semisup.train(
        (images, labels), steps=3, config={**quick, "train.supervised_steps": 5}, verbose=False
    )
    assert result.summary["supervised_phase"]["steps"] == 5 and result.summary["steps"] == 3
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    with pytest.raises(ValueError, match="with a module as the model, leave it unset"):
        semisup.train(
            (images, labels), model=module, steps=2, config={**quick, "train.supervised_steps": 2}
        )
