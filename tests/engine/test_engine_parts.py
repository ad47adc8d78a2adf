import math

import pytest
import torch

from semisup.config import OptimConfig
from semisup.engine.checkpoint import load_checkpoint, save_checkpoint
from semisup.engine.metrics import classification_metrics, median_last
from semisup.engine.optim import build_optimizer, decay_kernels, learning_rate
from semisup.errors import UserError
from semisup.math.schedules import cosine_lr, linear_rampup
from semisup.modules.ema import ModelEMA


def test_cosine_lr_matches_fixmatch_f3():
    assert cosine_lr(0, 100, 0.03) == pytest.approx(0.03)
    assert cosine_lr(50, 100, 0.03) == pytest.approx(0.02319031, abs=1e-8)
    assert cosine_lr(100, 100, 0.03) == pytest.approx(0.00585271, abs=1e-8)


def test_linear_rampup_matches_mixmatch_m6():
    weights = [75 * linear_rampup(s, 16384) for s in (0, 4096, 8192, 16384, 20000)]
    assert weights == pytest.approx([0, 18.75, 37.5, 75, 75])


def test_ema_f4_and_buffers_are_copied():
    model = torch.nn.BatchNorm1d(1)
    with torch.no_grad():
        model.weight.zero_()
    ema = ModelEMA(model, 0.999)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.running_mean.fill_(5.0)
    ema.update(model)
    assert ema.module.weight.item() == pytest.approx(0.001)
    assert ema.module.running_mean.item() == 5.0
    frozen, copy = ModelEMA(model, 1.0), ModelEMA(model, 0.0)
    with torch.no_grad():
        model.weight.fill_(3.0)
    frozen.update(model)
    copy.update(model)
    assert frozen.module.weight.item() == 1.0 and copy.module.weight.item() == 3.0


def test_ema_can_average_the_batchnorm_statistics_with_the_weights():
    model = torch.nn.BatchNorm1d(1)
    ema = ModelEMA(model, 0.9, average_buffers=True)  # shadow: running mean 0, variance 1
    with torch.no_grad():
        model.running_mean.fill_(5.0)
        model.running_var.fill_(3.0)
        model.num_batches_tracked.fill_(7)
    ema.update(model)
    assert ema.module.running_mean.item() == pytest.approx(0.9 * 0 + 0.1 * 5.0)
    assert ema.module.running_var.item() == pytest.approx(0.9 * 1 + 0.1 * 3.0)
    assert ema.module.num_batches_tracked.item() == 7  # an integer buffer is copied


def test_ema_warmup_ramps_the_decay_like_tf_num_updates():
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.zero_()
    ema = ModelEMA(model, 0.99, warmup=True)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model, step=0)  # decay min(0.99, 1/10) = 0.1: shadow 0.1·0 + 0.9·1
    assert ema.module.weight.item() == pytest.approx(0.9)
    ema.update(model, step=90)  # (1 + 90)/(10 + 90) = 0.91
    assert ema.module.weight.item() == pytest.approx(0.91 * 0.9 + 0.09)
    ema.update(model, step=10_000)  # capped at 0.99
    assert ema.module.weight.item() == pytest.approx(0.99 * (0.91 * 0.9 + 0.09) + 0.01)


def _settings(**kw):
    base = dict(
        name="adam",
        lr=0.002,
        momentum=0.9,
        nesterov=False,
        weight_decay=0.02,
        decoupled_weight_decay=True,
        schedule="constant",
        cosine_factor=7 / 16,
    )
    return OptimConfig(**{**base, **kw})


def test_decoupled_decay_m7_shrinks_kernels_only():
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.fill_(1.0)
    s = _settings()
    optimizer = build_optimizer(model, s)
    model.weight.grad = torch.zeros_like(model.weight)
    model.bias.grad = torch.zeros_like(model.bias)
    optimizer.step()
    decay_kernels(optimizer, s, learning_rate(s, 0, 10))
    assert torch.allclose(model.weight, torch.full((2, 2), 0.99996))
    assert torch.equal(model.bias, torch.ones(2))


def test_coupled_weight_decay_only_on_kernels():
    model = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(model, _settings(name="sgd", decoupled_weight_decay=False))
    assert optimizer.param_groups[0]["weight_decay"] == 0.02
    assert optimizer.param_groups[1]["weight_decay"] == 0
    assert optimizer.param_groups[0]["params"][0] is model.weight


