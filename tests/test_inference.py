"""`semisup.load`, `TrainedModel.predict` and `semisup predict` on real runs (digits, a folder)."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import semisup
import semisup.report
from semisup.commands import cli
from semisup.config import config_from_dict
from semisup.data.digits import load_digits
from semisup.data.folder.dataset import load_folder
from semisup.engine.checkpoint import load_checkpoint
from semisup.engine.metrics import classification_metrics, predict_logits
from semisup.errors import UserError
from semisup.experiment import build_trainer
from semisup.models.inputs import to_model_input


def train(run_dir: Path, *arguments: str) -> None:
    """A short `semisup train` (the HTML report, not tested here, is skipped)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(semisup.report, "report_after_training", lambda run_dir: None)
        code = cli.main(["train", *arguments, "--out", str(run_dir)])
    assert code == 0


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("digits") / "run"
    # EMA decay 0.5: after 60 steps the EMA model then predicts many classes, not one. fp32:
    # the tests compare `predict` (full precision) with the trainer's own evaluation.
    sets = ["train.eval_every=30", "train.batch_size=16", "algorithm.mu=1", "train.ema_decay=0.5"]
    train(
        run_dir, "--steps", "60", "--set", *sets, "train.tensorboard=false", "train.precision=fp32"
    )
    return run_dir


@pytest.fixture(scope="module")
def digits_test() -> tuple[torch.Tensor, torch.Tensor]:
    data = load_digits()
    return data.test_images, data.test_targets


@pytest.fixture(scope="module")
def png_dir(tmp_path_factory: pytest.TempPathFactory, digits_test: tuple) -> Path:
    """The first 12 digits test images as grey PNG files 00.png ... 11.png."""
    folder = tmp_path_factory.mktemp("pngs")
    for i, image in enumerate(digits_test[0][:12]):
        Image.fromarray(image[0].numpy()).save(folder / f"{i:02d}.png")
    return folder


def test_load_matches_the_trainers_ema_model(digits_run: Path, digits_test: tuple) -> None:
    images, targets = digits_test
    trained = semisup.load(digits_run, "cpu")
    assert trained.class_names == tuple(str(c) for c in range(10))
    assert trained.image_shape == (1, 8, 8)
    assert trained.device == torch.device("cpu") and trained.step == 60
    assert isinstance(trained.model, torch.nn.Module) and not trained.model.training
    predictions = trained.predict(images)
    assert len(set(predictions.class_indices.tolist())) >= 3  # the check can fail

    # The trainer's own last evaluation of the EMA model (written by the training process).
    summary = json.loads((digits_run / "summary.json").read_text())
    metrics = classification_metrics(predictions.class_indices, targets, 10)
    assert metrics["confusion_matrix"] == summary["confusion_matrix"]
    assert metrics["accuracy"] == pytest.approx(summary["test_accuracy"])

    # The trainer's EMA module rebuilt from the checkpoint, as `semisup evaluate` does.
    cfg = config_from_dict(yaml.safe_load((digits_run / "config.yaml").read_text()))
    trainer = build_trainer(cfg, None)
    trainer.ema.load_state_dict(load_checkpoint(digits_run / "checkpoint.pt")["ema"])
    logits = predict_logits(trainer.ema.module, images, 1024, torch.device("cpu"), True)
    assert torch.equal(predictions.class_indices, logits.argmax(dim=1))
    torch.testing.assert_close(predictions.probabilities, logits.softmax(dim=1))
    torch.testing.assert_close(predictions.confidences, logits.softmax(dim=1).max(dim=1).values)
    assert predictions.classes == [str(i) for i in logits.argmax(dim=1).tolist()]


def test_predict_takes_paths_pil_images_and_arrays_alike(digits_run: Path, png_dir: Path) -> None:
    trained = semisup.load(digits_run, "cpu")
    paths = sorted(png_dir.glob("*.png"))
    reference = trained.predict([str(p) for p in paths]).probabilities
    batch = trained.preprocess(paths)
    assert batch.dtype == torch.uint8 and batch.shape == (12, 1, 8, 8)
    grey_arrays = [np.asarray(Image.open(p)) for p in paths]  # (H, W)
    rgb_arrays = [np.repeat(a[:, :, None], 3, axis=2) for a in grey_arrays]  # (H, W, 3) → luma
    for images in (
        paths,
        [Image.open(p) for p in paths],
        grey_arrays,
        rgb_arrays,
        np.stack(rgb_arrays).transpose(0, 3, 1, 2),  # (N, 3, H, W): converted to grey
        batch,
    ):
        torch.testing.assert_close(trained.predict(images).probabilities, reference)
    single = trained.predict(paths[3])
    assert len(single) == 1
    torch.testing.assert_close(single.probabilities, reference[3:4])
    assert len(trained.predict([])) == 0


