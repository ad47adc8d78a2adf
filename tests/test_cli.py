import json

import numpy as np
import pytest
from PIL import Image

from semisup.commands.cli import main

FAST = ["--steps", "4", "--set", "train.eval_every=2", "train.batch_size=8", "algorithm.mu=2"]


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_train_writes_the_run_directory_and_evaluate_reads_it(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = run(capsys, "train", *FAST, "--out", str(out))
    assert code == 0
    # Without a config file the practical defaults run FlexMatch (algorithm.name: auto).
    assert "flexmatch: test accuracy" in stdout and "--algorithm supervised" in stdout
    assert {"config.yaml", "metrics.jsonl", "checkpoint.pt", "summary.json"} <= {
        p.name for p in out.iterdir()
    }
    summary = json.loads((out / "summary.json").read_text())
    for key in (
        "algorithm",
        "dataset",
        "num_labels",
        "seed",
        "steps",
        "test_accuracy",
        "test_balanced_accuracy",
        "median_last20_accuracy",
        "wall_seconds",
    ):
        assert key in summary
    assert summary["algorithm"] == "flexmatch" and summary["num_labels"] == 40
    config = (out / "config.yaml").read_text()
    assert "threshold: 0.95" in config and "name: cnn" in config and "lr: 0.03" in config

    code, stdout, _ = run(capsys, "evaluate", str(out))
    assert code == 0
    result = json.loads(stdout)
    assert result["step"] == 4
    assert result["test_accuracy"] == pytest.approx(summary["test_accuracy"])


def test_resume_continues_a_finished_run_with_more_steps(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(capsys, "train", *FAST, "--out", str(out))[0] == 0
    code, _, err = run(capsys, "train", "--resume", "--out", str(out), "--steps", "6")
    assert code == 0 and "resuming" in err and "at step 4" in err
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6]
    code, _, err = run(capsys, "train", "--resume", "--out", str(out), "--set", "train.seed=3")
    assert code == 2 and "cannot change train.seed when resuming" in err


def test_an_existing_run_is_never_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(capsys, "train", *FAST, "--out", str(out))[0] == 0
    code, _, err = run(capsys, "train", *FAST, "--out", str(out))
    assert code == 2 and "already holds a run; continue it with --resume" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--algorithm", "fixmach"], "error: unknown algorithm 'fixmach'. Valid algorithms:"),
        (["--dataset", "mnits"], "error: unknown dataset 'mnits'. Valid datasets:"),
        (["--set", "train.stepz=3"], "error: unknown config key 'train.stepz'"),
        (["--set", "algorithm.treshold=0.9"], "error: unknown key algorithm.treshold"),
        (["--set", "train.steps=many"], "error: train.steps must be int or null, got 'many'"),
        (["--num-labels", "5000"], "error: num_labels=5000 is more than the 1347 training images"),
        (["--num-labels", "5"], "error: num_labels=5 is less than the number of classes (10)"),
        (["--device", "cuda:0"], "error: device cuda:0 was requested but no CUDA GPU"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, capsys, argv, message):
    import torch

    if "cuda" in argv[-1] and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    code, _, err = run(capsys, "train", *FAST, *argv, "--out", str(tmp_path / "run"))
    assert code == 2
    assert err.strip().splitlines()[-1].startswith(message)
    assert "Traceback" not in err


def test_missing_data_dir_is_a_clear_error(tmp_path, capsys):
    code, _, err = run(
        capsys,
        "train",
        "--dataset",
        "mnist",
        "--data-dir",
        str(tmp_path / "none"),
        "--set",
        "data.download=false",
        "--out",
        str(tmp_path / "run"),
    )
    assert code == 2 and err.splitlines()[-1].startswith("error: ") and "Traceback" not in err
    assert f"not found in {tmp_path / 'none'}" in err and "data.download=true" in err


def _write_folder(root, classes=("cat", "dog"), per_class=6):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"{i}.png")


def test_folder_with_a_corrupt_image_trains_and_reports_the_skip(tmp_path, capsys):
    data = tmp_path / "images"
    _write_folder(data)
    (data / "train" / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    code, _, err = run(
        capsys,
        "train",
        *FAST,
        "--dataset",
        "folder",
        "--data-dir",
        str(data),
        "--num-labels",
        "4",
        "--out",
        str(tmp_path / "run"),
    )
    assert code == 0
    assert "broken.jpg" in err and "skipp" in err.lower()


def test_empty_class_folder_is_a_clear_error(tmp_path, capsys):
    data = tmp_path / "images"
    _write_folder(data)
    (data / "train" / "bird").mkdir()
    code, _, err = run(
        capsys,
        "train",
        *FAST,
        "--dataset",
        "folder",
        "--data-dir",
        str(data),
        "--out",
        str(tmp_path / "run"),
    )
    assert code == 2 and err.splitlines()[-1].startswith("error: ") and "bird" in err


def test_list_shows_algorithms_datasets_and_models(capsys):
    code, stdout, _ = run(capsys, "list")
    assert code == 0
    for name in ("fixmatch", "supervised", "digits", "mnist", "folder", "wrn28_2", "cnn"):
        assert f"  {name} " in stdout
