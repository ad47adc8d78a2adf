import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from semisup.algorithms.base import TaskInfo
from semisup.algorithms.fixmatch import FixMatch
from semisup.algorithms.fixmatch_da import FixMatchDA
from semisup.algorithms.mixmatch import MixMatch
from semisup.algorithms.udal import UDAL, UDALMixMatch
from semisup.config import build_config
from semisup.experiment import build_trainer

from .helpers import LogitsAsImages, as_images


def lt_info(counts=(8, 2), total_steps=100) -> TaskInfo:
    return TaskInfo(
        num_classes=len(counts),
        num_labeled=sum(counts),
        labeled_class_counts=tuple(counts),
        total_steps=total_steps,
    )


def _batch():
    return {
        "x": as_images([[0.0, 0.0]]),
        "y": torch.tensor([1]),
        "u_w": as_images([[10.0, 0.0], [0.0, 0.0]]),  # confident class 0, unsure
        "u_s": as_images([[0.0, 0.0], [0.0, 0.0]]),
        "u_y": torch.tensor([0, 1]),
    }


def test_hand_computed_udal_loss_u2_u3():
    # At the end of training with α_min = 0.5, k = 1: α = 0.5, π = [2/3, 1/3] (U2).
    algorithm = UDAL(LogitsAsImages(), lt_info(total_steps=10), alpha_min=0.5, k=1.0)
    out = algorithm(_batch(), step=10)
    assert out["alpha"].item() == pytest.approx(0.5)
    # Supervised: zero logits shifted by [0.1823, -0.5108], label 1 → ln 3 (U3).
    assert out["loss_x"].item() == pytest.approx(math.log(3), abs=1e-6)
    # Unlabeled: p̂ uniform → shift log([0.5, 0.5] / π) = log([0.75, 1.5]); CE for label 0 is
    # −log(0.75 / 2.25) = ln 3, masked for the unsure item, divided by μB = 2.
    assert out["loss_u"].item() == pytest.approx(math.log(3) / 2, abs=1e-6)
    assert out["mask_rate"].item() == 0.5
    assert out["pseudo_label_accuracy"].item() == 1.0


def test_without_adjustments_or_imbalance_udal_is_fixmatch():
    batch = _batch()
    fixmatch = FixMatch(LogitsAsImages(), lt_info())(batch, 0)
    off = UDAL(
        LogitsAsImages(), lt_info(), supervised_adjustment=False, unlabeled_adjustment=False
    )(batch, 50)
    balanced = UDAL(LogitsAsImages(), lt_info(counts=(5, 5)))(batch, 50)
    for out in (off, balanced):
        assert out["loss"].item() == pytest.approx(fixmatch["loss"].item(), abs=1e-6)


def test_u4_p_model_ema_update_and_logit_adjustment_hook():
    algorithm = UDAL(LogitsAsImages(), lt_info(), p_model_estimator="ema")
    algorithm.on_step_end({}, {"unlabeled_distribution": torch.tensor([0.9, 0.1])}, 0)
    assert torch.allclose(algorithm.p_model(), torch.tensor([0.5004, 0.4996]), atol=1e-6)
    assert torch.allclose(algorithm.logit_adjustment(), torch.tensor([0.8, 0.2]).log())
    assert UDAL(LogitsAsImages(), lt_info(), la_inference=False).logit_adjustment() is None


@pytest.mark.parametrize("cls", [UDAL, UDALMixMatch])
def test_default_p_model_is_the_crest_codes_128_batch_window(cls):
    algorithm = cls(LogitsAsImages(), lt_info())
    assert algorithm.p_model.history.shape == (128, 2)
    algorithm.on_step_end({}, {"unlabeled_distribution": torch.tensor([0.9, 0.1])}, 0)
    # PMovingAverage: 127 uniform rows and [0.9, 0.1] → (127·0.5 + 0.9) / 128
    assert torch.allclose(algorithm.p_model(), torch.tensor([0.503125, 0.496875]), atol=1e-7)
    for _ in range(128):  # after 128 more batches only the new means are left
        algorithm.on_step_end({}, {"unlabeled_distribution": torch.tensor([0.7, 0.3])}, 0)
    assert torch.allclose(algorithm.p_model(), torch.tensor([0.7, 0.3]), atol=1e-6)
    small = cls(LogitsAsImages(), lt_info(), window=4)
    assert small.p_model.history.shape == (4, 2)


class NoBatchNormNet(nn.Module):
    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))

    def forward(self, x):
        return self.body(x)


