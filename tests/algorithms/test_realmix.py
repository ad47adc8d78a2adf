import math

import pytest
import torch
from torch import nn

from semisup.algorithms.base import TaskInfo
from semisup.algorithms.mixmatch import MixMatch
from semisup.algorithms.realmix import (
    RealMix,
    code_keep_mask,
    masked_squared_error,
    ood_keep_mask,
    soft_label_keep_mask,
)
from semisup.config import build_config
from semisup.experiment import build_trainer
from semisup.math import mixing, pseudo, tsa

from .helpers import LogitsAsImages, as_images


def realmix_info(num_unlabeled: int = 100, total_steps: int = 100) -> TaskInfo:
    return TaskInfo(
        num_classes=3,
        num_labeled=6,
        labeled_class_counts=(2, 2, 2),
        total_steps=total_steps,
        num_unlabeled=num_unlabeled,
    )


def test_rm1_tsa_thresholds():
    expected = {
        "linear": [0.1, 0.55, 1.0],
        "exp": [0.10606415, 0.17387650, 1.0],
        "log": [0.1, 0.92612350, 0.99393585],
    }
    for schedule, values in expected.items():
        got = [tsa.threshold(schedule, rho, 10) for rho in (0, 0.5, 1)]
        assert got == pytest.approx(values, abs=1e-6), schedule


def test_rm2_ood_mask_strict_cut():
    confidence = torch.tensor([0.9, 0.2, 0.5, 0.7, 0.3, 0.95, 0.6, 0.4])
    assert ood_keep_mask(confidence, 0.5).tolist() == [1, 0, 0, 1, 0, 1, 0, 0]
    assert (
        ood_keep_mask(torch.rand(128, generator=torch.Generator().manual_seed(0)), 0.5).sum() == 63
    )


def test_rm3_masked_squared_error_and_its_gradient():
    errors = torch.tensor([[0.01, 0.04], [0.09, 0.0], [0.25, 0.25]], requires_grad=True)
    loss = masked_squared_error(errors, torch.tensor([1.0, 0.0, 1.0]))
    assert loss.item() == pytest.approx(0.1375)
    loss.backward()
    assert errors.grad[1].tolist() == [0.0, 0.0]  # a masked example gets no gradient
    assert masked_squared_error(errors, torch.zeros(3)).item() == 0.0


def test_rm4_extend_multiplies_the_unlabeled_set():
    algorithm = RealMix(LogitsAsImages(), realmix_info(num_unlabeled=49750))
    assert algorithm.unlabeled_copies.size == 2_487_500
    keep = RealMix(LogitsAsImages(), realmix_info(num_unlabeled=10), extend_keep_original=True)
    assert keep.unlabeled_copies.size == 51 * 10
    assert RealMix(LogitsAsImages(), realmix_info(), extend_copies=0).unlabeled_copies is None


def test_rm5_tsa_keep_masks_intended_and_as_coded():
    target = torch.tensor([[0.7, 0.3, 0.0]] * 3)
    probs = torch.tensor([[0.3, 0.6, 0.1], [0.6, 0.3, 0.1], [0.6, 0.3, 0.1]])
    logits = torch.tensor([[0.2, 0.9, -0.5], [1.0, 0.3, -0.8], [1.0, 0.3, 0.8]])
    assert soft_label_keep_mask(probs, target, 0.55).tolist() == [1, 0, 0]
    assert code_keep_mask(probs, logits, target, 0.55).tolist() == [0, 0, 1]
    one_hot = torch.tensor([[0.0, 1.0, 0.0]])  # UDA's rule for hard labels: p_correct < η
    assert soft_label_keep_mask(torch.tensor([[0.2, 0.5, 0.3]]), one_hot, 0.55).tolist() == [1]


