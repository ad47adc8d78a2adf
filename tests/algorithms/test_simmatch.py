import math

import pytest
import torch
from torch import nn

from semisup.algorithms.simmatch import SimMatch, SimMatchImageNet, aggregate, unfold
from semisup.config import build_config
from semisup.engine.checkpoint import load_checkpoint
from semisup.engine.optim import learning_rate
from semisup.experiment import build_trainer, resolve_optim
from semisup.modules.alignment import align_with_queue
from semisup.modules.memory import momentum_update

from .helpers import TinyNet, info

R2 = math.sqrt(0.5)
BANK = torch.tensor([[1.0, 0.0], [R2, R2], [0.0, 1.0], [-1.0, 0.0]])  # rows e1, (e1+e2)/√2, e2, −e1
BANK_LABELS = torch.tensor([0, 0, 1, 2])
P_W = torch.tensor([[0.5, 0.3, 0.2]])


def test_s1_distribution_alignment_with_an_empty_queue():
    probs = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.3, 0.5]])
    aligned = align_with_queue(probs, torch.zeros(32, 3))
    assert torch.allclose(aligned[0], torch.tensor([0.52941176, 0.35294118, 0.11764706]), atol=1e-6)
    single = align_with_queue(torch.tensor([[0.6, 0.3, 0.1]]), torch.zeros(32, 3))
    assert torch.allclose(single, torch.full((1, 3), 1 / 3), atol=1e-6)


def test_s2_unfolding_and_aggregation():
    similarities = (torch.tensor([[1.0, 0.0]]) @ BANK.T / 0.1).softmax(dim=-1)
    expected_s = torch.tensor([[0.94921736, 0.05073955, 0.00004309, 1.96e-9]])
    assert torch.allclose(similarities, expected_s, atol=1e-6)
    q_hat = unfold(similarities, P_W, BANK_LABELS)
    assert torch.allclose(
        q_hat, torch.tensor([[0.94923372, 0.05074042, 0.00002586, 7.8e-10]]), atol=1e-6
    )
    agg = aggregate(similarities, BANK_LABELS, 3)
    assert torch.allclose(agg, torch.tensor([[0.99995690, 0.00004309, 1.96e-9]]), atol=1e-6)
    p_hat = 0.9 * P_W + 0.1 * agg
    assert torch.allclose(p_hat, torch.tensor([[0.54999569, 0.27000431, 0.18]]), atol=1e-6)


def test_s3_instance_loss_of_the_strong_view():
    q_hat = unfold((torch.tensor([[1.0, 0.0]]) @ BANK.T / 0.1).softmax(-1), P_W, BANK_LABELS)
    student = (torch.tensor([[0.6, 0.8]]) @ BANK.T / 0.1).softmax(-1)
    assert torch.allclose(
        student[0, :3], torch.tensor([0.01731105, 0.85477651, 0.12791233]), atol=1e-6
    )
    loss_in = -(q_hat * student.log()).sum()
    assert loss_in.item() == pytest.approx(3.85849645, abs=1e-5)


