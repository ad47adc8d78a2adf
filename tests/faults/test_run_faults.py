"""Damaged inputs, foreign or damaged run files, concurrent writers: one clean error, no loss.

Each case runs the command in this process against a copy of a finished tiny run (or a fresh
folder) and checks exit status 2, one `error:` line, no traceback, and that every file that
was there before is unchanged.
"""

from __future__ import annotations

import math

import pytest
import torch
import yaml

from semisup.commands.rundir import OUT_ALTERNATIVE
from semisup.engine.checkpoint import load_checkpoint, save_checkpoint
from semisup.files import exclusive_lock

from .helpers import FAST, assert_clean_failure, assert_unchanged, run_cli, snapshot

CONFIG_FILES = [
    (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe binary", "is not text (not UTF-8): pass a YAML file"),
    (b"- a\n- list\n", "must be a mapping of sections"),
    (b"train: [unclosed\n", "is not valid YAML"),
    (b"train: 3\n", "section 'train' must be a mapping of keys to values"),
    (b"train:\n  eval_batch_size: 0\n", "train.eval_batch_size must be >= 1, got 0"),
    (b"optim:\n  lr: .nan\n", "optim.lr must be a finite number, got nan"),
    (b"algorithm:\n  threshold: 7\n", "algorithm.threshold must be in [0, 1], got 7"),
    (b"train:\n  seed: -4\n", "train.seed must be in [0, 4294967295], got -4"),
    (b"trian:\n  steps: 3\n", "unknown config key 'trian.steps'"),
    (b"!!python/object:os.system {}\n", "is not valid YAML"),
]


@pytest.mark.parametrize(("content", "message"), CONFIG_FILES)
def test_bad_config_file(tmp_path, capsys, content, message):
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", *FAST, "--config", str(path), "--out", str(out))
    assert_clean_failure(code, err, message)
    assert not out.exists()


def test_config_that_is_a_folder_or_missing(tmp_path, capsys):
    for path, message in ((tmp_path, "does not exist"), (tmp_path / "nope.yaml", "does not exist")):
        code, _, err = run_cli(capsys, "train", "--config", str(path), "--out", str(tmp_path / "r"))
        assert_clean_failure(code, err, f"config file {path} {message}")


def test_out_is_a_file(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("not a folder")
    for out in (target, target / "run"):
        before = snapshot(tmp_path)
        code, _, err = run_cli(capsys, "train", *FAST, "--out", str(out))
        assert_clean_failure(code, err, OUT_ALTERNATIVE)
        assert_unchanged(before, tmp_path)


def test_out_on_a_read_only_file_system(tmp_path, capsys, monkeypatch):
    def read_only(self, *args, **kwargs):
        raise OSError(30, "Read-only file system", str(self))

    monkeypatch.setattr("pathlib.Path.mkdir", read_only)
    code, _, err = run_cli(capsys, "train", *FAST, "--out", str(tmp_path / "run"))
    assert_clean_failure(code, err, "Read-only file system; choose another --out")


RESUME_MISTAKES = [
    (["--set", "train.seed=3"], "cannot change train.seed when resuming"),
    (["--set", "algorithm.threshold=0.5"], "cannot change algorithm.threshold when resuming"),
    (["--algorithm", "supervised"], "cannot change algorithm.name when resuming"),
    (["--num-labels", "80"], "cannot change data.num_labels when resuming"),
    (["--steps", "3"], "train.steps=3 is less than the 4 steps"),
    (["--set", "optim.lr=-1"], "optim.lr must be > 0, got -1"),
    (["--set", "train.grad_clip=0"], "train.grad_clip must be > 0, got 0"),
    (["--set", "train.nonfinite=ignore"], "train.nonfinite must be one of: stop, skip"),
]


@pytest.mark.parametrize(("argv", "message"), RESUME_MISTAKES)
def test_resume_refuses_to_change_the_run(run_dir, capsys, argv, message):
    before = snapshot(run_dir)
    code, _, err = run_cli(capsys, "train", "--resume", "--out", str(run_dir), *argv)
    assert_clean_failure(code, err, message)
    assert_unchanged(before, run_dir)


def test_resume_needs_a_run(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "--resume")
    assert_clean_failure(code, err, "--resume needs --out RUN_DIR")
    code, _, err = run_cli(capsys, "train", "--resume", "--out", str(tmp_path))
    assert_clean_failure(code, err, "config.yaml does not exist")


def test_a_new_run_never_overwrites_one(run_dir, capsys):
    before = snapshot(run_dir)
    code, _, err = run_cli(
        capsys, "train", *FAST, "--algorithm", "supervised", "--out", str(run_dir)
    )
    assert_clean_failure(code, err, "already holds a run; continue it with --resume")
    assert_unchanged(before, run_dir)


def _rewrite_checkpoint(run_dir, change):
    state = load_checkpoint(run_dir / "checkpoint.pt")
    change(state)
    state.pop("format")
    save_checkpoint(state, run_dir / "checkpoint.pt")


def _set_config(section, key, value):
    def change(state):
        state["config"][section][key] = value

    return change


def _set_nan(state):
    name = next(k for k, v in state["algorithm"].items() if v.is_floating_point())
    state["algorithm"][name].view(-1)[0] = math.nan


def _shrink_a_weight(state):
    name = next(k for k, v in state["algorithm"].items() if v.dim() == 4)
    state["algorithm"][name] = state["algorithm"][name][:1]


FOREIGN_CHECKPOINTS = [
    (_set_config("algorithm", "name", "supervised"), "its algorithm.name is 'supervised'"),
    (_set_config("algorithm", "threshold", 0.7), "its algorithm.threshold is 0.7"),
    (_set_config("data", "num_labels", 80), "its data.num_labels is 80"),
    (_set_config("data", "name", "mnist"), "its data.name is 'mnist'"),
    (_set_config("model", "width", 32), "its model.width is 32"),
    (_set_config("augment", "strong", "randaugment"), "its augment.strong is 'randaugment'"),
    (_set_config("train", "batch_size", 16), "its train.batch_size is 16"),
    (lambda s: s.update(class_names=list("abcdefghij")), "was trained on the classes"),
    (lambda s: s.update(config={"train": 3}), "holds no readable run config"),
    (_set_nan, "holds non-finite values"),
    (_shrink_a_weight, "does not fit the run"),
    (lambda s: s["callbacks"].clear(), "does not fit the run"),
    (lambda s: s.update(step=7), "train.steps=4 is less than the 7 steps"),
]


@pytest.mark.parametrize(("change", "message"), FOREIGN_CHECKPOINTS)
def test_resume_refuses_a_checkpoint_of_another_run(run_dir, capsys, change, message):
    _rewrite_checkpoint(run_dir, change)
    before = snapshot(run_dir)
    code, _, err = run_cli(capsys, "train", "--resume", "--out", str(run_dir))
    assert_clean_failure(code, err, message)
    assert_unchanged(before, run_dir)


DAMAGED_CHECKPOINTS = [
    (lambda b: b[: len(b) // 2], "is corrupt or unreadable"),
    (lambda b: b"", "is corrupt or unreadable"),
    (lambda b: bytes(range(256)) * 8, "is corrupt or unreadable"),
]


@pytest.mark.parametrize(("damage", "message"), DAMAGED_CHECKPOINTS)
@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_damaged_checkpoint(run_dir, capsys, damage, message, command):
    path = run_dir / "checkpoint.pt"
    path.write_bytes(damage(path.read_bytes()))
    before = snapshot(run_dir)
    argv = ["train", "--resume", "--out"] if command == "train" else ["evaluate"]
    code, _, err = run_cli(capsys, *argv, str(run_dir))
    assert_clean_failure(code, err, message)
    assert_unchanged(before, run_dir)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"format": 99}, "is not a semisup checkpoint of format 1 (found 99)"),
        ([1, 2, 3], "is not a semisup checkpoint of format 1 (found 'list')"),
    ],
)
def test_checkpoint_of_another_kind(run_dir, capsys, content, message):
    torch.save(content, run_dir / "checkpoint.pt")
    before = snapshot(run_dir)
    code, _, err = run_cli(capsys, "train", "--resume", "--out", str(run_dir))
    assert_clean_failure(code, err, message)
    assert_unchanged(before, run_dir)