def test_extend_copies_are_reproducible_distinct_and_batch_independent():
    algorithm = RealMix(LogitsAsImages(), realmix_info(num_unlabeled=10), erase_probability=1.0)
    images = torch.full((3, 1, 16, 16), 128, dtype=torch.uint8)
    u_idx = torch.tensor([3, 13, 3])  # image 3 in copies 0, 1, 0
    out = algorithm.unlabeled_copies(images, u_idx)
    assert torch.equal(out[0], out[2]) and not torch.equal(out[0], out[1])
    alone = algorithm.unlabeled_copies(images[1:2], torch.tensor([13]))
    assert torch.equal(alone[0], out[1])
    for erased in out:  # one constant box per image
        changed = erased[0] != 128
        rows, cols = changed.any(dim=1).nonzero(), changed.any(dim=0).nonzero()
        box = erased[0, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert changed.sum() == box.numel() and (box == box.flatten()[0]).all()
    other_seed = RealMix(LogitsAsImages(), realmix_info(10), erase_probability=1.0, extend_seed=1)
    assert not torch.equal(other_seed.unlabeled_copies(images, u_idx), out)


def test_extend_keep_original_and_erase_rate():
    algorithm = RealMix(
        LogitsAsImages(), realmix_info(num_unlabeled=2000), extend_keep_original=True
    )
    images = torch.full((4000, 1, 8, 8), 128, dtype=torch.uint8)
    out = algorithm.unlabeled_copies(images, torch.arange(4000))  # copy 0 then copy 1
    assert torch.equal(out[:2000], images[:2000])
    erased = (out[2000:] != 128).flatten(1).any(dim=1).float().mean()
    assert 0.25 < erased.item() < 0.35  # p = 0.3 (fills equal to 128 are rare)


def _hand_batch():
    return {
        "x": as_images([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]]),
        "y": torch.tensor([0, 1]),
        "u_w0": as_images([[1.0, 0.0, 0.0], [0.0, 0.0, 3.0]]),
        "u_w1": as_images([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),
    }


def test_hand_computed_loss_on_a_fixed_batch(monkeypatch):
    # λ = 1 for every item: MixUp leaves the pool as it is, so the loss is hand-computable.
    no_mixing = lambda n, beta, device=None, generator=None: (torch.ones(n), torch.arange(n))  # noqa: E731
    monkeypatch.setattr(mixing, "mixup_draws", no_mixing)
    algorithm = RealMix(
        LogitsAsImages(), realmix_info(), lambda_u=10.0, rampup_steps=0,
        extend_copies=0, tsa_schedule="linear", ood_fraction=0.5,
    )  # fmt: skip
    out = algorithm(_hand_batch(), step=50)
    # TSA at ρ = 0.5, C = 3: η = 2/3. Row 0: p_0 = 0.787 ≥ η is dropped; row 1: p_1 = 1/3 kept.
    assert out["tsa_threshold"].item() == pytest.approx(2 / 3)
    assert out["tsa_keep_rate"].item() == 0.5
    assert out["loss_x"].item() == pytest.approx(math.log(3), abs=1e-5)
    # OOD: confidences [0.576, 0.909, 0.576, 0.576] (items u_w0 rows, then u_w1 rows), γ = 0.5:
    # cut = sorted[2] = 0.576, only item 1 (u_w0 row 1) kept.
    guess = pseudo.sharpen(
        (torch.tensor([0.0, 0.0, 3.0]).softmax(0) + torch.tensor([0.0, 0.0, 1.0]).softmax(0)) / 2,
        0.5,
    )
    expected_u = (guess - torch.tensor([0.0, 0.0, 3.0]).softmax(0)).square().sum() / 3
    assert out["mask_rate"].item() == 0.25
    assert out["loss_u"].item() == pytest.approx(expected_u.item(), abs=1e-5)
    assert out["loss"].item() == pytest.approx(math.log(3) + 10 * expected_u.item(), abs=1e-4)


class NoBatchNormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))

    def forward(self, x):
        return self.body(x)


def _random_batch():
    torch.manual_seed(0)
    return {
        "x": torch.randn(4, 1, 8, 8),
        "y": torch.tensor([0, 1, 2, 0]),
        "u_w0": torch.randn(4, 1, 8, 8),
        "u_w1": torch.randn(4, 1, 8, 8),
        "u_y": torch.tensor([0, 1, -1, 2]),
    }


def test_with_every_part_switched_off_realmix_is_mixmatch():
    model, batch = NoBatchNormNet(), _random_batch()
    torch.manual_seed(1)
    plain = MixMatch(model, realmix_info(), rampup_steps=10)(batch, 5)
    torch.manual_seed(1)
    off = RealMix(model, realmix_info(), rampup_steps=10, extend_copies=0, tsa_schedule="none")
    out = off(batch, 5)
    assert out["loss"].item() == pytest.approx(plain["loss"].item(), abs=1e-6)
    torch.manual_seed(1)
    supervised_only = RealMix(model, realmix_info(), lambda_u=0.0)(batch, 5)
    assert supervised_only["loss"].item() == pytest.approx(supervised_only["loss_x"].item())


@pytest.mark.parametrize("rule", ["intended", "code"])
def test_outputs_keys_finite_and_masks_carry_no_gradient(rule):
    batch = _random_batch()
    algorithm = RealMix(NoBatchNormNet(), realmix_info(), tsa_rule=rule, ood_fraction=0.5)
    out = algorithm(batch, 60)
    keys = {"loss", "loss_x", "loss_u", "mask_rate", "tsa_keep_rate", "tsa_threshold"}
    assert keys | {"pseudo_label_accuracy", "unlabeled_distribution"} <= set(out)
    assert out["loss"].requires_grad
    assert all(not v.requires_grad for k, v in out.items() if k != "loss")
    assert all(torch.isfinite(v).all() for v in out.values())
    assert out["mask_rate"].item() == pytest.approx(3 / 8)  # 8 items, ⌊8·0.5⌋ + 1 dropped


def test_bad_settings_are_user_errors():
    with pytest.raises(ValueError, match="ood_fraction"):
        RealMix(LogitsAsImages(), realmix_info(), ood_fraction=1.0)
    with pytest.raises(ValueError, match="non-empty unlabeled set"):
        RealMix(LogitsAsImages(), realmix_info(num_unlabeled=0))


def _config(**extra):
    overrides = {
        "algorithm.name": "realmix",
        "algorithm.rampup_steps": 20,
        "algorithm.ood_fraction": 0.4,
        "data.mismatch": 50,
        "data.num_labels": 60,
        "data.unlabeled_includes_labeled": False,
        "train.steps": 2,
        "train.eval_every": 2,
        "train.batch_size": 8,
        "train.progress": False,
    }
    return build_config(None, {**overrides, **extra})


def test_mismatch_run_draws_from_all_extended_copies():
    trainer = build_trainer(_config(), None)
    unlabeled = len(trainer.data.unlabeled_idx)
    assert trainer.algorithm.info.num_unlabeled == unlabeled
    assert len(trainer.batches.unlabeled_sampler.indices) == 50 * unlabeled
    assert trainer.fit()["test_accuracy"] is not None


@pytest.mark.slow
def test_short_digits_run_beats_chance():
    overrides = {"train.steps": 150, "train.eval_every": 150, "train.batch_size": 16}
    summary = build_trainer(_config(**overrides), None).fit()
    assert summary["test_accuracy_raw"] > 0.4  # 6 classes: chance 1/6