class FeaturesAsImages(nn.Module):
    """Features = the (N, 5, 1, 1) input; logits = its first 3 features."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.num_features = 5

    def forward_features(self, x):
        return self.scale * x.flatten(1)

    def forward_head(self, features):
        return features[:, :3]

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def _hand_setup(threshold: float, **kwargs) -> tuple[SimMatch, dict]:
    algorithm = SimMatch(
        FeaturesAsImages(), info(3, 4), threshold=threshold, proj_dim=2, start_steps=0, **kwargs
    )
    with torch.no_grad():  # projection = the last two features
        algorithm.head[0].weight.copy_(torch.eye(5))
        algorithm.head[0].bias.zero_()
        algorithm.head[2].weight.copy_(torch.eye(5)[3:])
        algorithm.head[2].bias.zero_()
        algorithm.bank.embeddings.copy_(BANK)
        algorithm.bank.labels.copy_(BANK_LABELS)
        # A queue whose mean, after this batch's push, is uniform: DA leaves p^w unchanged.
        algorithm.da_queue.history.copy_((32 / 3 - P_W) / 31)
    image = lambda row: torch.tensor(row).reshape(1, 5, 1, 1)  # noqa: E731
    batch = {
        "x": image([0.0, 0.0, 0.0, 1.0, 0.0]),
        "y": torch.tensor([0]),
        "x_idx": torch.tensor([1]),
        "u_w": image([*P_W[0].log().tolist(), 1.0, 0.0]),  # p^w = [0.5, 0.3, 0.2], z^w = e1
        "u_s": image([0.0, 0.0, 0.0, 0.6, 0.8]),  # uniform prediction, z^s = [0.6, 0.8]
    }
    return algorithm, batch


def test_hand_computed_loss_on_a_fixed_batch():
    algorithm, batch = _hand_setup(threshold=0.5)
    out = algorithm(batch, step=0)
    # L_x = ln 3 (zero logits); L_u = H(p̂, uniform) = ln 3 (mask 1: max p̂ = 0.55 ≥ 0.5); L_in = S3.
    assert out["loss_x"].item() == pytest.approx(math.log(3), abs=1e-6)
    assert out["loss_u"].item() == pytest.approx(math.log(3), abs=1e-6)
    assert out["loss_in"].item() == pytest.approx(3.85849645, abs=1e-5)
    assert out["loss"].item() == pytest.approx(2 * math.log(3) + 3.85849645, abs=1e-5)
    strict, batch = _hand_setup(threshold=0.95)
    assert strict(batch, step=0)["loss_u"].item() == 0.0  # S2: max p̂ = 0.55 < 0.95


def test_before_start_steps_there_is_no_instance_loss_nor_propagation():
    algorithm, batch = _hand_setup(threshold=0.5)
    algorithm.start_steps = 1
    out = algorithm(batch, step=0)
    assert out["loss_in"].item() == 0.0
    # p̂ = p^w: H(p^w, uniform) is still ln 3, and the mask uses max p^w = 0.5 ≥ 0.5.
    assert out["mask_rate"].item() == 1.0
    assert algorithm(batch, step=1)["loss_in"].item() > 0


def test_on_step_end_writes_bank_and_queue():
    algorithm, batch = _hand_setup(threshold=0.5)
    out = algorithm(batch, step=0)
    queue_before = algorithm.da_queue.history.clone()
    algorithm.on_step_end(batch, out, step=0)
    # CIFAR code: 0.7·(1/√2, 1/√2) + 0.3·(1, 0), each dimension normalised over the 1 item
    assert algorithm.bank.normalization == "code"
    assert torch.allclose(algorithm.bank.embeddings[1], torch.tensor([1.0, 1.0]))
    assert algorithm.bank.labels.tolist() == [0, 0, 1, 2]
    assert torch.allclose(algorithm.da_queue.history[:-1], queue_before[1:])
    assert torch.allclose(algorithm.da_queue.history[-1], P_W[0], atol=1e-6)


def test_paper_bank_normalisation_writes_unit_embeddings():
    algorithm, batch = _hand_setup(threshold=0.5, bank_normalization="paper")
    algorithm.on_step_end(batch, algorithm(batch, step=0), step=0)
    expected = momentum_update(BANK[1:2], torch.tensor([[1.0, 0.0]]), 0.7)
    # hand: (0.7/√2 + 0.3, 0.7/√2) / its norm
    assert torch.allclose(expected, torch.tensor([[0.84890147, 0.52855112]]), atol=1e-7)
    assert torch.allclose(algorithm.bank.embeddings[1], expected[0])
    assert SimMatchImageNet(TinyNet(), info(3, 4)).bank.normalization == "paper"


def _random_batch(u_requires_grad: bool = False) -> dict:
    torch.manual_seed(0)
    return {
        "x": torch.randn(4, 1, 8, 8),
        "y": torch.tensor([0, 1, 2, 0]),
        "x_idx": torch.tensor([0, 1, 2, 3]),
        "u_w": torch.randn(8, 1, 8, 8, requires_grad=u_requires_grad),
        "u_s": torch.randn(8, 1, 8, 8, requires_grad=u_requires_grad),
        "u_y": torch.tensor([0, 1, 2, 0, 1, 2, -1, -1]),
    }


class NoBatchNormNet(nn.Module):
    """TinyNet without BatchNorm, whose batch statistics would couple the views."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)
        self.num_features = 4

    def forward_features(self, x):
        return torch.relu(self.conv(x)).mean(dim=(2, 3))

    def forward_head(self, features):
        return self.fc(features)


