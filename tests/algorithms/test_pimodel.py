import copy
import math

import pytest
import torch
import torch.nn.functional as F

from semisup.algorithms.pimodel import PiModel
from semisup.config import build_config
from semisup.experiment import build_trainer
from semisup.math import losses

from .helpers import LogitsAsImages, TinyNet, as_images, info

LN2 = math.log(2)


def _batch():
    return {
        "x": as_images([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
        "y": torch.tensor([0, 2]),
        "u_w0": as_images([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]]),  # the target view
        "u_w1": as_images([[LN2, 0.0, 0.0], [1.0, 2.0, 3.0]]),  # the student view
    }


def test_hand_computed_loss_after_the_ramp_up():
    # Row 1: target softmax = (1/3, 1/3, 1/3), student = (1/2, 1/4, 1/4):
    # squared differences (1/36, 1/144, 1/144), mean over classes 1/72. Row 2: identical views.
    out = PiModel(LogitsAsImages(), info(total_steps=100))(_batch(), step=40)
    assert out["loss_u"].item() == pytest.approx(1 / 144, abs=1e-7)
    expected_x = F.cross_entropy(_batch()["x"].flatten(1), _batch()["y"])
    assert out["loss_x"].item() == pytest.approx(expected_x.item())
    assert out["loss"].item() == pytest.approx(expected_x.item() + 10 / 144, abs=1e-6)
    assert out["consistency_weight"].item() == 10.0


def test_probability_mse_is_the_class_mean_of_squared_differences():
    loss = losses.probability_mse(torch.tensor([[LN2, 0.0, 0.0]]), torch.full((1, 3), 1 / 3))
    assert loss.tolist() == pytest.approx([1 / 72])
    logits = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    targets = torch.rand(2, 3, dtype=torch.float64).softmax(-1)
    assert torch.autograd.gradcheck(lambda z: losses.probability_mse(z, targets), (logits,))


def test_linear_ramp_up_over_forty_percent_of_training():
    algorithm = PiModel(LogitsAsImages(), info(total_steps=100), lambda_u=10.0)
    weights = [algorithm(_batch(), step)["consistency_weight"].item() for step in (0, 20, 40, 99)]
    assert weights == pytest.approx([0.0, 5.0, 10.0, 10.0])
    at_start = algorithm(_batch(), 0)
    assert at_start["loss"].item() == pytest.approx(at_start["loss_x"].item())  # supervised only


def test_gradient_flows_through_the_student_view_only():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    u_w0 = torch.randn(4, 1, 8, 8, requires_grad=True)
    u_w1 = torch.randn(4, 1, 8, 8, requires_grad=True)
    batch = {"x": torch.randn(2, 1, 8, 8), "y": torch.tensor([0, 1]), "u_w0": u_w0, "u_w1": u_w1}
    out = PiModel(model, info(total_steps=10))(batch, step=10)
    (out["loss"] - out["loss_x"]).backward()
    assert u_w0.grad is None
    assert u_w1.grad is not None and u_w1.grad.abs().sum() > 0


def test_outputs_and_batchnorm_running_statistics_come_from_the_labeled_call_only():
    torch.manual_seed(0)
    model = TinyNet()
    labeled_only = copy.deepcopy(model)
    batch = {k: torch.randn(n, 1, 8, 8) for k, n in (("x", 4), ("u_w0", 6), ("u_w1", 6))}
    batch["y"] = torch.tensor([0, 1, 2, 0])
    out = PiModel(model, info(total_steps=10))(batch, step=5)
    labeled_only(batch["x"])
    assert torch.equal(model.bn.running_mean, labeled_only.bn.running_mean)
    assert torch.equal(model.bn.running_var, labeled_only.bn.running_var)
    assert set(out) == {"loss", "loss_x", "loss_u", "consistency_weight", "unlabeled_distribution"}
    assert out["loss"].requires_grad and all(torch.isfinite(v).all() for v in out.values())
    assert not any(v.requires_grad for k, v in out.items() if k != "loss")


def test_short_digits_run_beats_chance():
    overrides = {"algorithm.name": "pimodel", "augment.strong": "none", "train.progress": False}
    short = {"train.steps": 150, "train.eval_every": 150, "train.batch_size": 16}
    cfg = build_config(None, {**overrides, **short, "train.ema_decay": 0.9})
    assert build_trainer(cfg, None).fit()["test_accuracy"] >= 0.5