def test_decay_all_parameters_decays_biases_coupled_and_decoupled():
    model = torch.nn.Linear(2, 2)
    sgd = _settings(name="sgd", decoupled_weight_decay=False, decay_all_parameters=True)
    optimizer = build_optimizer(model, sgd)
    assert [group["weight_decay"] for group in optimizer.param_groups] == [0.02, 0.02]
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.fill_(1.0)
    adam = _settings(decay_all_parameters=True)
    optimizer = build_optimizer(model, adam)
    assert [group["weight_decay"] for group in optimizer.param_groups] == [0, 0]
    decay_kernels(optimizer, adam, 0.002)
    assert torch.allclose(model.bias, torch.full((2,), 0.99996))  # 1 − 0.02·0.002
    assert torch.allclose(model.weight, torch.full((2, 2), 0.99996))


def simmatch_imagenet_rates(base_lr, epochs, warmup_epoch, steps_per_epoch):
    """KyleZheng1997/simmatch simmatch.py + utils/lr_schedule.py (--cos), transcribed."""
    rates, lr = [], base_lr
    for epoch in range(epochs):
        if epoch >= warmup_epoch:  # adjust_learning_rate, once per epoch
            progress = float(epoch - warmup_epoch) / float(epochs - warmup_epoch)
            lr = base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))
        for i in range(steps_per_epoch):
            if epoch < warmup_epoch:  # warmup_learning_rate, every step
                warmup_step = warmup_epoch * steps_per_epoch
                curr_step = epoch * steps_per_epoch + i + 1
                lr = base_lr * min(1.0, max(0.0, float(curr_step) / float(max(1, warmup_step))))
            rates.append(lr)
    return rates


def test_warmup_cosine_is_simmatch_imagenets_schedule():
    s = _settings(name="sgd", lr=0.03, schedule="warmup_cosine", warmup_epochs=1, schedule_epochs=4)
    # 4 epochs of 2 steps: warm-up 0.015, 0.03; then ½(1 + cos(π·k/3)) = 1, 0.75, 0.25 per epoch
    rates = [learning_rate(s, step, 8) for step in range(8)]
    hand = [0.015, 0.03, 0.03, 0.03, 0.0225, 0.0225, 0.0075, 0.0075]
    assert rates == pytest.approx(hand, abs=1e-12)
    s = _settings(lr=0.03, schedule="warmup_cosine", warmup_epochs=5, schedule_epochs=400)
    expected = simmatch_imagenet_rates(0.03, 400, 5, 7)
    assert [learning_rate(s, step, 2800) for step in range(2800)] == pytest.approx(expected)
    with pytest.raises(UserError, match=r"optim.warmup_epochs \(400\) must be"):
        learning_rate(
            _settings(schedule="warmup_cosine", warmup_epochs=400, schedule_epochs=400), 0, 10
        )


def test_metrics_and_median():
    m = classification_metrics(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 0, 1]), 3)
    assert m["accuracy"] == 0.75
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1) / 2)
    assert m["per_class_accuracy"] == [pytest.approx(2 / 3), 1.0, None]
    assert median_last([float(v) for v in range(1, 31)]) == 20.5  # E1


def test_checkpoint_round_trip_and_clear_errors(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"step": 3, "w": torch.arange(3)}, path)
    state = load_checkpoint(path)
    assert state["step"] == 3 and torch.equal(state["w"], torch.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(UserError, match=f"checkpoint {path} is corrupt"):
        load_checkpoint(path)
    torch.save({"model": 1}, path)
    with pytest.raises(UserError, match="not a semisup checkpoint"):
        load_checkpoint(path)
    with pytest.raises(UserError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nope.pt")


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (OSError(28, "No space left on device"), "No space left on device"),
        # what torch.save raises on a full disk: a RuntimeError, not an OSError
        (RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64"), "enforce"),
    ],
)
def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch, error, reason):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"step": 1}, path)

    def disk_full(*args, **kwargs):
        raise error

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(UserError, match=f"{reason}.*; the previous checkpoint.pt .* is unchanged"):
        save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
