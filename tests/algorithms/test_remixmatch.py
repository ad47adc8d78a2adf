import copy

import pytest
import torch
import torch.nn.functional as F

from semisup.algorithms.base import TaskInfo
from semisup.algorithms.mixmatch import MixMatch
from semisup.algorithms.remixmatch import ReMixMatch, rotate_quarters
from semisup.config import build_config
from semisup.errors import UserError
from semisup.experiment import build_trainer
from semisup.math import mixing, pseudo

from .helpers import TinyNet, info


def _batch(n=8, k=2, seed=0, size=8):
    g = torch.Generator().manual_seed(seed)

    def images():
        return torch.randn(n, 1, size, size, generator=g)

    batch = {"x": images(), "y": torch.arange(n) % 3, "u_w": images()}
    batch.update({f"u_s{i}": images() for i in range(k)})
    batch["u_y"] = torch.arange(n) % 3
    return batch


def test_r4_rotations_use_fixed_quarters():
    image = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    rotated, labels = rotate_quarters(image.expand(8, 1, 2, 2))
    assert labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    expected = {0: [[1, 2], [3, 4]], 1: [[4, 3], [2, 1]], 2: [[2, 4], [1, 3]], 3: [[3, 1], [4, 2]]}
    for i, label in enumerate(labels.tolist()):
        assert rotated[i, 0].tolist() == expected[label]
    assert rotate_quarters(torch.zeros(64, 3, 4, 4))[1].bincount().tolist() == [16] * 4


def test_rotation_labels_match_the_images_for_batches_not_divisible_by_four():
    images = torch.randn(6, 2, 5, 5)
    rotated, labels = rotate_quarters(images)
    assert labels.tolist() == [0, 0, 1, 2, 2, 3]  # ⌊4i/6⌋
    turns = [0, 2, 1, -1]
    for i, label in enumerate(labels.tolist()):
        assert torch.equal(rotated[i], torch.rot90(images[i], turns[label], (1, 2)))


def test_r5_total_loss_ramps_all_but_the_rotation_term():
    algorithm = ReMixMatch(TinyNet(), info())
    parts = [torch.tensor(v) for v in (1.0, 2.0, 3.0, 4.0)]
    assert algorithm.total_loss(*parts, step=16384).item() == pytest.approx(8.5)
    assert algorithm.total_loss(*parts, step=20000).item() == pytest.approx(8.5)
    assert algorithm.total_loss(*parts, step=8192).item() == pytest.approx(5.75)


def test_views_defaults_and_ablation_switches():
    default = ReMixMatch(TinyNet(), info())
    assert default.views == {
        "x": "strong",
        "u_w": "weak",
        **{f"u_s{i}": "strong" for i in range(8)},
    }
    assert default.mu == 1
    assert ReMixMatch.optim_defaults == MixMatch.optim_defaults
    assert ReMixMatch.augment_defaults == {
        "cta_sampling": "remixmatch",
        "cta_rescale": "remixmatch",
    }
    no_strong = ReMixMatch(TinyNet(), info(), k=2, strong_augmentation=False)
    assert no_strong.views == {"x": "weak", "u_w": "weak", "u_s0": "weak", "u_s1": "weak"}
    assert ReMixMatch(TinyNet(), info(), k=1, guess_view="strong").views["u_w"] == "strong"
    assert ReMixMatch(TinyNet(), info(), k=4, guess_view="none").views["u_w"] == "none"


def test_outputs_are_finite_detached_scalars():
    torch.manual_seed(0)
    out = ReMixMatch(TinyNet(), info(), k=2)(_batch(), step=100)
    assert set(out) == {
        "loss",
        "loss_x",
        "loss_u",
        "loss_u1",
        "loss_rot",
        "unlabeled_distribution",
        "pseudo_label_accuracy",
    }
    assert out["loss"].requires_grad and torch.isfinite(out["loss"])
    assert all(
        not v.requires_grad and torch.isfinite(v).all() for k, v in out.items() if k != "loss"
    )
    assert out["loss_rot"] > 0 and out["loss_u1"] > 0