@pytest.mark.parametrize("cls", [SimMatch, SimMatchImageNet])
def test_outputs_keys_finite_and_gradients_only_through_labeled_and_strong_views(cls):
    batch = _random_batch(u_requires_grad=True)
    algorithm = cls(NoBatchNormNet(), info(3, 4), threshold=0.0, start_steps=0)
    out = algorithm(batch, step=0)
    keys = {"loss", "loss_x", "loss_u", "loss_in", "mask_rate", "pseudo_label_accuracy"}
    assert keys | {"unlabeled_distribution", "state"} <= set(out)
    assert set(out["state"]) == {"bank_embeddings"}
    logged = {k: v for k, v in out.items() if k != "state"}
    assert out["loss"].requires_grad
    assert all(not v.requires_grad for k, v in logged.items() if k != "loss")
    assert all(torch.isfinite(v).all() for v in [*logged.values(), *out["state"].values()])
    out["loss"].backward()
    assert batch["u_w"].grad is None or not batch["u_w"].grad.any()
    assert batch["u_s"].grad is not None and batch["u_s"].grad.abs().sum() > 0
    assert algorithm.head[0].weight.grad is not None
    if algorithm.teacher is not None:
        assert all(p.grad is None for p in algorithm.teacher.parameters())


def test_imagenet_variant_teacher_is_an_ema_and_the_bank_is_overwritten():
    algorithm = SimMatchImageNet(TinyNet(), info(3, 4), start_steps=0)
    assert (algorithm.threshold, algorithm.lambda_in, algorithm.mu) == (0.7, 5.0, 5)
    assert algorithm.da_queue.history.shape == (256, 3)
    batch = _random_batch()
    out = algorithm(batch, step=0)
    with torch.no_grad():
        for p in algorithm.model.parameters():
            p.add_(1.0)
    teacher_before = [p.clone() for p in algorithm.teacher.parameters()]
    algorithm.on_step_end(batch, out, step=0)
    student = list(algorithm.model.parameters()) + list(algorithm.head.parameters())
    for old, new, live in zip(teacher_before, algorithm.teacher.parameters(), student, strict=True):
        assert torch.allclose(new, 0.999 * old + 0.001 * live)
    assert torch.equal(algorithm.bank.embeddings, out["state"]["bank_embeddings"])


def test_imagenet_variant_optimizer_follows_the_imagenet_code():
    cfg = build_config(None, {"algorithm.name": "simmatch_imagenet", "train.steps": 4000})
    settings = resolve_optim(cfg, SimMatchImageNet)
    assert (settings.schedule, settings.warmup_epochs, settings.schedule_epochs) == (
        "warmup_cosine",
        5,
        400,
    )
    assert settings.decay_all_parameters and settings.weight_decay == 1e-4
    # 10 steps per epoch: warm-up 0.03·(t + 1)/50, then ½(1 + cos(π(e − 5)/395)) per epoch
    assert learning_rate(settings, 0, 4000) == pytest.approx(0.03 / 50)
    assert learning_rate(settings, 49, 4000) == pytest.approx(0.03)
    assert learning_rate(settings, 3999, 4000) == pytest.approx(
        0.015 * (1 + math.cos(math.pi * 394 / 395))
    )
    assert not resolve_optim(
        build_config(None, {"algorithm.name": "simmatch"}), SimMatch
    ).decay_all_parameters


def _config(**extra):
    overrides = {
        "algorithm.name": "simmatch",
        "algorithm.start_steps": 2,
        "algorithm.mu": 2,
        "train.steps": 4,
        "train.eval_every": 4,
        "train.batch_size": 8,
        "train.progress": False,
        "augment.strong": "randaugment",
    }
    return build_config(None, {**overrides, **extra})


def test_resume_restores_memory_bank_and_da_queue_exactly(tmp_path):
    first = build_trainer(_config(), tmp_path / "a")
    first.fit()
    resumed = build_trainer(_config(), tmp_path / "b")
    resumed.load_state_dict(load_checkpoint(tmp_path / "a" / "checkpoint.pt", resumed.device))
    a, b = first.algorithm, resumed.algorithm
    for name in ("bank.embeddings", "bank.labels", "da_queue.history"):
        assert torch.equal(a.get_buffer(name), b.get_buffer(name)), name
    assert a.da_queue.history[-1].sum() > 0  # the queue was written during training
    assert torch.equal(first.train_step()["loss"], resumed.train_step()["loss"])


@pytest.mark.slow
def test_short_digits_run_beats_chance():
    overrides = {"train.steps": 150, "train.eval_every": 150, "train.batch_size": 16}
    summary = build_trainer(_config(**overrides, **{"algorithm.start_steps": 30}), None).fit()
    assert summary["test_accuracy_raw"] > 0.5  # chance: 0.1
