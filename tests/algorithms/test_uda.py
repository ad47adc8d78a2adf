import math

import pytest
import torch

from semisup.algorithms.uda import UDA
from semisup.config import build_config
from semisup.experiment import build_trainer

from .helpers import LogitsAsImages, TinyNet, as_images, info


def _batch(u_w_logits, u_s_logits):
    return {
        "x": as_images([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]]),
        "y": torch.tensor([0, 1]),
        "u_w": as_images(u_w_logits),
        "u_s": as_images(u_s_logits),
        "u_y": torch.tensor([0, 2]),
    }


def test_hand_computed_unlabeled_loss_with_sharpening_and_masking():
    # softmax(ln9, 0, 0) = (9, 1, 1)/11: max 0.82 ≥ β = 0.8, used; softmax(0, 0, 0): not used.
    # Target at T = 0.5: softmax(2·ln9, 0, 0) = (81, 1, 1)/83; KL to uniform u_s = Σ t·ln(3t).
    batch = _batch([[math.log(9), 0.0, 0.0], [0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]] * 2)
    algorithm = UDA(LogitsAsImages(), info(), temperature=0.5, tsa_schedule="none")
    out = algorithm(batch, step=0)
    target = [81 / 83, 1 / 83, 1 / 83]
    kl = sum(t * math.log(3 * t) for t in target)
    assert out["mask_rate"].item() == 0.5
    assert out["loss_u"].item() == pytest.approx(kl / 2, abs=1e-6)
    assert out["pseudo_label_accuracy"].item() == 1.0
    assert out["loss"].item() == pytest.approx((out["loss_x"] + out["loss_u"]).item())


def test_entropy_minimisation_term_of_the_fixmatch_repo():
    # fixmatch uda.py: loss += we · mean(entropy(softmax(logits_weak))), logits not detached.
    # H(softmax(ln9, 0, 0)) = ln 11 − (9/11)·ln 9; H(uniform) = ln 3.
    batch = _batch([[math.log(9), 0.0, 0.0], [0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]] * 2)
    settings = {"temperature": 0.5, "tsa_schedule": "none"}
    plain_model, model = LogitsAsImages(), LogitsAsImages()
    plain = UDA(plain_model, info(), **settings)(batch, step=0)
    out = UDA(model, info(), lambda_entropy=0.3, **settings)(batch, step=0)
    entropy = (math.log(11) - 9 / 11 * math.log(9) + math.log(3)) / 2
    assert "loss_entropy" not in plain
    assert out["loss_entropy"].item() == pytest.approx(entropy, abs=1e-6)
    assert out["loss"].item() == pytest.approx(plain["loss"].item() + 0.3 * entropy, abs=1e-6)
    # The gradient reaches the weak view: logits s·z, dH/ds = −Σ p_c (z_c − Σ p z) ln p_c for
    # row 1 (row 2 has z = 0), halved by the mean.
    p = [9 / 11, 1 / 11, 1 / 11]
    z = [math.log(9), 0.0, 0.0]
    mean_z = sum(pc * zc for pc, zc in zip(p, z, strict=True))
    d_entropy = -sum(pc * (zc - mean_z) * math.log(pc) for pc, zc in zip(p, z, strict=True)) / 2
    (grad_plain,) = torch.autograd.grad(plain["loss"], plain_model.scale)
    (grad,) = torch.autograd.grad(out["loss"], model.scale)
    assert grad.item() == pytest.approx(grad_plain.item() + 0.3 * d_entropy, abs=1e-6)


def test_tsa_drops_labeled_examples_above_the_threshold():
    # C = 3, linear TSA: η = 1/3 at step 0. x_1 = (2, 0, 0) has p_correct 0.79 > η: dropped;
    # x_2 = (0, 0, 0) has p_correct = 1/3 = η: kept. At the end of training η = 1 keeps both.
    batch = _batch([[0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]])
    algorithm = UDA(LogitsAsImages(), info(total_steps=100))
    start, end = algorithm(batch, step=0), algorithm(batch, step=100)
    assert start["tsa_threshold"].item() == pytest.approx(1 / 3)
    assert start["tsa_keep_rate"].item() == 0.5
    assert start["loss_x"].item() == pytest.approx(math.log(3))
    both = (-math.log(math.exp(2) / (math.exp(2) + 2)) + math.log(3)) / 2
    assert end["tsa_keep_rate"].item() == 1.0
    assert end["loss_x"].item() == pytest.approx(both, abs=1e-6)


def test_threshold_one_gives_zero_unlabeled_loss():
    batch = _batch([[5.0, 0.0, 0.0], [0.0, 3.0, 0.0]], [[0.0, 1.0, 0.0]] * 2)
    out = UDA(LogitsAsImages(), info(), threshold=1.0)(batch, step=0)
    assert out["loss_u"].item() == 0.0 and out["mask_rate"].item() == 0.0


def test_no_gradient_flows_through_the_weak_view_target_or_the_masks():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    u_w = torch.randn(6, 1, 8, 8, requires_grad=True)
    u_s = torch.randn(6, 1, 8, 8, requires_grad=True)
    batch = {"x": torch.randn(2, 1, 8, 8), "y": torch.tensor([0, 1]), "u_w": u_w, "u_s": u_s}
    out = UDA(model, info(), threshold=0.0)(batch, step=0)
    (out["loss"] - out["loss_x"]).backward()
    assert u_w.grad is None or not u_w.grad.any()
    assert u_s.grad is not None and u_s.grad.abs().sum() > 0


def test_outputs_are_finite_detached_scalars():
    torch.manual_seed(0)
    batch = {k: torch.randn(n, 1, 8, 8) for k, n in (("x", 4), ("u_w", 8), ("u_s", 8))}
    batch.update(y=torch.tensor([0, 1, 2, 0]), u_y=torch.tensor([0, 1, 2, 0, 1, 2, -1, -1]))
    out = UDA(TinyNet(), info(), threshold=0.0)(batch, step=3)
    keys = {"loss_x", "loss_u", "mask_rate", "tsa_threshold", "tsa_keep_rate"}
    assert set(out) == {"loss", "pseudo_label_accuracy", "unlabeled_distribution", *keys}
    assert out["loss"].requires_grad and all(torch.isfinite(v).all() for v in out.values())
    assert not any(v.requires_grad for k, v in out.items() if k != "loss")


def test_short_digits_run_beats_chance():
    overrides = {"algorithm.name": "uda", "algorithm.mu": 2, "augment.strong": "randaugment"}
    # 300 steps: at 150 the run still climbs steeply (0.50-0.74 over seeds and threads).
    short = {"train.steps": 300, "train.eval_every": 300, "train.batch_size": 16}
    cfg = build_config(
        None, {**overrides, **short, "train.ema_decay": 0.9, "train.progress": False}
    )
    assert build_trainer(cfg, None).fit()["test_accuracy"] >= 0.5
