import dataclasses
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from semisup.algorithms.flexmatch import FlexMatch
from semisup.errors import UserError

from .helpers import LogitsAsImages, assert_resumes_exactly, info

NUM_UNLABELED = 10


class TorchSSLFlexMatch:
    """FlexMatch's step as TorchSSL writes it, transcribed for comparison.

    TorchSSL/TorchSSL `models/flexmatch/flexmatch.py` (the train loop: the `Counter` over
    `selected_label`, then `classwise_acc`, then the table write) and
    `models/flexmatch/flexmatch_utils.py` (`consistency_loss` with 'ce', hard labels, no DA).
    """

    def __init__(self, num_unlabeled, num_classes, p_cutoff, thresh_warmup):
        self.selected_label = torch.ones((num_unlabeled,), dtype=torch.long) * -1
        self.classwise_acc = torch.zeros((num_classes,))
        self.num_classes, self.p_cutoff, self.thresh_warmup = num_classes, p_cutoff, thresh_warmup

    def refresh_classwise_acc(self):
        pseudo_counter = Counter(self.selected_label.tolist())
        if max(pseudo_counter.values()) < len(self.selected_label):
            if self.thresh_warmup:
                for i in range(self.num_classes):
                    self.classwise_acc[i] = pseudo_counter[i] / max(pseudo_counter.values())
            else:
                without_unused = dict(pseudo_counter)
                without_unused.pop(-1, None)
                for i in range(self.num_classes):
                    self.classwise_acc[i] = pseudo_counter[i] / max(without_unused.values())

    def step(self, logits_x_lb, y_lb, logits_x_ulb_w, logits_x_ulb_s, x_ulb_idx, lambda_u):
        self.refresh_classwise_acc()
        sup_loss = F.cross_entropy(logits_x_lb, y_lb)
        pseudo_label = torch.softmax(logits_x_ulb_w.detach(), dim=-1)
        max_probs, max_idx = torch.max(pseudo_label, dim=-1)
        acc = self.classwise_acc[max_idx]
        mask = max_probs.ge(self.p_cutoff * (acc / (2.0 - acc))).float()
        select = max_probs.ge(self.p_cutoff).long()
        masked = F.cross_entropy(logits_x_ulb_s, max_idx, reduction="none") * mask
        unsup_loss = masked.mean()
        if x_ulb_idx[select == 1].nelement() != 0:
            self.selected_label[x_ulb_idx[select == 1]] = max_idx[select == 1]
        return sup_loss + lambda_u * unsup_loss, unsup_loss, mask


def _flexmatch(**kwargs):
    task = dataclasses.replace(info(3, 6), num_unlabeled=NUM_UNLABELED)
    return FlexMatch(LogitsAsImages(), task, **kwargs)


def _random_steps(count, seed):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(count):
        yield {
            "x": 3 * torch.randn(2, 3, 1, 1, generator=generator),
            "y": torch.randint(0, 3, (2,), generator=generator),
            "u_w": 3 * torch.randn(4, 3, 1, 1, generator=generator),
            "u_s": 3 * torch.randn(4, 3, 1, 1, generator=generator),
            "u_idx": torch.randperm(NUM_UNLABELED, generator=generator)[:4],
        }


@pytest.mark.parametrize("warmup", [True, False])
def test_steps_match_the_torchssl_transcription(warmup):
    algorithm = _flexmatch(threshold=0.8, lambda_u=2.0, threshold_warmup=warmup)
    reference = TorchSSLFlexMatch(NUM_UNLABELED, 3, p_cutoff=0.8, thresh_warmup=warmup)
    used_some, dropped_some = False, False
    for step, batch in enumerate(_random_steps(8, seed=3)):
        out = algorithm(batch, step)
        loss, loss_u, mask = reference.step(
            batch["x"].flatten(1),
            batch["y"],
            batch["u_w"].flatten(1),
            batch["u_s"].flatten(1),
            batch["u_idx"],
            lambda_u=2.0,
        )
        assert out["loss"].item() == pytest.approx(loss.item(), abs=1e-6)
        assert out["loss_u"].item() == pytest.approx(loss_u.item(), abs=1e-6)
        assert out["mask_rate"].item() == pytest.approx(mask.mean().item())
        algorithm.on_step_end(batch, out, step)
        assert torch.equal(algorithm.selected_label, reference.selected_label)
        used_some |= bool(mask.sum() > 0) and step > 0
        dropped_some |= bool(mask.sum() < len(mask))
    reference.refresh_classwise_acc()
    assert torch.equal(algorithm.learning_effects, reference.classwise_acc)
    assert (algorithm.selected_label >= 0).sum() > 0 and (algorithm.selected_label < 0).sum() > 0
    assert used_some and dropped_some  # the class thresholds did select


def test_first_step_uses_every_pseudo_label_and_the_table_takes_confident_ones():
    # docs/algorithms.md#numeric-checks FL2. β = 0 before any confident prediction: every class
    # threshold is 0.
    algorithm = _flexmatch()
    batch = next(_random_steps(1, seed=0))
    batch["u_w"] = torch.tensor([[4.0, 0, 0], [0, 0.1, 0], [0, 0, 5.0], [0, 0, 0]])[..., None, None]
    batch["u_idx"] = torch.tensor([7, 1, 2, 3])
    out = algorithm(batch, step=0)
    assert out["mask_rate"].item() == 1.0
    assert out["class_thresholds"].tolist() == [0.0, 0.0, 0.0]
    algorithm.on_step_end(batch, out, step=0)
    # softmax(4, 0, 0) = 0.965 and softmax(0, 0, 5) = 0.987 pass τ = 0.95; the others do not.
    expected = torch.full((NUM_UNLABELED,), -1)
    expected[7], expected[2] = 0, 2
    assert torch.equal(algorithm.selected_label, expected)
    # β = 1/8 for classes 0 and 2 (8 unused images): thresholds 0.95·M(1/8) = 0.95/15.
    thresholds = algorithm.class_thresholds()
    assert torch.allclose(thresholds, torch.tensor([0.95 / 15, 0.0, 0.95 / 15]))


def test_no_gradient_through_the_weak_view_and_logged_values_are_detached():
    algorithm = _flexmatch(threshold=0.5)
    batch = next(_random_steps(1, seed=1))
    batch["u_w"].requires_grad_(True)
    batch["u_s"].requires_grad_(True)
    out = algorithm(batch, step=0)
    (out["loss"] - out["loss_x"]).backward()
    assert batch["u_w"].grad is None or not batch["u_w"].grad.any()
    assert batch["u_s"].grad.abs().sum() > 0
    assert all(not v.requires_grad for k, v in out.items() if k not in ("loss", "state"))


def test_flexmatch_needs_unlabeled_data():
    with pytest.raises(UserError, match="unlabeled data"):
        FlexMatch(LogitsAsImages(), info(3, 6))


def test_resume_restores_the_table_and_the_learning_effects_exactly(tmp_path):
    first = assert_resumes_exactly(
        tmp_path, {"algorithm.name": "flexmatch", "algorithm.threshold": 0.3}
    )
    assert (first.algorithm.selected_label >= 0).any()  # the table was written
    assert first.algorithm.learning_effects.sum() > 0