DAMAGED_CONFIGS = [
    (b"", "is not a run's config"),
    (b"\xff\xfe\x00binary", "cannot read"),
    (b"- 1\n", "is not a run's config"),
    (b"train: {steps: [\n", "cannot read"),
    (b"train:\n  ema_decay: 2\n", "train.ema_decay must be in [0, 1), got 2"),
    (b"color:\n  x: 1\n", "unknown config key 'color.x'"),
    (b"algorithm:\n  name: fixmatch\n", "belongs to another run"),  # cut after its first lines
]


@pytest.mark.parametrize(("content", "message"), DAMAGED_CONFIGS)
@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_damaged_config_yaml(run_dir, capsys, content, message, command):
    (run_dir / "config.yaml").write_bytes(content)
    before = snapshot(run_dir)
    argv = ["train", "--resume", "--out"] if command == "train" else ["evaluate"]
    code, _, err = run_cli(capsys, *argv, str(run_dir))
    assert_clean_failure(code, err, message)
    assert_unchanged(before, run_dir)


@pytest.mark.parametrize("resume", [True, False])
def test_one_writer_per_run_directory(run_dir, tmp_path, capsys, resume):
    target = run_dir if resume else tmp_path / "fresh"
    target.mkdir(exist_ok=True)
    before = snapshot(target)
    argv = ["--resume"] if resume else FAST
    with exclusive_lock(target, OUT_ALTERNATIVE):  # as another process running in it would
        code, _, err = run_cli(capsys, "train", *argv, "--out", str(target))
    assert_clean_failure(code, err, "is being written by another semisup process")
    assert_unchanged(before, target)
    assert run_cli(capsys, "train", "--resume", "--out", str(run_dir), "--no-report")[0] == 0