@pytest.mark.parametrize("cls", [UDAL, FixMatchDA])
def test_outputs_finite_and_no_gradient_through_the_weak_view(cls):
    torch.manual_seed(0)
    u_w = torch.randn(6, 1, 8, 8, requires_grad=True)
    u_s = torch.randn(6, 1, 8, 8, requires_grad=True)
    batch = {
        "x": torch.randn(2, 1, 8, 8),
        "y": torch.tensor([0, 1]),
        "u_w": u_w,
        "u_s": u_s,
        "u_y": torch.tensor([0, 1, 0, 1, -1, -1]),
    }
    out = cls(NoBatchNormNet(), lt_info(), threshold=0.0)(batch, 30)
    keys = {"loss", "loss_x", "loss_u", "mask_rate", "alpha", "pseudo_label_accuracy"}
    assert keys | {"unlabeled_distribution"} <= set(out)
    assert all(torch.isfinite(v).all() for v in out.values())
    assert all(not v.requires_grad for k, v in out.items() if k != "loss")
    (out["loss"] - out["loss_x"]).backward()
    assert u_w.grad is None or not u_w.grad.any()
    assert u_s.grad is not None and u_s.grad.abs().sum() > 0


def test_fixmatch_da_aligns_pseudo_labels_to_the_progressive_target():
    # q = [0.9, 0.1], p̂ uniform, π_0 = p_data = [0.8, 0.2] → q̃ ∝ [1.44, 0.04]: 0.973 ≥ 0.95.
    batch = _batch()
    batch["u_w"] = as_images([[math.log(0.9), math.log(0.1)]] * 2)
    aligned = FixMatchDA(LogitsAsImages(), lt_info())(batch, 0)
    plain = FixMatchDA(LogitsAsImages(), lt_info(), distribution_alignment=False)(batch, 0)
    assert aligned["mask_rate"].item() == 1.0 and plain["mask_rate"].item() == 0.0
    assert plain["loss"].item() == pytest.approx(
        FixMatch(LogitsAsImages(), lt_info())(batch, 0)["loss"].item()
    )
    # At the end (α = 0.5): π = [2/3, 1/3], q̃ ∝ [1.2, 0.0667] → 0.947 < 0.95.
    assert FixMatchDA(LogitsAsImages(), lt_info())(batch, 100)["mask_rate"].item() == 0.0


def test_fixmatch_da_la_supervised_is_menons_logit_adjusted_loss():
    batch = _batch()
    out = FixMatchDA(LogitsAsImages(), lt_info(), la_supervised=True)(batch, 0)
    expected = F.cross_entropy(torch.tensor([[0.8, 0.2]]).log(), torch.tensor([1]))
    assert out["loss_x"].item() == pytest.approx(expected.item(), abs=1e-6)
    algorithm = FixMatchDA(LogitsAsImages(), lt_info())
    algorithm.on_step_end({}, {"unlabeled_distribution": torch.tensor([0.6, 0.4])}, 0)
    assert algorithm.p_model.history[-1].tolist() == pytest.approx([0.6, 0.4])


def test_udal_mixmatch_matches_mixmatch_when_classes_are_balanced():
    torch.manual_seed(0)
    model = NoBatchNormNet(3)
    info = lt_info(counts=(4, 4, 4))
    batch = {
        "x": torch.randn(4, 1, 8, 8),
        "y": torch.tensor([0, 1, 2, 0]),
        "u_w0": torch.randn(4, 1, 8, 8),
        "u_w1": torch.randn(4, 1, 8, 8),
    }
    torch.manual_seed(1)
    plain = MixMatch(model, info, rampup_steps=0)(batch, 5)
    torch.manual_seed(1)
    udal = UDALMixMatch(model, info, rampup_steps=0)(batch, 5)
    assert udal["loss"].item() == pytest.approx(plain["loss"].item(), abs=1e-6)
    assert {"loss", "loss_x", "loss_u", "alpha", "unlabeled_distribution"} <= set(udal)
    assert all(torch.isfinite(v).all() for v in udal.values())
    assert udal["alpha"].item() == pytest.approx(1 - 0.5 * 0.05**2)  # α_min 0.5, k 2, t/T 0.05
    imbalanced = UDALMixMatch(model, lt_info(counts=(8, 3, 1)), rampup_steps=0)
    torch.manual_seed(1)
    assert imbalanced(batch, 5)["loss"].item() != pytest.approx(plain["loss"].item(), abs=1e-4)


def test_long_tail_run_reports_logit_adjusted_accuracy():
    cfg = build_config(
        None,
        {
            "algorithm.name": "udal",
            "algorithm.mu": 2,
            "data.imbalance_ratio": 10,
            "data.labeled_fraction": 0.2,
            "train.steps": 2,
            "train.eval_every": 2,
            "train.batch_size": 8,
            "train.progress": False,
            "augment.strong": "randaugment",
        },
    )
    summary = build_trainer(cfg, None).fit()
    assert summary["test_accuracy_la"] is not None
    assert summary["test_balanced_accuracy"] is not None


@pytest.mark.slow
def test_short_long_tailed_digits_run_beats_chance():
    cfg = build_config(
        None,
        {
            "algorithm.name": "udal",
            "algorithm.mu": 2,
            "data.imbalance_ratio": 10,
            "data.labeled_fraction": 0.2,
            "train.steps": 150,
            "train.eval_every": 150,
            "train.batch_size": 16,
            "train.progress": False,
            "augment.strong": "randaugment",
        },
    )
    summary = build_trainer(cfg, None).fit()
    assert summary["test_accuracy_raw"] > 0.5  # chance: 0.1 (the EMA lags after 150 steps)