def _record_bn_calls(model):
    calls = []

    def before(module, args):
        module.saved = module.running_mean.clone()

    def after(module, args, output):
        calls.append((not torch.equal(module.saved, module.running_mean), output.requires_grad))

    model.bn.register_forward_pre_hook(before)
    model.bn.register_forward_hook(after)
    return calls


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        # rotation, weak guess (no grad), u_s0 pre-mixup, then K + 2 = 4 interleaved calls
        ({"k": 2}, [(False, True), (False, False), (False, True)] + [(False, True)] * 3),
        ({"k": 2, "lambda_rot": 0.0}, [(False, False), (False, True)] + [(False, True)] * 3),
        ({"k": 1, "lambda_u1": 0.0}, [(False, True), (False, False)] + [(False, True)] * 2),
    ],
)
def test_bn_running_stats_change_only_in_the_last_mixup_call(kwargs, expected):
    torch.manual_seed(0)
    model = TinyNet().train()
    calls = _record_bn_calls(model)
    ReMixMatch(model, info(), **kwargs)(_batch(k=kwargs["k"]), step=0)
    assert calls == [*expected, (True, True)]


def test_no_gradient_flows_through_the_label_guess():
    torch.manual_seed(0)
    model = TinyNet().train()
    outputs = []
    model.register_forward_hook(lambda module, args, output: outputs.append(output))
    algorithm = ReMixMatch(model, info(), k=2, rampup_steps=100)
    out = algorithm(_batch(), step=50)
    logits_u_w, logits_u_s0 = outputs[0], outputs[1]  # model() calls: guess, pre-mixup, mixup...
    assert not logits_u_w.requires_grad
    q = pseudo.sharpen(logits_u_w.softmax(dim=1), 0.5)  # fresh DA state: alignment is identity
    (grad,) = torch.autograd.grad(out["loss"], logits_u_s0)
    # Only the pre-mixup cross-entropy reaches these logits, with q a constant: r·λ·(p − q)/B.
    expected = 0.5 * 0.5 * (logits_u_s0.softmax(dim=1) - q) / 8
    assert torch.allclose(grad, expected, atol=1e-6)


def test_alignment_state_updates_after_the_step_with_unaligned_predictions():
    torch.manual_seed(0)
    algorithm = ReMixMatch(TinyNet(), info(), k=1)
    batch = _batch(k=1)
    out = algorithm(batch, step=0)
    assert torch.allclose(algorithm.alignment.p_model(), torch.full((3,), 1 / 3))  # not yet
    algorithm.on_step_end(batch, out, step=0)
    history = algorithm.alignment.p_model.history
    assert torch.equal(history[-1], out["unlabeled_distribution"])
    labels = F.one_hot(batch["y"], 3).float().mean(dim=0)
    assert torch.allclose(algorithm.alignment.p_data(), 0.999 / 3 + 0.001 * labels)
    state = algorithm.state_dict()
    assert {"alignment.p_model.history", "alignment.p_data.distribution"} <= set(state)
    assert {"rotation_head.weight", "rotation_head.bias"} <= set(state)


@pytest.mark.parametrize("redux", ["swap", "mean"])
def test_swap_and_mean_guess_from_every_view_and_feed_p_model_their_mean(redux):
    torch.manual_seed(0)
    model = TinyNet().train()
    calls = _record_bn_calls(model)
    algorithm = ReMixMatch(model, info(), k=2, redux=redux, lambda_rot=0.0)
    batch = _batch(k=2)
    out = algorithm(batch, step=0)
    # u_w (no grad), u_s0 (the pre-mixup call), u_s1 (no grad), then the K + 2 = 4 mixup calls
    assert calls == [(False, False), (False, True), (False, False)] + [(False, True)] * 3 + [
        (True, True)
    ]
    with torch.no_grad():
        reference = copy.deepcopy(model)
        logits_y = [reference(batch[view]) for view in ("u_w", "u_s0", "u_s1")]
    uniform = torch.full((3,), 1 / 3)
    targets, p_model_y = _guess_label(logits_y, uniform, uniform, redux)
    # code: p_model.update(guess.p_model), the mean over all (K + 1)·B rows
    assert torch.allclose(out["unlabeled_distribution"], p_model_y.mean(0), atol=1e-6)
    algorithm.on_step_end(batch, out, step=0)
    assert torch.equal(algorithm.alignment.p_model.history[-1], out["unlabeled_distribution"])
    accuracy = (targets[:8].argmax(1) == batch["u_y"]).float().mean()
    assert out["pseudo_label_accuracy"].item() == pytest.approx(accuracy.item())


def test_labeled_counts_target_uses_the_labeled_histogram():
    task = TaskInfo(num_classes=3, num_labeled=6, labeled_class_counts=(4, 1, 1), total_steps=9)
    algorithm = ReMixMatch(TinyNet(), task, alignment_target="labeled_counts")
    assert torch.allclose(algorithm.alignment.p_data(), torch.tensor([4 / 6, 1 / 6, 1 / 6]))


