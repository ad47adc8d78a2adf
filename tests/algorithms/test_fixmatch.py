import math

import pytest
import torch

from semisup.algorithms.fixmatch import FixMatch
from semisup.algorithms.supervised import Supervised
from semisup.math import pseudo

from .helpers import LogitsAsImages, TinyNet, as_images, info


def _batch(u_w_logits, u_s_logits, y_u=None):
    x = as_images([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    batch = {
        "x": x,
        "y": torch.tensor([0, 1]),
        "u_w": as_images(u_w_logits),
        "u_s": as_images(u_s_logits),
    }
    if y_u is not None:
        batch["u_y"] = torch.tensor(y_u)
    return batch


def test_f1_unlabeled_loss_is_divided_by_the_whole_unlabeled_batch():
    confident, unsure = [10.0, 0.0, 0.0], [1.0, 0.0, 0.0]
    batch = _batch([confident, unsure, confident, unsure], [[0.0, 0.0, 0.0]] * 4)
    out = FixMatch(LogitsAsImages(), info())(batch, step=0)
    assert out["loss_u"].item() == pytest.approx(2 * math.log(3) / 4, abs=1e-6)  # 0.54930614
    assert out["mask_rate"].item() == 0.5
    expected_x = torch.nn.functional.cross_entropy(batch["x"].flatten(1), batch["y"])
    assert out["loss_x"].item() == pytest.approx(expected_x.item())
    assert out["loss"].item() == pytest.approx(expected_x.item() + 2 * math.log(3) / 4, abs=1e-6)


def test_f2_confidence_exactly_at_threshold_is_used():
    probs = torch.tensor([[0.95, 0.05], [0.9499, 0.0501]])
    assert pseudo.confidence_mask(probs, 0.95).tolist() == [1.0, 0.0]


def test_threshold_one_gives_zero_unlabeled_loss_and_lambda_scales_it():
    batch = _batch([[3.0, 0.0, 0.0]] * 4, [[0.0, 1.0, 0.0]] * 4)
    assert FixMatch(LogitsAsImages(), info(), threshold=1.0)(batch, 0)["loss_u"] == 0
    out = FixMatch(LogitsAsImages(), info(), threshold=0.5, lambda_u=3.0)(batch, 0)
    assert out["loss"].item() == pytest.approx((out["loss_x"] + 3 * out["loss_u"]).item())


def test_no_gradient_flows_through_the_pseudo_labels():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))  # no BatchNorm
    u_w = torch.randn(6, 1, 8, 8, requires_grad=True)
    u_s = torch.randn(6, 1, 8, 8, requires_grad=True)
    batch = {"x": torch.randn(2, 1, 8, 8), "y": torch.tensor([0, 1]), "u_w": u_w, "u_s": u_s}
    out = FixMatch(model, info(), threshold=0.0)(batch, 0)
    (out["loss"] - out["loss_x"]).backward()
    assert u_w.grad is None or not u_w.grad.any()
    assert u_s.grad is not None and u_s.grad.abs().sum() > 0


def test_outputs_are_finite_detached_scalars_with_pseudo_label_accuracy():
    torch.manual_seed(0)
    batch = {
        "x": torch.randn(4, 1, 8, 8),
        "y": torch.tensor([0, 1, 2, 0]),
        "u_w": torch.randn(8, 1, 8, 8),
        "u_s": torch.randn(8, 1, 8, 8),
        "u_y": torch.tensor([0, 1, 2, 0, 1, 2, -1, -1]),
    }
    out = FixMatch(TinyNet(), info(), threshold=0.0)(batch, 0)
    assert {
        "loss",
        "loss_x",
        "loss_u",
        "mask_rate",
        "pseudo_label_accuracy",
        "unlabeled_distribution",
    } <= set(out)
    assert out["loss"].requires_grad
    assert all(not v.requires_grad for k, v in out.items() if k != "loss")
    assert all(torch.isfinite(v).all() for v in out.values())
    assert out["unlabeled_distribution"].shape == (3,)
    assert out["unlabeled_distribution"].sum().item() == pytest.approx(1.0)


def test_pseudo_label_accuracy_counts_only_used_and_known_labels():
    acc = pseudo.pseudo_label_accuracy(
        torch.tensor([0, 1, 2, 0]), torch.tensor([0, 2, 2, -1]), torch.tensor([1.0, 1.0, 0.0, 1.0])
    )
    assert acc.item() == 0.5
    none_used = pseudo.pseudo_label_accuracy(torch.tensor([0]), torch.tensor([0]), torch.zeros(1))
    assert torch.isnan(none_used)


def test_sharpen_m1():
    out = pseudo.sharpen(torch.tensor([[0.1, 0.2, 0.3, 0.4]]), 0.5)
    assert torch.allclose(out, torch.tensor([[1 / 30, 2 / 15, 0.3, 8 / 15]]), atol=1e-6)


def test_supervised_is_plain_cross_entropy_on_labeled_images():
    algorithm = Supervised(LogitsAsImages(), info())
    assert algorithm.mu == 0 and algorithm.views == {"x": "weak"}
    x = as_images([[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    out = algorithm({"x": x, "y": torch.tensor([0, 1])}, 0)
    expected = torch.nn.functional.cross_entropy(x.flatten(1), torch.tensor([0, 1]))
    assert out["loss"].item() == pytest.approx(expected.item())
