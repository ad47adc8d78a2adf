"""`model.pretrained` and `--init-from` with semisup's own networks (timm ones: tests/models)."""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

import pytest
import torch
import yaml

import semisup
import semisup.report
from semisup.commands import cli
from semisup.engine.checkpoint import load_checkpoint
from semisup.errors import UserError
from semisup.models import build_model
from semisup.pretrained import load_pretrained

DIGITS = tuple(str(c) for c in range(10))


def cnn(num_classes: int, seed: int, width: int = 16) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("cnn", num_classes=num_classes, in_channels=1, width=width)


def backbone(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def train(run_dir: Path, *arguments: str) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(semisup.report, "report_after_training", lambda run_dir: None)
        code = cli.main(["train", *arguments, "--out", str(run_dir)])
    assert code == 0


def test_a_new_head_for_another_number_of_classes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = cnn(10, seed=1)
    torch.save(source.state_dict(), tmp_path / "w.pth")
    model = cnn(4, seed=2)
    fresh_head = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("fc.")}
    with caplog.at_level(logging.INFO, logger="semisup"):
        load_pretrained(model, str(tmp_path / "w.pth"), tuple("abcd"))
    assert_same(backbone(model.state_dict()), backbone(source.state_dict()))
    assert_same({k: v for k, v in model.state_dict().items() if k.startswith("fc.")}, fresh_head)
    assert "the classifier (fc.bias, fc.weight) is of shape (10,) in the source, (4,) here" in (
        caplog.text
    )


@pytest.mark.parametrize(
    "wrap",
    [
        lambda s: s,
        lambda s: {"state_dict": s, "epoch": 3},
        lambda s: {"model": {f"module.{k}": v for k, v in s.items()}, "optimizer": {}},
    ],
    ids=["state_dict", "checkpoint_state_dict", "checkpoint_model_ddp"],
)
def test_a_fitting_head_is_loaded_from_any_file_form(tmp_path: Path, wrap) -> None:
    source = cnn(10, seed=1)
    torch.save(wrap(source.state_dict()), tmp_path / "w.bin")
    model = cnn(10, seed=2)
    load_pretrained(model, str(tmp_path / "w.bin"), DIGITS)
    assert_same(model.state_dict(), source.state_dict())


def test_backbone_mismatches_are_named(tmp_path: Path) -> None:
    state = cnn(10, seed=1).state_dict()
    del state["features.0.0.weight"]
    state["extra.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(UserError) as error:
        load_pretrained(cnn(10, seed=2), str(tmp_path / "w.pt"), DIGITS)
    message = str(error.value)
    assert "do not fit this model's backbone" in message
    assert "1 missing from the source: features.0.0.weight" in message
    assert "1 unexpected in the source: extra.weight" in message

    torch.save(cnn(10, seed=1, width=8).state_dict(), tmp_path / "narrow.pt")
    # 6 conv layers x (kernel, BN weight, bias, running mean, running variance)
    expected = (
        r"30 of another shape \(source vs model\): features.0.0.weight \(8, 1, 3, 3\) vs \(16,"
    )
    with pytest.raises(UserError, match=expected):
        load_pretrained(cnn(10, seed=2), str(tmp_path / "narrow.pt"), DIGITS)


def test_a_state_dict_without_batchnorm_step_counters_loads(tmp_path: Path) -> None:
    source = cnn(10, seed=1)
    state = {k: v for k, v in source.state_dict().items() if "num_batches_tracked" not in k}
    torch.save(state, tmp_path / "old.pth")
    model = cnn(10, seed=2)
    load_pretrained(model, str(tmp_path / "old.pth"), DIGITS)
    assert torch.equal(model.features[0][0].weight, source.features[0][0].weight)


def test_unusable_sources(tmp_path: Path) -> None:
    model = cnn(10, seed=0)
    cases = {
        str(tmp_path / "none.pth"): "no such file or directory",
        str(tmp_path): "is a directory without checkpoint.pt",
        "hf-hub:timm/resnet18.a1_in1k": "loads through timm: set model.name=timm:<architecture>",
    }
    torch.save(argparse.Namespace(weights=1), tmp_path / "object.pth")
    cases[str(tmp_path / "object.pth")] = (
        "holds more than weights \\(objects of type argparse.Namespace"
    )
    torch.save({"epoch": 3, "step": 5}, tmp_path / "counters.pth")
    cases[str(tmp_path / "counters.pth")] = "a checkpoint without a state dict under 'state_dict'"
    (tmp_path / "text.pth").write_text("not a checkpoint")
    cases[str(tmp_path / "text.pth")] = "is not a readable PyTorch file"
    for source, message in cases.items():
        with pytest.raises(UserError, match=message):
            load_pretrained(model, source, DIGITS)


@pytest.fixture(scope="module")
def source_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 steps of FixMatch on digits with a narrow CNN (width 8): the run to start from."""
    run_dir = tmp_path_factory.mktemp("source") / "run"
    sets = ["model.width=8", "train.eval_every=4", "train.batch_size=8", "algorithm.mu=1"]
    train(run_dir, "--steps", "4", "--set", *sets, "train.tensorboard=false", "train.ema_decay=0.5")
    return run_dir


def test_init_from_a_run_starts_from_its_ema_weights(source_run: Path, tmp_path: Path) -> None:
    source_ema = load_checkpoint(source_run / "checkpoint.pt")["ema"]
    run_dir = tmp_path / "run"
    sets = ["train.eval_every=2", "train.batch_size=8", "algorithm.mu=1", "optim.lr=1e-9"]
    train(run_dir, "--steps", "2", "--init-from", str(source_run), "--set", *sets)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    source_config = yaml.safe_load((source_run / "config.yaml").read_text())
    # The source's model (width 8) without naming it; the source recorded.
    assert config["model"] == {**source_config["model"], "pretrained": str(source_run)}
    assert config["model"]["name"] == "cnn" and config["model"]["width"] == 8
    # Two steps at a learning rate of 1e-9 leave every weight where the source's EMA model was.
    model = load_checkpoint(run_dir / "checkpoint.pt")["algorithm"]
    for key, value in source_ema.items():
        if value.is_floating_point() and "running" not in key:
            torch.testing.assert_close(model[f"model.{key}"], value, atol=1e-6, rtol=0)

    # Resuming does not read the source again (it may be gone): the checkpoint has the weights.
    shutil.copytree(source_run, tmp_path / "moved")
    shutil.rmtree(source_run)
    try:
        train(run_dir, "--steps", "4", "--resume")
        assert semisup.load(run_dir, "cpu").step == 4
    finally:
        shutil.copytree(tmp_path / "moved", source_run)


def test_a_run_of_other_classes_gives_a_new_head(
    source_run: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source_ema = load_checkpoint(source_run / "checkpoint.pt")["ema"]
    model = cnn(10, seed=3, width=8)
    fresh_head = model.fc.weight.detach().clone()
    with caplog.at_level(logging.INFO, logger="semisup"):
        load_pretrained(model, str(source_run), tuple("abcdefghij"))
    assert torch.equal(model.fc.weight, fresh_head)
    assert_same(backbone(model.state_dict()), backbone(source_ema))
    assert "trained on other classes (0, 1, 2, 3, 4, ...) than this run's (a, b, c, d, e, ...)" in (
        caplog.text
    )
    load_pretrained(model, str(source_run), DIGITS)  # the same classes: the head too
    assert_same(model.state_dict(), source_ema)