def test_resume_can_lower_the_learning_rate_and_records_it(run_dir, capsys):
    code, _, err = run_cli(
        capsys, "train", "--resume", "--out", str(run_dir), "--steps", "6", "--set", "optim.lr=0.01"
    )
    assert code == 0, err
    assert "optim.lr changed from 0.03 to 0.01" in err
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["optim"]["lr"] == 0.01 and config["train"]["steps"] == 6
    history = [
        yaml.safe_load(line) for line in (run_dir / "history.jsonl").read_text().splitlines()
    ]
    assert [h["event"] for h in history] == ["start", "resume"]
    assert history[1]["step"] == 4
    assert history[1]["changes"] == {"optim.lr": [0.03, 0.01], "train.steps": [4, 6]}
    assert load_checkpoint(run_dir / "checkpoint.pt")["config"]["optim"]["lr"] == 0.01


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
        (["--format", "csv", "--batch-size", "-1"], "--batch-size must be at least 1, got -1"),
    ],
)
def test_bad_predict_options(run_dir, capsys, argv, message):
    code, _, err = run_cli(capsys, "predict", str(run_dir), str(run_dir), *argv)
    assert_clean_failure(code, err, message)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("folder", "it is a folder; give a file name inside it"),
        ("missing/model.pt2", "the folder"),
        (None, "nothing to export: give --onnx PATH and/or --pt2 PATH"),
    ],
)
def test_bad_export_target(run_dir, tmp_path, capsys, target, message):
    (tmp_path / "folder").mkdir()
    argv = [] if target is None else ["--pt2", str(tmp_path / target)]
    before = snapshot(tmp_path)
    code, _, err = run_cli(capsys, "export", str(run_dir), *argv)
    assert_clean_failure(code, err, message)
    assert_unchanged(before, tmp_path)


def test_export_on_a_full_disk_keeps_the_previous_file(run_dir, tmp_path, capsys, monkeypatch):
    path = tmp_path / "model.pt2"
    path.write_bytes(b"the previous export")
    before = snapshot(tmp_path)

    def disk_full(program, target, **kwargs):
        with open(target, "wb") as handle:
            handle.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:626] . PytorchStreamWriter failed")

    monkeypatch.setattr(torch.export, "save", disk_full)
    code, _, err = run_cli(capsys, "export", str(run_dir), "--pt2", str(path))
    assert_clean_failure(code, err, f"cannot write {path}: [enforce fail")
    assert_unchanged(before, tmp_path)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--generations", "0"], "--generations must be at least 1, got 0"),
        (["--alpha", "0"], "--alpha must be > 0, got 0.0"),
        (["--final-temperature", "-1"], "--final-temperature must be > 0, got -1.0"),
        (["--final-temperature", "nan"], "--final-temperature must be a finite number, got nan"),
        (["--plus", "--algorithm", "fixmatch"], "--plus (progressive distribution alignment)"),
    ],
)
def test_bad_crest_options(tmp_path, capsys, argv, message):
    out = tmp_path / "crest"
    code, _, err = run_cli(capsys, "crest", *FAST, *argv, "--out", str(out))
    assert_clean_failure(code, err, message)
    assert not out.exists()


def test_crest_resume_without_its_settings(run_dir, capsys):
    before = snapshot(run_dir)
    code, _, err = run_cli(capsys, "crest", "--resume", "--out", str(run_dir))
    assert_clean_failure(code, err, "cannot resume the CReST run")
    assert_unchanged(before, run_dir)
