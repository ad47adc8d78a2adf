import copy
import math

import pytest
import torch
import torch.nn.functional as F

from semisup.algorithms import vat
from semisup.algorithms.vat import VAT
from semisup.config import build_config
from semisup.experiment import build_trainer
from semisup.math import losses
from semisup.models.bn import frozen_running_stats

from .helpers import LogitsAsImages, TinyNet, as_images, info


def _tiny_batch():
    torch.manual_seed(0)
    return {
        "x": torch.randn(4, 1, 8, 8),
        "y": torch.tensor([0, 1, 2, 0]),
        "u_w": torch.randn(6, 1, 8, 8),
    }


def test_kl_divergence_and_entropy_closed_forms_and_gradients():
    p_logits = torch.tensor([[math.log(2), 0.0, 0.0], [0.0, 0.0, 0.0]])
    q_logits = torch.zeros(2, 3)
    # KL((1/2, 1/4, 1/4) ‖ uniform) = ln 3 − 1.5·ln 2; KL(p ‖ p) = 0.
    kl = losses.kl_divergence(p_logits, q_logits)
    assert kl.tolist() == pytest.approx([math.log(3) - 1.5 * math.log(2), 0.0], abs=1e-6)
    assert losses.entropy(p_logits).tolist() == pytest.approx([1.5 * math.log(2), math.log(3)])
    a = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(losses.kl_divergence, (a, b))
    assert torch.autograd.gradcheck(losses.entropy, (a,))


def test_direction_is_normalised_by_max_then_l2_norm_per_image():
    d = torch.tensor([[3.0, -4.0], [0.0, 0.5]])
    # (3, −4) / 4 = (0.75, −1), / √(1e-6 + 1.5625) ≈ (0.6, −0.8); (0, 0.5) / 0.5 = (0, 1).
    expected = (
        torch.tensor([[0.75, -1.0], [0.0, 1.0]]) / torch.tensor([[1.5625], [1.0]]).add(1e-6).sqrt()
    )
    assert torch.allclose(vat.normalize_direction(d), expected, atol=1e-7)


def test_perturbation_has_norm_eps_no_history_and_leaves_parameter_gradients_alone():
    model = TinyNet()
    u = _tiny_batch()["u_w"]
    r_adv = vat.adversarial_perturbation(model, u, model(u), eps=2.0)
    assert not r_adv.requires_grad
    assert r_adv.flatten(1).norm(dim=1) == pytest.approx([2.0] * 6, abs=1e-4)
    assert all(p.grad is None for p in model.parameters())


def test_perturbation_is_more_adversarial_than_random_directions():
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 5))
    u = torch.randn(8, 1, 8, 8)
    logits = model(u).detach()

    def divergence(r):
        return losses.kl_divergence(logits, model(u + r)).detach()

    adversarial = divergence(vat.adversarial_perturbation(model, u, logits, eps=0.5))
    for _ in range(5):
        random = divergence(0.5 * vat.normalize_direction(torch.randn_like(u)))
        assert (adversarial > random).all()


def test_gradient_reaches_the_model_only_through_the_final_loss():
    batch, model = _tiny_batch(), TinyNet()
    torch.manual_seed(7)
    VAT(model, info(total_steps=10), eps=1.0)(batch, step=10)["loss"].backward()
    got = [p.grad.clone() for p in model.parameters()]

    # The same loss with r_adv (same random start) detached and fed in as a constant input.
    torch.manual_seed(7)
    u = batch["u_w"]
    logits_x = model(batch["x"])
    with frozen_running_stats(model):
        logits_u = model(u)
        r_adv = vat.adversarial_perturbation(model, u, logits_u, eps=1.0).detach().clone()
        logits_adv = model(u + r_adv)
    loss = (
        F.cross_entropy(logits_x, batch["y"])
        + 0.3 * losses.kl_divergence(logits_adv, logits_u.detach()).mean()
        + 0.06 * losses.entropy(logits_u).mean()
    )
    expected = torch.autograd.grad(loss, list(model.parameters()))
    for g, e in zip(got, expected, strict=True):
        assert torch.allclose(g, e, atol=1e-6)