def test_user_given_p_data_is_a_fixed_alignment_target():
    # the code's --p_unlabeled=4,2,2 (divided by its max, then renormalised by PData)
    algorithm = ReMixMatch(TinyNet(), info(), p_data=[4, 2, 2], alignment_target="labeled_counts")
    assert torch.allclose(algorithm.alignment.p_data(), torch.tensor([0.5, 0.25, 0.25]))
    history = torch.tensor([[0.5, 0.3, 0.2]]).repeat(128, 1)
    algorithm.alignment.p_model.history.copy_(history)
    probs = torch.tensor([[0.6, 0.3, 0.1]])
    # p · (1e-6 + p_data) / (1e-6 + p_model) = (0.6, 0.25, 0.125) / 0.975
    expected = torch.tensor([[0.6 / 0.975, 0.25 / 0.975, 0.125 / 0.975]])
    assert torch.allclose(algorithm.alignment(probs), expected, atol=1e-6)
    algorithm.on_step_end(_batch(), {"unlabeled_distribution": probs[0]}, step=0)
    assert torch.allclose(algorithm.alignment.p_data(), torch.tensor([0.5, 0.25, 0.25]))
    for bad in ([0.5, 0.5], [1.0, -1.0, 1.0], [0, 0, 0]):
        with pytest.raises(UserError, match="algorithm.p_data must be 3 non-negative"):
            ReMixMatch(TinyNet(), info(), p_data=bad)


def test_rotation_needs_square_images():
    algorithm = ReMixMatch(TinyNet(), info(), k=1)
    batch = {**_batch(k=1), "u_s0": torch.randn(8, 1, 8, 6)}
    with pytest.raises(UserError, match="needs square images, got \\(8, 6\\).*lambda_rot=0"):
        algorithm(batch, step=0)


# ======== parity with a reference written from docs/algorithms.md#remixmatch ========
# (not from the implementation)
def _guess_label(logits_y, p_data, p_model, redux):
    """remixmatch_no_cta.py `guess_label` (T = 0.5, use_dm), transcribed: (K + 1)·B targets."""
    if redux == "swap":
        p_model_y = torch.cat([x.softmax(1) for x in logits_y[1:] + logits_y[:1]])
    elif redux == "mean":
        p_model_y = (sum(x.softmax(1) for x in logits_y) / len(logits_y)).repeat(len(logits_y), 1)
    else:  # '1st'
        p_model_y = logits_y[0].softmax(1).repeat(len(logits_y), 1)
    p_weighted = p_model_y * (1e-6 + p_data) / (1e-6 + p_model)
    p_weighted = p_weighted / p_weighted.sum(1, keepdim=True)
    p_target = p_weighted**2 / (p_weighted**2).sum(1, keepdim=True)
    return p_target, p_model_y


