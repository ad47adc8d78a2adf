"""`semisup export`: ONNX (run by onnxruntime) and .pt2 files equal the PyTorch EMA model."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import semisup
import semisup.report
from semisup.commands import cli
from semisup.data.digits import load_digits
from semisup.models.inputs import to_model_input


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short digits run (60 steps; EMA decay 0.5 so the weights moved from initialisation)."""
    run_dir = tmp_path_factory.mktemp("export") / "run"
    sets = ["train.eval_every=60", "train.batch_size=16", "algorithm.mu=1", "train.ema_decay=0.5"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(semisup.report, "report_after_training", lambda run_dir: None)
        arguments = ["train", "--steps", "60", "--set", *sets, "train.tensorboard=false"]
        assert cli.main([*arguments, "--out", str(run_dir)]) == 0
    return run_dir


def test_onnx_and_pt2_outputs_equal_pytorch_on_real_images(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    ort = pytest.importorskip("onnxruntime")
    onnx_path, pt2_path = tmp_path / "model.onnx", tmp_path / "model.pt2"
    assert cli.main(["export", str(run_dir), "--onnx", str(onnx_path), "--pt2", str(pt2_path)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {onnx_path}" in out and "input images: uint8 (N, 1, 8, 8)" in out
    assert not list(tmp_path.glob("*.data"))  # one self-contained file

    trained = semisup.load(run_dir, "cpu")
    images = load_digits().test_images  # 450 real images
    with torch.no_grad():
        logits = trained.model(to_model_input(images))
    probabilities = trained.predict(images).probabilities
    assert len(set(logits.argmax(dim=1).tolist())) >= 2  # not a constant model

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (given,) = session.get_inputs()
    assert given.name == "images" and given.type == "tensor(uint8)"
    assert given.shape[1:] == [1, 8, 8] and not isinstance(given.shape[0], int)
    assert [o.name for o in session.get_outputs()] == ["logits", "probabilities"]
    for start, stop in ((0, 450), (0, 1), (7, 20)):  # dynamic batch axis
        onnx_logits, onnx_probabilities = session.run(None, {"images": images[start:stop].numpy()})
        np.testing.assert_allclose(onnx_logits, logits[start:stop], atol=1e-4, rtol=0)
        np.testing.assert_allclose(onnx_probabilities, probabilities[start:stop], atol=1e-5, rtol=0)
    metadata = session.get_modelmeta().custom_metadata_map
    assert json.loads(metadata["class_names"]) == [str(c) for c in range(10)]
    assert json.loads(metadata["image_shape"]) == [1, 8, 8]

    extra = {"semisup.json": ""}
    program = torch.export.load(pt2_path, extra_files=extra)
    pt2_logits, pt2_probabilities = program.module()(images)
    torch.testing.assert_close(pt2_logits, logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(pt2_probabilities, probabilities, atol=1e-6, rtol=0)
    assert json.loads(json.loads(extra["semisup.json"])["class_names"])[3] == "3"


def test_export_errors(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli.main(["export", str(run_dir)]) == 2
    assert "nothing to export: give --onnx PATH and/or --pt2 PATH" in capsys.readouterr().err

    missing = tmp_path / "no" / "model.onnx"
    assert cli.main(["export", str(run_dir), "--onnx", str(missing)]) == 2
    err = capsys.readouterr().err
    assert f"cannot write {missing}: the folder {missing.parent} does not exist" in err

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "onnxscript" else real_find_spec(name, *args),
    )
    assert cli.main(["export", str(run_dir), "--onnx", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err == (
        "error: ONNX export needs the onnxscript package(s): pip install 'semisup[export]'\n"
    )