def test_predict_rejects_arrays_it_cannot_read(digits_run: Path) -> None:
    trained = semisup.load(digits_run, "cpu")
    with pytest.raises(UserError, match="must be uint8 with values 0..255, got float32"):
        trained.predict(np.zeros((8, 8), np.float32))
    with pytest.raises(UserError, match=r"must be \(H, W\) or \(H, W, C\).*got shape \(8, 8, 2\)"):
        trained.predict(np.zeros((8, 8, 2), np.uint8))
    with pytest.raises(UserError, match="cannot classify a dict"):
        trained.predict([{"image": 1}])


def run_predict(capsys: pytest.CaptureFixture, *arguments: str) -> tuple[int, str, str]:
    code = cli.main(["predict", *arguments])
    out, err = capsys.readouterr()
    return code, out, err


def test_predict_command_json_and_csv(
    digits_run: Path, png_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    expected = semisup.load(digits_run, "cpu").predict(sorted(png_dir.glob("*.png")))
    names = [str(c) for c in range(10)]

    code, out, err = run_predict(capsys, str(digits_run), str(png_dir), "--device", "cpu")
    assert code == 0 and "error" not in err
    records = json.loads(out)
    assert [Path(r["file"]).name for r in records] == [f"{i:02d}.png" for i in range(12)]
    assert all(set(r) == {"file", "class", "class_index", "probability"} for r in records)
    assert [r["class_index"] for r in records] == expected.class_indices.tolist()
    assert [r["class"] for r in records] == expected.classes
    # Batches of different sizes may sum in another order: allow float32 rounding.
    np.testing.assert_allclose([r["probability"] for r in records], expected.confidences, rtol=1e-5)

    code, out, _ = run_predict(capsys, str(digits_run), str(png_dir / "0*.png"), "--all-probs")
    records = json.loads(out)
    assert code == 0 and len(records) == 10  # the quoted glob 0*.png matches 00..09
    for record, row in zip(records, expected.probabilities, strict=False):
        assert list(record["probabilities"]) == names
        np.testing.assert_allclose(list(record["probabilities"].values()), row, rtol=1e-5)
        assert record["probability"] == max(record["probabilities"].values())

    code, out, _ = run_predict(capsys, str(digits_run), str(png_dir), "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and list(rows[0]) == ["file", "class", "class_index", "probability"]
    assert [int(r["class_index"]) for r in rows] == expected.class_indices.tolist()
    np.testing.assert_allclose(
        [float(r["probability"]) for r in rows], expected.confidences, rtol=1e-5
    )

    args = [str(digits_run), str(png_dir / "05.png"), "--format", "csv", "--all-probs"]
    code, out, _ = run_predict(capsys, *args)
    (row,) = list(csv.DictReader(io.StringIO(out)))
    assert list(row)[4:] == [f"probability_{n}" for n in names]
    np.testing.assert_allclose(
        [float(row[f"probability_{n}"]) for n in names], expected.probabilities[5], rtol=1e-5
    )


def test_predict_reports_each_bad_file_and_classifies_the_rest(
    digits_run: Path, png_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    good = png_dir / "00.png"
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    truncated = tmp_path / "truncated.png"
    big = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), np.uint8))
    big.save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:400])
    empty = tmp_path / "empty"
    empty.mkdir()
    arguments = [good, tmp_path / "missing.png", text, truncated, empty, tmp_path / "*.jpg"]

    code, out, err = run_predict(capsys, str(digits_run), *map(str, arguments))
    assert code == 1
    assert [Path(r["file"]) for r in json.loads(out)] == [good]
    lines = err.strip().splitlines()
    assert "Traceback" not in err
    expected = [
        f"error: {empty}: the directory holds no image files",
        f"error: {tmp_path / '*.jpg'}: no file matches this pattern",
        f"error: {tmp_path / 'missing.png'}: no such file",
        f"error: {text}: not an image file (Pillow cannot identify its format)",
        f"error: {truncated}: corrupt or truncated image (OSError",
    ]
    assert len(lines) == len(expected)
    for line, start in zip(lines, expected, strict=True):
        assert line.startswith(start)


