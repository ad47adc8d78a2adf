"""Per-model input normalisation and the `timm:` name family (without timm installed)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from semisup.engine.metrics import predict_logits
from semisup.errors import UserError
from semisup.models import MODELS, build_model, resolve_model_section, timm_backbone
from semisup.models.inputs import Normalization, input_normalization, to_model_input


class Flatten(nn.Module):
    """Returns its input flattened, so predictions show what the model was given."""

    def __init__(self, normalization: Normalization | None) -> None:
        super().__init__()
        self.input_normalization = normalization

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def test_normalization_uses_the_per_channel_mean_and_std() -> None:
    images = torch.tensor([0, 255, 51], dtype=torch.uint8).reshape(1, 3, 1, 1)
    normalization = Normalization((0.5, 0.25, 0.2), (0.5, 0.25, 0.1))
    # (0 − 0.5)/0.5, (1 − 0.25)/0.25, (0.2 − 0.2)/0.1
    expected = torch.tensor([-1.0, 3.0, 0.0]).reshape(1, 3, 1, 1)
    torch.testing.assert_close(to_model_input(images, normalization=normalization), expected)
    with pytest.raises(ValueError, match="images have 1 channels, the normalization 3"):
        normalization.apply(torch.zeros(1, 1, 2, 2, dtype=torch.uint8))
    with pytest.raises(ValueError, match="std must be positive"):
        Normalization((0.5,), (0.0,))


def test_models_without_a_normalization_keep_the_minus_one_to_one_scaling() -> None:
    assert input_normalization(build_model("wrn28_2", num_classes=2, in_channels=3)) is None
    images = torch.arange(0, 256, 51, dtype=torch.uint8).reshape(1, 1, 2, 3)
    logits = predict_logits(Flatten(None), images, 4, torch.device("cpu"))
    assert torch.equal(logits, images.float().mul_(2 / 255).sub_(1).flatten(1))


def test_predictions_use_the_models_own_normalization() -> None:
    images = torch.tensor([[[[0, 255]]], [[[102, 51]]]], dtype=torch.uint8)
    model = Flatten(Normalization((0.2,), (0.4,)))
    logits = predict_logits(model, images, 1, torch.device("cpu"))
    torch.testing.assert_close(logits, torch.tensor([[-0.5, 2.0], [0.5, 0.0]]))


def test_timm_names_resolve_without_timm_until_built(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "timm:resnet18" in MODELS and "timm:" not in MODELS and "resnet18" not in MODELS
    section = resolve_model_section({"name": "timm:resnet18", "pretrained": "w.pth"})
    assert section == {
        "name": "timm:resnet18",
        "timm_kwargs": None,
        "input_mean": None,
        "input_std": None,
        "pretrained": "w.pth",
    }
    with pytest.raises(UserError, match=r"Valid models: cnn, .*wrn37_2, timm:<name>"):
        MODELS.get("resnet18")
    with pytest.raises(UserError, match=r"unknown key model.depth for model 'timm:resnet18'"):
        resolve_model_section({"name": "timm:resnet18", "depth": 3})

    def no_timm(name: str) -> None:
        raise ImportError(f"No module named '{name}'")

    monkeypatch.setattr(timm_backbone.importlib, "import_module", no_timm)
    with pytest.raises(UserError, match=r"timm models need the timm package .*semisup\[timm\]"):
        build_model("timm:resnet18", num_classes=10, in_channels=3)
    with pytest.raises(UserError, match="set both model.input_mean and model.input_std"):
        build_model("timm:resnet18", num_classes=10, in_channels=3, input_mean=[0.5, 0.5, 0.5])
