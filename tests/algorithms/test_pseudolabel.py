import copy
import math

import pytest
import torch
import torch.nn.functional as F

from semisup.algorithms.pseudolabel import PseudoLabel
from semisup.config import build_config
from semisup.experiment import build_trainer
from semisup.math import pseudo

from .helpers import LogitsAsImages, TinyNet, as_images, info


def _batch(u_logits, u_y=None):
    batch = {"x": as_images([[1.0, 0.0], [0.0, 3.0]]), "y": torch.tensor([1, 1])}
    batch["u_w"] = as_images(u_logits)
    if u_y is not None:
        batch["u_y"] = torch.tensor(u_y)
    return batch


def test_hand_computed_loss_with_a_strict_threshold():
    # softmax(ln3, 0) = (0.75, 0.25): used, CE = −ln 0.75; softmax(0, 0) = (0.5, 0.5): exactly at
    # τ = 0.5, not used (strict >); the mean is over both images.
    algorithm = PseudoLabel(LogitsAsImages(), info(num_classes=2, total_steps=10), threshold=0.5)
    out = algorithm(_batch([[math.log(3), 0.0], [0.0, 0.0]], u_y=[1, 0]), step=4)
    assert out["mask_rate"].item() == 0.5
    assert out["loss_u"].item() == pytest.approx(-math.log(0.75) / 2, abs=1e-6)
    expected_x = F.cross_entropy(_batch([[0.0, 0.0]])["x"].flatten(1), torch.tensor([1, 1]))
    assert out["loss"].item() == pytest.approx(expected_x.item() - math.log(0.75) / 2, abs=1e-6)
    assert out["pseudo_label_accuracy"].item() == 0.0  # the used pseudo-label 0 is wrong


def test_ramp_up_and_threshold_one_leave_the_supervised_loss():
    algorithm = PseudoLabel(LogitsAsImages(), info(num_classes=2, total_steps=10), threshold=0.5)
    batch = _batch([[math.log(3), 0.0]])
    for step, alpha in ((0, 0.0), (2, 0.5), (4, 1.0), (9, 1.0)):  # linear over 0.4 · 10 steps
        out = algorithm(batch, step)
        assert out["loss"].item() == pytest.approx(out["loss_x"].item() - alpha * math.log(0.75))
    strict = PseudoLabel(LogitsAsImages(), info(num_classes=2), threshold=1.0)
    assert strict(_batch([[30.0, 0.0]]), step=50)["loss_u"].item() == 0.0


def test_gradient_treats_the_pseudo_label_as_a_constant():
    u = as_images([[math.log(3), 0.0], [0.0, 2.0]]).requires_grad_()
    algorithm = PseudoLabel(LogitsAsImages(), info(num_classes=2, total_steps=10), threshold=0.5)
    out = algorithm({**_batch([[0.0, 0.0]]), "u_w": u}, step=10)
    (out["loss"] - out["loss_x"]).backward()
    # d/dz of mean_b CE(z_b, argmax z_b) = (softmax(z_b) − onehot(argmax z_b)) / 2.
    probs = u.detach().flatten(1).softmax(-1)
    expected = (probs - F.one_hot(probs.argmax(-1), 2)) / 2
    assert torch.allclose(u.grad.flatten(1), expected, atol=1e-6)


def test_monitors_report_mask_rate_distribution_and_accuracy_of_used_labels():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], requires_grad=True)
    mask = torch.tensor([1.0, 1.0, 0.0])
    out = pseudo.monitors(probs, torch.tensor([0, 1, 0]), mask, torch.tensor([0, 0, 1]))
    assert out["mask_rate"].item() == pytest.approx(2 / 3)
    assert out["unlabeled_distribution"].tolist() == pytest.approx([1.7 / 3, 1.3 / 3])
    assert out["pseudo_label_accuracy"].item() == 0.5
    assert not out["unlabeled_distribution"].requires_grad
    assert set(pseudo.monitors(probs, torch.tensor([0, 1, 0]), mask, None)) == {
        "mask_rate",
        "unlabeled_distribution",
    }


def test_outputs_and_batchnorm_running_statistics_come_from_the_labeled_call_only():
    torch.manual_seed(0)
    model = TinyNet()
    labeled_only = copy.deepcopy(model)
    batch = {"x": torch.randn(4, 1, 8, 8), "y": torch.tensor([0, 1, 2, 0])}
    batch.update(u_w=torch.randn(6, 1, 8, 8), u_y=torch.tensor([0, 1, 2, 0, -1, -1]))
    out = PseudoLabel(model, info(), threshold=0.0)(batch, step=50)
    labeled_only(batch["x"])
    assert torch.equal(model.bn.running_var, labeled_only.bn.running_var)
    keys = {"loss_x", "loss_u", "mask_rate", "pseudo_label_accuracy", "unlabeled_distribution"}
    assert set(out) == {"loss", *keys}
    assert out["loss"].requires_grad and all(torch.isfinite(v).all() for v in out.values())
    assert not any(v.requires_grad for k, v in out.items() if k != "loss")


def test_short_digits_run_beats_chance():
    overrides = {"algorithm.name": "pseudolabel", "augment.strong": "none", "train.progress": False}
    short = {"train.steps": 150, "train.eval_every": 150, "train.batch_size": 16}
    cfg = build_config(None, {**overrides, **short, "train.ema_decay": 0.9})
    assert build_trainer(cfg, None).fit()["test_accuracy"] >= 0.5
