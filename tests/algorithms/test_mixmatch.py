import pytest
import torch
import torch.nn.functional as F
from torch import nn

from semisup.algorithms.mixmatch import MixMatch
from semisup.config import OptimConfig, build_config
from semisup.engine.optim import build_optimizer, decay_kernels
from semisup.errors import UserError
from semisup.experiment import build_trainer
from semisup.math import losses, mixing, pseudo

from .helpers import LogitsAsImages, TinyNet, as_images, info


def _batch(n=4, k=2, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    batch = {"x": torch.randn(n, 1, 8, 8, generator=g), "y": torch.arange(n) % classes}
    batch.update({f"u_w{i}": torch.randn(n, 1, 8, 8, generator=g) for i in range(k)})
    batch["u_y"] = torch.tensor([0, 1, 2, -1] * (n // 4))
    return batch


def _fix_draws(monkeypatch, lam, perm):
    monkeypatch.setattr(mixing, "mixup_draws", lambda n, beta, device, generator: (lam, perm))


def test_m1_sharpen():
    sharpened = pseudo.sharpen(torch.tensor([[0.1, 0.2, 0.3, 0.4]]), 0.5)
    assert torch.allclose(sharpened, torch.tensor([[1 / 30, 2 / 15, 0.3, 8 / 15]]))


def test_m2_guess_averages_two_views_then_sharpens():
    algorithm = MixMatch(LogitsAsImages(), info())
    probs, targets = algorithm.guess_targets([as_images([[2, 1, 0]]), as_images([[0, 1, 2]])])
    assert torch.allclose(probs, torch.tensor([[0.37763576, 0.24472847, 0.37763576]]))
    assert torch.allclose(targets, torch.tensor([[0.41322752, 0.17354496, 0.41322752]]))
    assert not targets.requires_grad


def test_m4_l2_loss_is_averaged_over_classes():
    loss = losses.probability_mse(torch.zeros(1, 2), torch.tensor([[0.76, 0.24]]))
    assert loss.item() == pytest.approx(0.0676, abs=1e-7)


@pytest.mark.parametrize(
    ("step", "weight"), [(0, 0.0), (4096, 18.75), (8192, 37.5), (16384, 75.0), (20000, 75.0)]
)
def test_m6_unlabeled_weight_ramps_up_linearly(step, weight):
    torch.manual_seed(0)
    out = MixMatch(TinyNet(), info())(_batch(), step)
    assert out["loss"].item() == pytest.approx((out["loss_x"] + weight * out["loss_u"]).item())


def test_m7_original_optimizer_decays_kernels_by_0_99996_per_step():
    settings = OptimConfig(**MixMatch.optim_defaults)
    assert (settings.name, settings.lr, settings.schedule) == ("adam", 0.002, "constant")
    model = nn.Linear(2, 2)
    nn.init.ones_(model.weight)
    nn.init.ones_(model.bias)
    optimizer = build_optimizer(model, settings)
    (0 * model(torch.ones(1, 2)).sum()).backward()  # zero gradient: Adam leaves weights alone
    optimizer.step()
    decay_kernels(optimizer, settings, settings.lr)
    assert torch.allclose(model.weight, torch.full((2, 2), 0.99996), atol=0, rtol=1e-7)
    assert torch.equal(model.bias, torch.ones(2))  # no decay on biases


def test_outputs_are_finite_detached_scalars_and_views_match_k():
    torch.manual_seed(0)
    algorithm = MixMatch(TinyNet(), info(), k=3)
    assert algorithm.views == {"x": "weak", "u_w0": "weak", "u_w1": "weak", "u_w2": "weak"}
    assert algorithm.mu == 1
    out = algorithm(_batch(k=3), step=100)
    expected = {"loss", "loss_x", "loss_u", "unlabeled_distribution", "pseudo_label_accuracy"}
    assert set(out) == expected
    assert out["loss"].requires_grad and torch.isfinite(out["loss"])
    assert all(
        not v.requires_grad and torch.isfinite(v).all() for k, v in out.items() if k != "loss"
    )
    assert out["unlabeled_distribution"].sum().item() == pytest.approx(1.0)


def test_bn_running_stats_change_only_in_the_first_mixup_call_and_guesses_have_no_grad():
    torch.manual_seed(0)
    model = TinyNet().train()
    calls = []

    def before(module, args):
        module.saved = module.running_mean.clone()

    def after(module, args, output):
        calls.append((not torch.equal(module.saved, module.running_mean), output.requires_grad))

    model.bn.register_forward_pre_hook(before)
    model.bn.register_forward_hook(after)
    MixMatch(model, info())(_batch(), step=0)
    # 2 guess calls (no update, no gradient), then 3 interleaved calls (only the first updates).
    assert calls == [(False, False), (False, False), (True, True), (False, True), (False, True)]


def _linear_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 3))  # no BatchNorm: call grouping is moot


def test_lambda_u_zero_is_supervised_mixup(monkeypatch):
    batch = _batch()
    lam = torch.tensor([0.9, 0.2, 0.6, 0.7] + [0.5] * 8)
    perm = torch.tensor([1, 0, 3, 2] + list(range(4, 12)))  # labeled items mix with labeled ones
    _fix_draws(monkeypatch, lam, perm)
    model = _linear_model()
    out = MixMatch(model, info(), lambda_u=0.0)(batch, step=20000)
    grads = torch.autograd.grad(out["loss"], list(model.parameters()))

    weight = torch.maximum(lam[:4], 1 - lam[:4])
    x, labels = batch["x"], F.one_hot(batch["y"], 3).float()
    mixed_x = weight.view(-1, 1, 1, 1) * x + (1 - weight.view(-1, 1, 1, 1)) * x[perm[:4]]
    mixed_y = weight.view(-1, 1) * labels + (1 - weight.view(-1, 1)) * labels[perm[:4]]
    expected = -(mixed_y * model(mixed_x).log_softmax(dim=1)).sum(dim=1).mean()
    expected_grads = torch.autograd.grad(expected, list(model.parameters()))
    assert out["loss"].item() == pytest.approx(expected.item(), abs=1e-6)
    for got, want in zip(grads, expected_grads, strict=True):
        assert torch.allclose(got, want, atol=1e-6)


def test_loss_and_gradients_match_a_direct_computation_with_detached_guesses(monkeypatch):
    batch = _batch()
    g = torch.Generator().manual_seed(5)
    lam, perm = torch.rand(12, generator=g), torch.randperm(12, generator=g)
    _fix_draws(monkeypatch, lam, perm)
    model = _linear_model()
    out = MixMatch(model, info(), lambda_u=75.0, rampup_steps=100)(batch, step=50)
    grads = torch.autograd.grad(out["loss"], list(model.parameters()))

    # Written from docs/algorithms.md#mixmatch, not from the implementation.
    with torch.no_grad():
        p = (model(batch["u_w0"]).softmax(1) + model(batch["u_w1"]).softmax(1)) / 2
        q = p**2 / (p**2).sum(dim=1, keepdim=True)
    inputs = torch.cat([batch["x"], batch["u_w0"], batch["u_w1"]])
    targets = torch.cat([F.one_hot(batch["y"], 3).float(), q, q])
    w = torch.maximum(lam, 1 - lam)
    mixed_inputs = w.view(-1, 1, 1, 1) * inputs + (1 - w.view(-1, 1, 1, 1)) * inputs[perm]
    mixed_targets = w.view(-1, 1) * targets + (1 - w.view(-1, 1)) * targets[perm]
    logits = model(mixed_inputs)
    loss_x = -(mixed_targets[:4] * logits[:4].log_softmax(1)).sum(1).mean()
    loss_u = ((mixed_targets[4:] - logits[4:].softmax(1)) ** 2).mean()
    expected = loss_x + 75.0 * 0.5 * loss_u
    expected_grads = torch.autograd.grad(expected, list(model.parameters()))
    assert out["loss"].item() == pytest.approx(expected.item(), abs=1e-5)
    for got, want in zip(grads, expected_grads, strict=True):
        assert torch.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, "algorithm.k .* must be ≥ 1, got 0"),
        ({"temperature": 0.0}, "algorithm.temperature must be > 0"),
        ({"beta": -1.0}, "algorithm.beta .* must be > 0"),
        ({"rampup_steps": -5}, "algorithm.rampup_steps must be ≥ 0"),
    ],
)
def test_bad_settings_fail_with_a_clear_message(kwargs, message):
    with pytest.raises(UserError, match=message):
        MixMatch(TinyNet(), info(), **kwargs)


@pytest.mark.slow
def test_short_run_on_digits_beats_chance():
    overrides = {
        "algorithm.name": "mixmatch",
        "algorithm.rampup_steps": 50,
        "data.num_labels": 40,
        "train.steps": 200,
        "train.eval_every": 100,
        "train.progress": False,
        "augment.strong": "none",
    }
    summary = build_trainer(build_config(None, overrides), None).fit()
    assert summary["test_accuracy"] > 0.4  # chance is 0.1; measured 0.67-0.91 over seeds
