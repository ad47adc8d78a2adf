import json
import os
import shlex
import subprocess
import sys
import time

import pytest
import torch

from semisup import planning, step_timing
from semisup.commands.cli import build_parser, main
from semisup.commands.process import tune_allocator
from semisup.commands.rundir import flag_overrides
from semisup.commands.train import baseline_command
from semisup.config import build_config
from semisup.experiment import build_run, build_trainer, prepare_data
from semisup.models import build_model

QUIET = {"train.progress": False, "train.tensorboard": False}


def _plan(overrides, started=None):
    cfg = build_config(None, {**QUIET, **overrides})
    data = prepare_data(cfg)
    plan = planning.plan_run(cfg, data, time.monotonic() if started is None else started)
    return cfg, data, plan


def _fake_pass(seconds_by_width):
    """time_forward_backward stand-in: seconds by the CNN's width (its classifier's inputs)."""

    def timed(model, images, runtime, repeats=1):
        return seconds_by_width[model.fc.in_features // 4]

    return timed


def test_paper_defaults_are_the_papers_values():
    paper = {"train.defaults": "paper", "train.time_budget": None}  # no digits preset budget
    cfg, _, plan = _plan({**paper, "algorithm.name": "mixmatch"})
    t = cfg.train
    assert (t.steps, t.batch_size, t.eval_every) == (2**20, 64, 1024)
    assert (t.ema_warmup, t.scale_schedules, plan.deadline) == (False, False, None)
    assert t.ema_buffers == "copy"  # the original code's EMA
    assert cfg.augment.labeled is None  # weak, the papers' labeled view, in build_run
    assert "rampup_steps" not in cfg.algorithm  # the published 16,384 stays
    assert cfg.model["name"] == "auto"  # the papers' network by image size, in build_run


def test_practical_run_of_given_steps_gets_short_run_settings(monkeypatch):
    monkeypatch.setattr(planning, "time_forward_backward", _fake_pass({16: 0.01, 32: 0.02}))
    steps = {"train.steps": 4096, "algorithm.name": "mixmatch"}
    cfg, _, plan = _plan(steps)
    t = cfg.train
    assert t.defaults == "practical" and plan.deadline is None and t.time_budget is None
    assert (t.batch_size, t.eval_every, t.ema_warmup) == (16, 4096 // 20, True)
    assert cfg.model["bn_momentum"] == 0.1 and t.ema_buffers == "average"
    assert cfg.augment.labeled == "weak"  # grey digits: SimCLR's view is for colour images
    assert cfg.algorithm["rampup_steps"] == 64  # 16,384 · 4,096 / 2^20
    mine, _, _ = _plan({**steps, "algorithm.rampup_steps": 500, "model.bn_momentum": 0.01})
    assert mine.algorithm["rampup_steps"] == 500 and mine.model["bn_momentum"] == 0.01


@pytest.mark.parametrize(
    ("given", "colour", "view"),
    [
        (None, True, "simclr"),
        (None, False, "weak"),
        ("weak", True, "weak"),
        ("simclr", False, "simclr"),
    ],
)
def test_practical_runs_give_colour_labeled_images_the_simclr_view(given, colour, view):
    given_keys = {"train.steps": 4096, "model.name": "cnn", "algorithm.name": "fixmatch"}
    cfg = build_config(None, {**given_keys, "augment.labeled": given})
    notes = planning.step_settings(cfg, colour)
    assert cfg.augment.labeled == view
    announced = "labeled images get SimCLR's crop and colour jitter" in notes
    assert announced == (given is None and colour)


@pytest.mark.parametrize(
    ("share", "wide", "chosen"),
    [(0.0, 0.02, {"width": 32}), (0.0, 0.05, {}), (0.5, 0.01, {"width": 32}), (0.5, 0.02, {})],
)
def test_model_is_the_largest_that_leaves_time_for_enough_steps(monkeypatch, share, wide, chosen):
    # 60 s, 2,000 steps: the wide CNN fits at 0.02 s per pass (40 s < 0.93 · 60), not at 0.05.
    # With half the budget for a supervised phase, the algorithm's 30 s fit 0.01 s, not 0.02.
    monkeypatch.setattr(planning, "time_forward_backward", _fake_pass({16: 0.001, 32: wide}))

    def sized(cfg, data, seconds):
        cfg.train.steps = 3000
        return "sized"

    monkeypatch.setattr(planning, "size_to_budget", sized)
    monkeypatch.setattr(planning, "size_supervised_phase", sized)
    cfg, _, _ = _plan({"train.time_budget": "60s", "train.supervised_first": share})
    assert cfg.model == {"name": "cnn", **chosen, "bn_momentum": 0.1}


@pytest.mark.parametrize(
    ("native", "bf16_seconds", "expected"),
    [(True, 0.5, "bf16"), (True, 0.95, "fp32"), (False, 0.1, "fp32")],
)
def test_cpu_precision_is_bf16_only_when_native_and_faster(
    monkeypatch, measured_precision, native, bf16_seconds, expected
):
    def timed(model, images, runtime, repeats=1):
        return bf16_seconds if runtime.autocast_dtype == torch.bfloat16 else 1.0

    monkeypatch.setattr(planning, "cpu_has_native_bf16", lambda: native)
    monkeypatch.setattr(planning, "time_forward_backward", timed)
    cfg, _, _ = _plan({"train.steps": 20, "model.name": "cnn", "train.device": "cpu"})
    assert cfg.train.precision == expected


def test_budget_is_sized_from_measured_steps_and_evaluations():
    started = time.monotonic()
    cfg, data, plan = _plan({"train.time_budget": "40s", "model.name": "cnn"}, started)
    t = cfg.train
    assert t.steps // t.eval_every >= 10 and t.steps > 20
    assert plan.deadline == started + 40  # the budget counts from the command's start
    assert any("measured" in note for note in plan.notes)
    trainer = build_run(cfg, data, None)
    assert trainer.settings.steps == t.steps and trainer.algorithm.info.total_steps == t.steps


def test_steps_and_a_budget_together_keep_the_steps_and_cap_them_at_the_deadline():
    started = time.monotonic()
    cfg, _, plan = _plan({"train.time_budget": "40s", "train.steps": 7}, started)
    assert cfg.train.steps == 7 and plan.deadline == started + 40
    assert not any("measured" in note for note in plan.notes)  # nothing was sized


def test_an_expired_deadline_stops_after_the_step_with_a_final_evaluation(tmp_path):
    cfg = build_config(None, {**QUIET, "train.steps": 50, "train.eval_every": 25})
    trainer = build_trainer(cfg, tmp_path)
    trainer.clock.deadline = time.monotonic()
    summary = trainer.fit()
    assert summary["steps"] == 1 and summary["stopped_at_deadline"]
    assert [r["step"] for r in trainer.history] == [1]


def test_checkpoints_also_follow_the_wall_clock(tmp_path):
    keys = {"train.steps": 4, "train.eval_every": 4, "train.keep_checkpoints": 10}
    cfg = build_config(None, {**QUIET, **keys, "train.checkpoint_every": "0.001s"})
    build_trainer(cfg, tmp_path).fit()
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*.pt")) == [
        f"checkpoint-{step:08d}.pt" for step in (1, 2, 3, 4)
    ]


def test_time_budget_run_ends_within_budget_and_reports_it(tmp_path, capsys):
    out = tmp_path / "run"
    started = time.monotonic()
    argv = ["train", "--time", "20s", "--out", str(out), "--no-report"]
    # SimCLR's labeled view brings a supervised phase (grey digits would get the weak view).
    code = main([*argv, "--set", "train.progress=false", "augment.labeled=simclr"])
    elapsed = time.monotonic() - started
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["time_budget"] == "20s" and summary["device"] == "cpu"
    assert summary["precision"] in ("fp32", "bf16")
    assert summary["steps"] == summary["planned_steps"] or summary["stopped_at_deadline"]
    assert summary["steps_per_second"] > 0 and summary["evaluations"] >= 10
    assert elapsed < 20 + 10  # the budget, plus the final evaluation and the report's slack
    plan = captured.err.splitlines()[1]
    assert plan.startswith("plan: practical defaults; algorithm flexmatch; budget 20s")
    # The supervised phase's evaluations come first, then the algorithm's.
    phase = json.loads((out / "supervised-first" / "summary.json").read_text())
    evaluations = [line for line in captured.out.splitlines() if line.startswith("step ")]
    assert len(evaluations) == phase["evaluations"] + summary["evaluations"]
    assert "steps/s" in evaluations[0] and summary["supervised_phase"]["steps"] == phase["steps"]


def test_baseline_command_runs_the_same_split_and_data(tmp_path):
    folder = tmp_path / "my images"
    cfg = build_config(None, {"data.name": "folder", "data.dir": str(folder), "train.steps": 9})
    cfg.data.num_labels, cfg.data.split_seed, cfg.model = 10, 3, {"name": "cnn", "width": 32}
    cfg.augment.labeled, cfg.augment.hflip, cfg.augment.weak_shift = "simclr", False, 0.25
    words = shlex.split(baseline_command(cfg))
    args = build_parser().parse_args(words[1:])
    again = build_config(None, flag_overrides(args))
    assert again.algorithm == {"name": "supervised"} and again.data.dir == str(folder)
    assert (again.data.num_labels, again.data.split_seed, again.train.steps) == (10, 3, 9)
    assert again.model == {"name": "cnn", "width": 32}
    augment = again.augment
    assert (augment.labeled, augment.hflip, augment.weak_shift) == ("simclr", False, 0.25)


def test_pseudo_label_accuracy_is_not_measured_on_labeled_images(tmp_path):
    # The digits split keeps every image unlabeled too; the labeled ones count as unknown.
    cfg = build_config(None, {**QUIET, "train.steps": 1, "data.num_labels": 1347})
    trainer = build_trainer(cfg, None)
    raw = trainer.batches.next_raw()
    assert raw.u_y is not None and (raw.u_y == -1).all()


def test_command_process_settings():
    assert tune_allocator() is (os.uname().sysname == "Linux")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    code = "import os, semisup; print(os.environ['OMP_WAIT_POLICY'])"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.stdout.strip() == "PASSIVE"


def test_pretrained_weights_keep_the_model_and_probe_it_with_its_options(
    monkeypatch, measured_precision, tmp_path
):
    # The weights fix the architecture: no model is chosen by speed (choose_model would fail
    # here); the precision probe builds the model from its section ("pretrained" is no option).
    monkeypatch.setattr(planning, "choose_model", lambda *args: pytest.fail("model chosen"))
    monkeypatch.setattr(planning, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(planning, "time_forward_backward", lambda *args, **kwargs: 1.0)
    weights = tmp_path / "w.pth"
    torch.save(build_model("cnn", num_classes=10, in_channels=1).state_dict(), weights)
    cfg, _, _ = _plan({"train.time_budget": "60s", "model.pretrained": str(weights)})
    assert cfg.model == {"name": "auto", "pretrained": str(weights)}  # by image size: the CNN
    assert cfg.train.precision == "fp32"  # bf16 measured no faster


@pytest.mark.parametrize(
    ("timed", "enough"),
    [
        ([0.07] * 4, False),  # fast steps: 0.28 s is no steady median
        ([0.07] * 49, False),
        ([0.07] * 50, True),  # ...50 of them are
        ([0.3] * 19, False),  # 5.7 s of a 600 s budget: under 1 %
        ([0.31] * 20, True),  # 6.2 s: 1 % and at least 4 steps
        ([3.0, 3.0], False),  # 1 % but only 2 steps
        ([16.0], False),
        ([16.0, 16.0], True),  # slow steps stop at 3 % of the budget
    ],
)
def test_step_timing_stops_at_a_share_of_the_budget_or_enough_steps(timed, enough):
    assert step_timing.timed_enough(timed, 600.0) is enough