def _reference_step(model, head, batch, lam, perm, p_model, p_data, step, xe, redux="1st"):
    """One ReMixMatch loss, step by step as docs/algorithms.md#remixmatch describes (K=2, B=8)."""
    x, y, u_w, u_s = batch["x"], batch["y"], batch["u_w"], [batch["u_s0"], batch["u_s1"]]
    B = len(x)
    # 1. Rotation of u_s0 by fixed quarters, its own call, through the embedding and a 4-way head.
    turns = [0, 2, 1, -1]  # labels 0..3: none, 180°, 90° ccw (np.rot90 k=1), 90° cw
    rot_labels = torch.tensor([i // (B // 4) for i in range(B)])
    rotated = torch.stack([torch.rot90(u_s[0][i], turns[rot_labels[i]], (1, 2)) for i in range(B)])
    loss_rot = F.cross_entropy(head(model.forward_features(rotated)), rot_labels)
    # 2. Guess with DA and sharpening, no gradient; redux 'swap'/'mean' predict on every view.
    logits_u_s0 = model(u_s[0])
    with torch.no_grad():
        logits_y = [model(u_w), logits_u_s0.detach(), model(u_s[1])]
        q, _ = _guess_label(logits_y, p_data, p_model, redux)
    # 3. Pre-mixup loss on u_s0 with the first B targets (`ly[:batch]`).
    loss_u1 = -(q[:B] * logits_u_s0.log_softmax(1)).sum(1).mean()
    # 4. MixUp over [x, u_w, u_s0, u_s1] with per-example λ' = max(λ, 1 − λ).
    inputs = [x, u_w, *u_s]
    targets = [F.one_hot(y, 3).float(), *q.split(B)]
    pool_x, pool_t = torch.cat(inputs), torch.cat(targets)
    w = torch.maximum(lam, 1 - lam)
    mixed_x = w.view(-1, 1, 1, 1) * pool_x + (1 - w.view(-1, 1, 1, 1)) * pool_x[perm]
    mixed_t = w.view(-1, 1) * pool_t + (1 - w.view(-1, 1)) * pool_t[perm]
    # 5. Interleave: chunk i of batch 0 trades places with chunk i of batch i; 4 calls; undo.
    bounds = [(0, 2), (2, 4), (4, 6), (6, 8)]  # interleave_offsets(8, 3) = [0, 2, 4, 6, 8]
    chunks = [[mixed_x[g * B + a : g * B + b] for a, b in bounds] for g in range(4)]
    for i in range(1, 4):
        chunks[0][i], chunks[i][i] = chunks[i][i], chunks[0][i]
    outputs = [model(torch.cat(batch_chunks)) for batch_chunks in chunks]
    logit_chunks = [[output[a:b] for a, b in bounds] for output in outputs]
    for i in range(1, 4):
        logit_chunks[0][i], logit_chunks[i][i] = logit_chunks[i][i], logit_chunks[0][i]
    logits = torch.cat([torch.cat(chunks) for chunks in logit_chunks])
    # 6. Losses and the total.
    loss_x = -(mixed_t[:B] * logits[:B].log_softmax(1)).sum(1).mean()
    if xe:
        loss_u = -(mixed_t[B:] * logits[B:].log_softmax(1)).sum(1).mean()
    else:
        loss_u = ((mixed_t[B:] - logits[B:].softmax(1)) ** 2).mean()
    ramp = min(step / 16384, 1.0)
    return loss_x + 0.5 * ramp * loss_u1 + 1.5 * ramp * loss_u + 0.5 * loss_rot


@pytest.mark.parametrize(
    ("unlabeled_loss", "alignment", "redux"),
    [("xe", True, "1st"), ("l2", False, "1st"), ("xe", True, "swap"), ("xe", True, "mean")],
)
def test_two_view_step_matches_the_reference(monkeypatch, unlabeled_loss, alignment, redux):
    torch.manual_seed(0)
    algorithm = ReMixMatch(
        TinyNet(),
        info(),
        k=2,
        unlabeled_loss=unlabeled_loss,
        distribution_alignment=alignment,
        redux=redux,
    ).train()
    g = torch.Generator().manual_seed(1)
    history = torch.rand(128, 3, generator=g)
    algorithm.alignment.p_model.history.copy_(history / history.sum(1, keepdim=True))
    algorithm.alignment.p_data.distribution.copy_(torch.tensor([0.5, 0.3, 0.2]))
    lam, perm = torch.rand(32, generator=g), torch.randperm(32, generator=g)
    monkeypatch.setattr(mixing, "mixup_draws", lambda n, beta, device, generator: (lam, perm))
    batch = _batch()
    reference_model = copy.deepcopy(algorithm.model)
    reference_head = copy.deepcopy(algorithm.rotation_head)

    out = algorithm(batch, step=12288)
    grads = torch.autograd.grad(
        out["loss"], [*algorithm.model.parameters(), *algorithm.rotation_head.parameters()]
    )
    if alignment:
        p_model = algorithm.alignment.p_model.history.mean(0)
        p_model, p_data = p_model / p_model.sum(), torch.tensor([0.5, 0.3, 0.2])
    else:
        p_model = p_data = torch.full((3,), 1 / 3)
    expected = _reference_step(
        reference_model,
        reference_head,
        batch,
        lam,
        perm,
        p_model,
        p_data,
        12288,
        unlabeled_loss == "xe",
        redux,
    )
    expected_grads = torch.autograd.grad(
        expected, [*reference_model.parameters(), *reference_head.parameters()]
    )
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    for got, want in zip(grads, expected_grads, strict=True):
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_short_run_on_digits_beats_chance():
    overrides = {
        "algorithm.name": "remixmatch",
        "algorithm.k": 2,
        "algorithm.rampup_steps": 50,
        "data.num_labels": 40,
        "train.steps": 200,
        "train.eval_every": 100,
        "train.progress": False,
    }
    summary = build_trainer(build_config(None, overrides), None).fit()
    assert summary["test_accuracy"] > 0.5  # chance is 0.1