def test_hand_computed_loss_without_perturbation():
    # ε = 0: r_adv = 0, the KL term is 0; the entropy of softmax(0, 0, 0) is ln 3 and of
    # softmax(ln2, 0, 0) = (1/2, 1/4, 1/4) is 1.5·ln 2.
    batch = {
        "x": as_images([[2.0, 0.0, 0.0]]),
        "y": torch.tensor([1]),
        "u_w": as_images([[0.0, 0.0, 0.0], [math.log(2), 0.0, 0.0]]),
    }
    out = VAT(LogitsAsImages(), info(total_steps=10), eps=0.0)(batch, step=10)
    entropy = (math.log(3) + 1.5 * math.log(2)) / 2
    assert out["loss_u"].item() == pytest.approx(0.0, abs=1e-7)
    assert out["loss_entropy"].item() == pytest.approx(entropy, abs=1e-6)
    expected_x = F.cross_entropy(batch["x"].flatten(1), batch["y"]).item()
    assert out["loss"].item() == pytest.approx(expected_x + 0.06 * entropy, abs=1e-6)


def test_unlabeled_loss_is_kl_of_perturbed_to_clean_as_the_google_code():
    u = as_images([[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]])
    batch = {"x": as_images([[1.0, 0.0, 0.0]]), "y": torch.tensor([0]), "u_w": u}
    algorithm = VAT(LogitsAsImages(), info(total_steps=10), eps=3.0)
    torch.manual_seed(3)
    out = algorithm(batch, step=0)
    torch.manual_seed(3)
    adv = (u + vat.adversarial_perturbation(algorithm.model, u, u.flatten(1), 3.0)).flatten(1)
    clean = u.flatten(1)
    expected = (adv.softmax(-1) * (adv.log_softmax(-1) - clean.log_softmax(-1))).sum(-1).mean()
    assert out["loss_u"].item() == pytest.approx(expected.item(), abs=1e-6)
    assert out["loss_u"].item() > 0.01  # a real perturbation
    # Step 0: the VAT weight is still 0; the entropy term is not ramped.
    assert out["loss"].item() == pytest.approx((out["loss_x"] + 0.06 * out["loss_entropy"]).item())


def test_outputs_and_batchnorm_running_statistics_come_from_the_labeled_call_only():
    model = TinyNet()
    labeled_only = copy.deepcopy(model)
    batch = _tiny_batch()
    out = VAT(model, info())(batch, step=5)
    labeled_only(batch["x"])
    assert torch.equal(model.bn.running_mean, labeled_only.bn.running_mean)
    assert set(out) == {"loss", "loss_x", "loss_u", "loss_entropy", "unlabeled_distribution"}
    assert out["loss"].requires_grad and all(torch.isfinite(v).all() for v in out.values())
    assert not any(v.requires_grad for k, v in out.items() if k != "loss")


def test_short_digits_run_beats_chance():
    # ε = 1 on 8x8 images (6·√(64/3072) ≈ 0.87); Adam at 0.005: 0.002 needs more steps than this.
    overrides = {"algorithm.name": "vat", "algorithm.eps": 1.0, "augment.strong": "none"}
    # 300 steps: at 150 the run still climbs steeply (0.50-0.86 over seeds and machines).
    short = {"train.steps": 300, "train.eval_every": 300, "train.batch_size": 16}
    tuned = {"optim.lr": 0.005, "train.ema_decay": 0.9, "train.progress": False}
    cfg = build_config(None, {**overrides, **short, **tuned})
    trainer = build_trainer(cfg, None)
    assert cfg.optim.name == "adam" and cfg.optim.schedule == "constant"
    assert trainer.fit()["test_accuracy"] >= 0.5
