"""USB-style fine-tuning: warm-up, layer-wise learning-rate decay, AdamW, a frozen backbone."""

from __future__ import annotations

import math

import pytest
import torch

from semisup.algorithms import TaskInfo
from semisup.algorithms.simmatch import SimMatch
from semisup.config import OptimConfig, build_config
from semisup.engine.optim import (
    build_optimizer,
    decay_kernels,
    learning_rate,
    load_optimizer,
    parameter_groups,
)
from semisup.errors import UserError
from semisup.experiment import build_trainer
from semisup.models import build_model


def settings(**kw: object) -> OptimConfig:
    base = dict(
        name="adamw",
        lr=0.1,
        momentum=0.9,
        nesterov=False,
        weight_decay=0.5,
        decoupled_weight_decay=False,
        schedule="cosine",
        cosine_factor=7 / 16,
    )
    return OptimConfig(**{**base, **kw})


def usb_lr_factor(step: int, total: int, warmup: int, num_cycles: float = 7 / 16) -> float:
    """Transcription of USB's get_cosine_schedule_with_warmup `_lr_lambda`
    (microsoft/Semi-supervised-learning semilearn/core/utils/build.py)."""
    if step < warmup:
        return float(step) / float(max(1, warmup))
    progress = float(step - warmup) / float(max(1, total - warmup))
    return max(0.0, math.cos(math.pi * num_cycles * progress))


def test_warmup_then_cosine_equals_usbs_schedule() -> None:
    s = settings(warmup_steps=4)
    assert [learning_rate(s, t, 20) for t in range(5)] == pytest.approx(
        [0, 0.025, 0.05, 0.075, 0.1]
    )
    for step in range(20):
        assert learning_rate(s, step, 20) == pytest.approx(0.1 * usb_lr_factor(step, 20, 4))
    # Without a warm-up the schedule is FixMatch's as before: lr·cos(7π·t / 16T).
    assert learning_rate(settings(), 5, 20) == pytest.approx(0.1 * math.cos(7 * math.pi * 5 / 320))
    with pytest.raises(UserError, match="optim.warmup_steps must be at least 0 and below"):
        learning_rate(settings(warmup_steps=20), 0, 20)


def test_layer_decay_scales_the_wideresnet_by_depth() -> None:
    model = build_model("wrn28_2", num_classes=10, in_channels=3)
    groups = parameter_groups(model, settings(layer_decay=0.5), model)
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    # Stem 0, 12 blocks at 1..12, final BN with the last block, classifier 13.
    assert scale[id(model.stem.weight)] == 0.5**13
    assert scale[id(model.blocks[0].conv1.weight)] == 0.5**12
    assert scale[id(model.blocks[11].conv2.weight)] == 0.5
    assert scale[id(model.bn.weight)] == 0.5
    assert scale[id(model.fc.weight)] == scale[id(model.fc.bias)] == 1.0
    assert decay[id(model.stem.weight)] == 0.5 and decay[id(model.stem.bias)] == 0.0
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_an_algorithms_own_heads_train_at_the_full_rate() -> None:
    model = build_model("cnn", num_classes=10, in_channels=1)
    algorithm = SimMatch(model, TaskInfo(10, 20, (2,) * 10, total_steps=100))
    groups = parameter_groups(algorithm, settings(layer_decay=0.8), model)
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    assert scale[id(model.features[0][0].weight)] == pytest.approx(0.8**6)
    assert scale[id(model.fc.weight)] == 1.0
    assert all(scale[id(p)] == 1.0 for p in algorithm.head.parameters())
    assert len(scale) == len(list(algorithm.parameters()))


def test_adamw_decays_inside_its_step_at_each_groups_rate() -> None:
    layer = torch.nn.Linear(1, 1)
    with torch.no_grad():
        layer.weight.fill_(1.0)
        layer.bias.fill_(1.0)
    s = settings()
    optimizer = build_optimizer(layer, s)
    for group in optimizer.param_groups:
        group["lr"] = 0.1 * 0.5  # the trainer's lr · lr_scale, here a scale of 0.5
    layer.weight.grad = torch.full((1, 1), 0.5)
    layer.bias.grad = torch.full((1,), -2.0)
    optimizer.step()
    decay_kernels(optimizer, s, 0.1)  # nothing more: AdamW decays inside its step
    # First Adam step moves by lr·g/(|g| + eps) = ±lr; the kernel also shrinks by (1 − lr·wd).
    assert layer.weight.item() == pytest.approx(1.0 * (1 - 0.05 * 0.5) - 0.05, abs=1e-7)
    assert layer.bias.item() == pytest.approx(1.0 + 0.05, abs=1e-7)


def test_decoupled_adam_decay_follows_the_layer_scale() -> None:
    model = build_model("cnn", num_classes=2, in_channels=1)
    s = settings(name="adam", decoupled_weight_decay=True, weight_decay=0.02, layer_decay=0.5)
    optimizer = build_optimizer(model, s, model)
    stem = model.features[0][0].weight
    before = stem.detach().clone()
    decay_kernels(optimizer, s, 0.002)
    torch.testing.assert_close(stem.detach(), before * (1 - 0.02 * 0.002 * 0.5**6))


def test_layer_decay_needs_layer_depths_and_a_valid_factor() -> None:
    with pytest.raises(UserError, match="Linear does not: set optim.layer_decay=1"):
        parameter_groups(torch.nn.Linear(2, 2), settings(layer_decay=0.5))
    with pytest.raises(UserError, match=r"optim.layer_decay must be in \(0, 1\], got 1.5"):
        parameter_groups(torch.nn.Linear(2, 2), settings(layer_decay=1.5))


def test_a_frozen_backbone_trains_only_the_classifier() -> None:
    overrides = {
        "train.steps": 3,
        "train.eval_every": 3,
        "train.batch_size": 8,
        "train.progress": False,
        "train.tensorboard": False,
        "algorithm.mu": 1,
        "optim.freeze_backbone": True,
        "optim.name": "adamw",
        "optim.lr": 0.01,
    }
    trainer = build_trainer(build_config(None, overrides), None)
    model = trainer.algorithm.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.fit()
    after = model.state_dict()
    trained = {k for k in after if not torch.equal(after[k], before[k])}
    # The classifier moved; of the backbone only BatchNorm's running statistics did.
    assert {"fc.weight", "fc.bias"} <= trained
    assert all(k.startswith("fc.") or "running" in k or "num_batches" in k for k in trained)
    optimized = [p for g in trainer.optimizer.param_groups for p in g["params"]]
    assert {id(p) for p in optimized} == {id(model.fc.weight), id(model.fc.bias)}


def test_optimizer_states_saved_before_layer_scales_still_load() -> None:
    model = build_model("cnn", num_classes=2, in_channels=1)
    s = settings(name="sgd")
    old = build_optimizer(model, s, model).state_dict()
    for group in old["param_groups"]:
        del group["lr_scale"], group["decays"]
    optimizer = build_optimizer(model, s, model)
    load_optimizer(optimizer, old)
    assert [(g["lr_scale"], g["decays"]) for g in optimizer.param_groups] == [
        (1.0, True),
        (1.0, False),
    ]