def test_a_run_dir_without_checkpoint_is_a_user_error(
    tmp_path: Path, png_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    code, out, err = run_predict(capsys, str(tmp_path), str(png_dir))
    assert code == 2 and out == ""
    assert err.startswith(f"error: {tmp_path} holds no checkpoint.pt: give the --out directory")
    with pytest.raises(UserError, match="run directory .*nowhere does not exist"):
        semisup.load(tmp_path / "nowhere")
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(UserError, match="checkpoint .* is corrupt or unreadable"):
        semisup.load(tmp_path)


def test_an_unfinished_run_reads_its_data_set(
    digits_run: Path, tmp_path: Path, digits_test: tuple
) -> None:
    """Without summary.json (a run stopped before its end) the class names come from the data."""
    shutil.copy(digits_run / "checkpoint.pt", tmp_path / "checkpoint.pt")
    trained = semisup.load(tmp_path, "cpu")
    assert trained.class_names == tuple(str(c) for c in range(10))
    assert trained.image_shape == (1, 8, 8)
    reference = semisup.load(digits_run, "cpu").predict(digits_test[0][:50]).probabilities
    torch.testing.assert_close(trained.predict(digits_test[0][:50]).probabilities, reference)


def make_folder(root: Path) -> Path:
    """A research-layout folder: train/{dark,light} RGB PNGs of two sizes, test/ one odd-size image.

    12 of each class are 12x12, 4 are 16 wide by 12 high, so the run's size is 12 (the most
    common shorter side); the test image is 30x20 and takes a resize and centre crop.
    """
    rng = np.random.default_rng(0)
    for name, level in (("dark", 40), ("light", 200)):
        (root / "train" / name).mkdir(parents=True)
        for i in range(16):
            width = 12 if i < 12 else 16
            pixels = np.clip(rng.normal(level, 30, (12, width, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / "train" / name / f"{i:02d}.png")
    (root / "test" / "light").mkdir(parents=True)
    odd = np.zeros((20, 30, 3), np.uint8)
    odd[:, 5:25] = np.clip(rng.normal(200, 60, (20, 20, 3)), 0, 255).astype(np.uint8)
    odd[:, :5] = 255  # cropped away by the centre crop
    Image.fromarray(odd).save(root / "test" / "light" / "odd.png")
    return root


def test_a_folder_run_prepares_images_like_its_training_data(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = make_folder(tmp_path / "images")
    run_dir = tmp_path / "run"
    sets = ["train.eval_every=4", "train.batch_size=4", "algorithm.mu=1", "train.tensorboard=false"]
    train(run_dir, "--dataset", "folder", "--data-dir", str(folder), "--steps", "4", "--set", *sets)
    capsys.readouterr()
    trained = semisup.load(run_dir, "cpu")
    assert trained.image_shape == (3, 12, 12) and trained.class_names == ("dark", "light")

    odd = folder / "test" / "light" / "odd.png"
    decoded = load_folder(folder).test_images  # the training pipeline's decoding (its cache)
    assert decoded.shape == (1, 3, 12, 12)
    assert torch.equal(trained.preprocess(odd), decoded)
    with torch.no_grad():
        reference = trained.model(to_model_input(decoded)).softmax(dim=1)[0]

    grey = tmp_path / "grey.png"
    Image.open(odd).convert("L").save(grey)
    code, out, err = run_predict(capsys, str(run_dir), str(odd), str(grey), "--all-probs")
    assert code == 0, err
    record, grey_record = json.loads(out)
    np.testing.assert_allclose(list(record["probabilities"].values()), reference, rtol=1e-6)
    assert record["class"] == ("dark", "light")[int(reference.argmax())]
    assert grey_record["class"] in ("dark", "light")  # a grey file is taken as RGB
    assert torch.equal(trained.preprocess(grey)[0, 0], trained.preprocess(grey)[0, 2])
