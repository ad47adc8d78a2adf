"""`semisup.train`: data sets, tensors, custom and registered models, the run directory."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

import semisup
from semisup.api.data import build_split
from semisup.commands import cli
from semisup.engine.metrics import classification_metrics
from semisup.errors import UserError
from semisup.models import MODELS

QUICK = {"train.batch_size": 8, "algorithm.mu": 2, "train.tensorboard": False}


def digits(n: int = 60, labeled: int = 12) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first n digits of classes 0-2 as uint8 (n, 8, 8), true labels, labels with −1."""
    from sklearn.datasets import load_digits

    bunch = load_digits(n_class=3)
    images = np.rint(bunch.images[:n] * 255 / 16).astype(np.uint8)
    truth = bunch.target[:n].astype(np.int64)
    labels = truth.copy()
    labels[labeled:] = -1
    return images, truth, labels


class PILDigits(torch.utils.data.Dataset):
    """A map-style data set of (PIL image, label) items, as torchvision data sets give them."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.images[index]), int(self.labels[index])


class TinyNet(nn.Module):
    """A custom module: flattened 8x8 images to logits (registrable: it takes in_channels)."""

    def __init__(self, num_classes: int = 3, in_channels: int = 1, hidden: int = 16) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * in_channels, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def test_a_dataset_of_pil_images_gives_the_run_directory_of_the_cli(tmp_path, capsys):
    images, truth, labels = digits()
    run_dir = tmp_path / "run"
    result = semisup.train(
        PILDigits(images, labels),
        steps=4,
        test_data=(torch.from_numpy(images[None]).permute(1, 0, 2, 3), truth),
        class_names=["zero", "one", "two"],
        out_dir=run_dir,
        config=QUICK,
        seed=3,
        verbose=False,
    )
    assert capsys.readouterr().out == ""
    assert {p.name for p in run_dir.iterdir()} == {
        "config.yaml",
        "checkpoint.pt",
        "metrics.jsonl",
        "summary.json",
    }
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["data"]["name"] == "in_memory" and config["model"]["name"] == "cnn"
    assert config["train"]["seed"] == 3 and config["train"]["steps"] == 4
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary == result.summary
    assert summary["num_labels"] == 12 and summary["class_names"] == ["zero", "one", "two"]
    # A 4-step run evaluates after every step (at least 10 evaluations, as far as there are steps).
    assert [r["step"] for r in result.history] == [1, 2, 3, 4] and result.run_dir == run_dir

    predicted = result.model.predict(list(images))
    expected = classification_metrics(predicted.class_indices, torch.from_numpy(truth), 3)
    assert summary["test_accuracy"] == pytest.approx(expected["accuracy"])
    loaded = semisup.load(run_dir, device="cpu").predict(list(images))
    assert torch.allclose(loaded.probabilities, predicted.probabilities, atol=1e-6)


def test_the_cli_predicts_with_a_python_run(tmp_path, capsys):
    images, _, labels = digits()
    run_dir = tmp_path / "run"
    semisup.train((images, labels), steps=2, out_dir=run_dir, config=QUICK, verbose=False)
    Image.fromarray(images[0]).save(tmp_path / "first.png")
    assert cli.main(["predict", str(run_dir), str(tmp_path / "first.png"), "--device", "cpu"]) == 0
    [record] = json.loads(capsys.readouterr().out)
    expected = semisup.load(run_dir, device="cpu").predict(str(tmp_path / "first.png"))
    assert record["class"] == expected.classes[0]


def test_tensors_and_a_custom_module_train_in_place_and_load_with_the_module(tmp_path):
    images, _, labels = digits()
    net = TinyNet()
    before = net.layers[1].weight.detach().clone()
    run_dir = tmp_path / "run"
    result = semisup.train(
        (torch.from_numpy(images)[:, None].float() / 255, torch.from_numpy(labels)),
        model=net,
        steps=3,
        out_dir=run_dir,
        config=QUICK,
        verbose=False,
    )
    assert not torch.equal(net.layers[1].weight, before)  # trained in place
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["model"] == {"name": "custom", "class": f"{__name__}.TinyNet"}
    with pytest.raises(UserError, match=r"custom module \(.*TinyNet\).*model=<a new TinyNet>"):
        semisup.load(run_dir)
    loaded = semisup.load(run_dir, device="cpu", model=TinyNet())
    expected = result.model.predict(list(images)).probabilities
    assert torch.allclose(loaded.predict(list(images)).probabilities, expected, atol=1e-6)
    with pytest.raises(UserError, match="do not fit the given TinyNet"):
        semisup.load(run_dir, model=TinyNet(hidden=8))


def test_a_model_registered_from_python_is_built_by_name_and_reloads(tmp_path, monkeypatch):
    monkeypatch.setitem(MODELS._items, "test_tiny_net", TinyNet)
    images, _, labels = digits()
    semisup.train(
        (images, labels),
        model="test_tiny_net",
        steps=2,
        out_dir=tmp_path / "run",
        config={**QUICK, "model.hidden": 5},
        verbose=False,
    )
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["model"] == {"name": "test_tiny_net", "hidden": 5, "pretrained": None}
    loaded = semisup.load(tmp_path / "run")
    assert isinstance(loaded.model, TinyNet) and loaded.model.layers[1].out_features == 5


def test_the_split_takes_minus_one_as_unlabeled():
    images = torch.zeros((5, 1, 2, 2), dtype=torch.uint8)
    labels = np.array([1, -1, 0, -1, 1])
    split = build_split(images, labels, ("a", "b"), unlabeled_includes_labeled=True)
    assert split.labeled_idx.tolist() == [0, 2, 4] and split.unlabeled_idx.tolist() == [
        0,
        1,
        2,
        3,
        4,
    ]
    assert split.labeled_class_counts() == (1, 2) and split.test_images is None
    apart = build_split(images, labels, ("a", "b"), unlabeled_includes_labeled=False)
    assert apart.unlabeled_idx.tolist() == [1, 3]


def _train_with(images, labels, **kwargs):
    return semisup.train((images, labels), steps=1, config=QUICK, verbose=False, **kwargs)


@pytest.mark.parametrize(
    ("labels", "kwargs", "message"),
    [
        (np.full(60, -1), {}, "no labeled image"),
        (np.arange(60) % 3, {}, "every image is labeled, but fixmatch also learns"),
        (np.r_[np.zeros(10), np.full(50, -1)], {}, "a single class"),
        (np.r_[0, 1, 2, 3, np.full(56, -1)], {"class_names": "abc"}, "has the label 3"),
        (np.r_[0, 1, 3, np.full(57, -1)], {}, "class '2' has no labeled image"),
        (np.r_[0, 1, -2, np.full(57, -1)], {}, "has the label -2"),
        (np.r_[0, 1, np.full(58, -1)], {"class_names": "abc"}, "class 'c' has no labeled image"),
        (np.r_[0, 1, np.full(57, -1)], {}, "60 images but 59 labels"),
        (np.r_[0.5, 1, np.full(58, -1)], {}, "one integer class id per image"),
    ],
)
def test_bad_labels_are_refused_with_a_value_error(labels, kwargs, message):
    images, _, _ = digits()
    with pytest.raises(ValueError, match=message):
        _train_with(images, labels, **kwargs)


def test_supervised_training_takes_fully_labeled_data():
    images, truth, _ = digits()
    result = semisup.train(
        (images, truth), algorithm="supervised", steps=1, config={"train.batch_size": 8}
    )
    assert result.summary["num_labels"] == 60 and result.run_dir is None


def test_the_default_algorithm_is_flexmatch_on_a_budget_and_fixmatch_for_steps():
    images, _, labels = digits()
    budgeted = semisup.train((images, labels), time="8s", config=QUICK, verbose=False)
    summary = budgeted.summary
    assert (summary["algorithm"], summary["time_budget"]) == ("flexmatch", "8s")
    assert summary["planned_steps"] > 0 and summary["steps"] > 0
    stepped = semisup.train((images, labels), steps=2, config=QUICK, verbose=False)
    assert stepped.summary["algorithm"] == "fixmatch" and stepped.summary["time_budget"] is None


def test_bad_arguments_are_refused_with_a_value_error(tmp_path):
    images, _, labels = digits()
    with pytest.raises(ValueError, match="train.steps is set both by an argument and by config"):
        semisup.train((images, labels), steps=2, config={"train": {"steps": 3}})
    with pytest.raises(ValueError, match="unknown config key 'train.stepz'"):
        semisup.train((images, labels), config={"train.stepz": 3})
    with pytest.raises(ValueError, match="not an \\(image, label\\) pair"):
        semisup.train([images[0]])
    with pytest.raises(ValueError, match="a tuple \\(images, labels\\), got a value of type int"):
        semisup.train(3)
    with pytest.raises(ValueError, match="test_data has the label -1"):
        _train_with(images, labels, test_data=(images, labels))
    _train_with(images, labels, out_dir=tmp_path / "run")
    with pytest.raises(ValueError, match="already holds a run; choose another out_dir"):
        _train_with(images, labels, out_dir=tmp_path / "run")


class WrongWidth(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x.flatten(1)[:, :5]


class Broken(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def test_a_custom_module_with_the_wrong_output_is_refused_before_training():
    images, _, labels = digits()
    with pytest.raises(ValueError, match=r"returns \(2, 5\) for 2 images; .* shape \(2, 3\)"):
        _train_with(images, labels, model=WrongWidth())
    with pytest.raises(ValueError, match=r"fails on images of shape \(2, 1, 8, 8\).*RuntimeError"):
        _train_with(images, labels, model=Broken())
    with pytest.raises(ValueError, match="model.hidden configure a registered model; a module"):
        semisup.train((images, labels), model=TinyNet(), config={"model.hidden": 3})
