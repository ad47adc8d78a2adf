"""CTAugment against docs/algorithms.md#numeric-checks (C1–C6) and the original code's behaviour."""

from __future__ import annotations

import io

import pytest
import torch
from torch import Tensor

from semisup.augment import ops
from semisup.augment.ctaugment import (
    CTAugment,
    bin_index,
    bin_probabilities,
    proximity,
    rate_to_p,
)
from semisup.augment.ops import OPS, Op
from semisup.augment.policy import Policy, apply_policy

ATOL = 1e-6


def _images(n: int, seed: int = 0, size: int = 32) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _add_one(images: Tensor, level: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    return images + 1


def _set_rates(cta: CTAugment, name: str, rates: list[float]) -> None:
    state = cta.state_dict()
    state["rates"][name] = [torch.tensor(rates, dtype=torch.float64)]
    cta.load_state_dict(state)


def _single_op_policy(cta: CTAugment, name: str, levels: list[float]) -> Policy:
    n = len(levels)
    op_ids = torch.full((n, 1), cta.op_names.index(name))
    slots = torch.zeros((n, 1, 2), dtype=torch.float64)
    slots[:, 0, 0] = torch.tensor(levels, dtype=torch.float64)
    return Policy(op_ids, slots)


# ==== docs/algorithms.md#numeric-checks C1–C6 ====


def test_c1_proximity_is_the_true_class_probability():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.7, 0.2, 0.1]], dtype=torch.float64)
    w = proximity(probs, torch.tensor([0, 1]))
    torch.testing.assert_close(w, torch.tensor([0.7, 0.2], dtype=torch.float64), atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    ("level", "num_bins", "expected"),
    [(0.5, 17, 8), (0.999, 17, 16), (1.0, 17, 16), (0.0, 17, 0), (0.5, 8, 3), (0.9999, 6, 5)],
)
def test_c2_bin_index(level, num_bins, expected):
    assert bin_index(torch.tensor([level], dtype=torch.float64), num_bins).item() == expected


def test_c3_rate_sequence_across_two_updates():
    cta = CTAugment()
    cta.update(_single_op_policy(cta, "rotate", [0.5]), torch.tensor([0.7]))
    assert cta.state_dict()["rates"]["rotate"][0][8].item() == pytest.approx(0.997, abs=ATOL)
    cta.update(_single_op_policy(cta, "rotate", [0.5]), torch.tensor([0.2]))
    rate = cta.state_dict()["rates"]["rotate"][0]
    assert rate[8].item() == pytest.approx(0.98903, abs=ATOL)
    assert torch.equal(rate[torch.arange(17) != 8], torch.ones(16, dtype=torch.float64))


def test_c3_updates_within_one_batch_are_sequential_in_example_order():
    cta = CTAugment()
    cta.update(_single_op_policy(cta, "rotate", [0.5, 0.5]), torch.tensor([0.7, 0.2]))
    assert cta.state_dict()["rates"]["rotate"][0][8].item() == pytest.approx(0.98903, abs=ATOL)


def test_c4_rate_to_p_normalises_then_thresholds():
    rate = torch.tensor([1.0, 0.9, 0.79, 0.5], dtype=torch.float64)
    normalised = rate_to_p(rate, decay=0.99, threshold=0.0)
    expected = torch.tensor([1, 0.9009901, 0.79207921, 0.5049505], dtype=torch.float64)
    torch.testing.assert_close(normalised, expected, atol=ATOL, rtol=0)
    p = rate_to_p(rate, decay=0.99, threshold=0.8)
    expected = torch.tensor([1, 0.9009901, 0, 0], dtype=torch.float64)
    torch.testing.assert_close(p, expected, atol=ATOL, rtol=0)
    expected = torch.tensor([0.52604167, 0.47395833, 0, 0], dtype=torch.float64)
    torch.testing.assert_close(bin_probabilities(p, "fixmatch"), expected, atol=ATOL, rtol=0)


def test_c6_remixmatch_segment_probabilities():
    p = torch.tensor([1, 0.9009901, 0, 0], dtype=torch.float64)
    expected = torch.tensor([0.67844523, 0.32155477, 0], dtype=torch.float64)
    torch.testing.assert_close(bin_probabilities(p, "remixmatch"), expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize(("sampling", "segments"), [("fixmatch", 0), ("remixmatch", 1)])
def test_fresh_rates_give_uniform_probabilities(sampling, segments):
    probabilities = CTAugment(sampling=sampling).probabilities()
    assert probabilities["identity"] == ()
    assert [len(p) for p in probabilities["rescale"]] == [17 - segments, 6 - segments]
    for name, op in OPS.items():
        for p, n in zip(probabilities[name], op.bins, strict=True):
            torch.testing.assert_close(p, torch.full((n - segments,), 1 / (n - segments)).double())


@pytest.mark.parametrize(
    ("sampling", "expected"),
    [("fixmatch", [0.52604167, 0.47395833, 0, 0]), ("remixmatch", [0.67844523, 0.32155477, 0])],
)
def test_sampled_bins_follow_the_probabilities(sampling, expected):
    # One op with 4 bins and the rates of C4; 2 × 20,000 draws, so the standard error of each
    # frequency is ≤ 0.0025 and 0.015 is a 6-sigma tolerance. Zero-probability bins: never.
    table = {"four": Op(_add_one, (4,))}
    cta = CTAugment(sampling=sampling, op_table=table)
    _set_rates(cta, "four", [1.0, 0.9, 0.79, 0.5])
    torch.testing.assert_close(
        cta.probabilities()["four"][0], torch.tensor(expected).double(), atol=ATOL, rtol=0
    )
    levels = cta.sample_policy(20_000, _gen(0)).levels[..., 0].flatten()
    assert levels.min() >= 0 and levels.max() < 1
    counts = torch.bincount((levels * len(expected)).floor().long(), minlength=len(expected))
    frequencies = counts.double() / counts.sum()
    torch.testing.assert_close(frequencies, torch.tensor(expected).double(), atol=0.015, rtol=0)
    assert counts[torch.tensor(expected) == 0].sum() == 0


# ==== learning: the feedback loop disables harmful magnitudes ====


def test_harmful_magnitudes_stop_being_sampled():
    # Probes with rotate at v ≥ 0.6 are always misclassified (proximity 0), all others are
    # right (1). 2,000 steps of 64 probe images, as in training. Rotate bins 11–16 (v ≥ 0.647)
    # must drop below the threshold and never be sampled; bins 0–9 (v < 0.589) and every other
    # op's bins stay sampled. Bin 10 straddles 0.6 and is not checked.
    cta = CTAugment()
    g = _gen(0)
    rotate = cta.op_names.index("rotate")
    for _ in range(2000):
        probe = cta.probe_policy(64, g)
        wrong = ((probe.ops == rotate) & (probe.levels[..., 0] >= 0.6)).any(1)
        cta.update(probe, (~wrong).double())

    probabilities = cta.probabilities()
    rotate_p = probabilities["rotate"][0]
    assert torch.all(rotate_p[11:] == 0)
    assert torch.all(rotate_p[:10] > 0)
    for name, params in probabilities.items():
        if name != "rotate":
            assert all(torch.all(p > 0) for p in params), name

    policy = cta.sample_policy(20_000, g)
    sampled_bins = (policy.levels[..., 0][policy.ops == rotate] * 17).floor().long()
    assert sampled_bins.numel() > 1000
    assert sampled_bins.max() <= 10


# ==== state ====


def _trained(seed: int = 0, steps: int = 20, **options) -> CTAugment:
    cta = CTAugment(**options)
    g = _gen(seed)
    for _ in range(steps):
        cta.update(cta.probe_policy(64, g), torch.rand(64, generator=g))
    return cta


def test_state_dict_round_trip_restores_rates_and_sampling():
    cta = _trained()
    buffer = io.BytesIO()
    torch.save(cta.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    restored = CTAugment()
    restored.load_state_dict(state)
    for name, rates in cta.state_dict()["rates"].items():
        for a, b in zip(rates, restored.state_dict()["rates"][name], strict=True):
            assert a.dtype == torch.float64
            assert torch.equal(a, b)
    a, b = cta.sample_policy(256, _gen(5)), restored.sample_policy(256, _gen(5))
    assert torch.equal(a.ops, b.ops) and torch.equal(a.levels, b.levels)
    assert restored.stats() == cta.stats()


def test_state_dict_is_a_snapshot():
    cta = _trained()
    state = cta.state_dict()
    before = [r.clone() for r in state["rates"]["rotate"]]
    cta.update(_single_op_policy(cta, "rotate", [0.5] * 8), torch.zeros(8))
    assert all(torch.equal(a, b) for a, b in zip(before, state["rates"]["rotate"], strict=True))


def test_loading_a_different_op_set_raises():
    state = _trained().state_dict()
    other = CTAugment(op_table={name: op for name, op in OPS.items() if name != "blur"})
    with pytest.raises(ValueError, match="ops"):
        other.load_state_dict(state)
    state["rates"]["rescale"] = state["rates"]["rescale"][:1]
    with pytest.raises(ValueError, match="bins"):
        CTAugment().load_state_dict(state)


def test_loading_other_options_raises():
    state = _trained().state_dict()
    with pytest.raises(ValueError, match="options"):
        CTAugment(sampling="remixmatch").load_state_dict(state)


# ==== policies ====


@pytest.mark.parametrize("sampling", ["fixmatch", "remixmatch"])
def test_policies_are_reproducible_and_well_formed(sampling):
    cta = _trained(sampling=sampling)
    for sample in (cta.sample_policy, cta.probe_policy):
        a, b = sample(500, _gen(3)), sample(500, _gen(3))
        assert torch.equal(a.ops, b.ops) and torch.equal(a.levels, b.levels)
        assert a.ops.shape == (500, 2) and a.levels.shape == (500, 2, 2)
        assert a.ops.dtype == torch.int64 and a.levels.dtype == torch.float64
        assert torch.all((a.levels >= 0) & (a.levels < 1))
        params = torch.tensor([len(op.bins) for op in cta.op_table.values()])[a.ops]
        assert torch.all(a.levels[..., 1][params < 2] == 0)
        assert torch.all(a.levels[..., 0][params < 1] == 0)
    ops_used = cta.sample_policy(5000, _gen(1)).ops
    assert set(ops_used.unique().tolist()) == set(range(len(OPS)))


def test_cutout_after_appends_full_cutout():
    cta = CTAugment(cutout_after=True)
    policy = cta.sample_policy(64, _gen(0))
    assert policy.depth == 3
    assert torch.all(policy.ops[:, 2] == cta.op_names.index("cutout"))
    assert torch.all(policy.levels[:, 2, 0] == 1) and torch.all(policy.levels[:, 2, 1] == 0)
    assert cta.probe_policy(64, _gen(0)).depth == 2
    out = cta(_images(64), _gen(0))
    grey = (out == ops.CUTOUT_GREY).all(1).flatten(1).sum(1)
    assert torch.all(grey >= 64)  # at least the 8×8 corner of a clipped 16×16 square


def test_call_replays_the_sampled_policy():
    cta = _trained(cutout_after=True)
    images = _images(40)
    g_policy, g_call = _gen(7), _gen(7)
    policy = cta.sample_policy(40, g_policy)
    expected = cta.apply(images, policy, g_policy)
    out = cta(images, g_call)
    assert out.dtype == torch.uint8 and out.shape == images.shape and out.device == images.device
    assert torch.equal(out, expected)
    assert not torch.equal(out, images)


def test_apply_policy_equals_applying_each_image_alone():
    # Every deterministic op (all but cutout), with groups of several images per op and step.
    table = {name: op for name, op in OPS.items() if name != "cutout"}
    names = list(table)
    n = 3 * len(names)
    ops_ids = torch.stack([torch.arange(n) % len(names), (torch.arange(n) * 5 + 1) % len(names)], 1)
    levels = torch.rand((n, 2, 2), generator=_gen(1), dtype=torch.float64)
    policy = Policy(ops_ids, levels)
    images = _images(n)
    batched = apply_policy(images, policy, table)
    for i in range(n):
        image = images[i : i + 1]
        for step in range(2):
            op = table[names[ops_ids[i, step]]]
            level = levels[i : i + 1, step, : max(1, len(op.bins))]
            image = op.fn(image, level[:, 0] if len(op.bins) <= 1 else level)
        assert torch.equal(batched[i], image[0]), names[ops_ids[i, 0]]


def test_apply_policy_rejects_a_policy_for_another_batch():
    cta = CTAugment()
    with pytest.raises(ValueError, match="policy for 3 images"):
        cta.apply(_images(4), cta.probe_policy(3, _gen(0)))


def test_policy_checks_its_shapes():
    with pytest.raises(ValueError, match="levels"):
        Policy(torch.zeros((4, 2), dtype=torch.long), torch.zeros((4, 2)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_sampling_and_applying_on_the_gpu():
    cta = _trained(cutout_after=True)
    g = torch.Generator(device="cuda").manual_seed(0)
    images = _images(64).cuda()
    policy = cta.sample_policy(64, g)
    assert policy.ops.is_cuda and policy.levels.is_cuda
    out = cta(images, g)
    assert out.is_cuda and out.dtype == torch.uint8 and out.shape == images.shape
    cta.update(cta.probe_policy(64, g), torch.rand(64, device="cuda"))


# ==== update ====


def test_identity_has_no_rates_to_update():
    cta = CTAugment()
    before = cta.state_dict()
    cta.update(_single_op_policy(cta, "identity", [0.0] * 5), torch.zeros(5))
    after = cta.state_dict()
    for name, rates in before["rates"].items():
        assert all(torch.equal(a, b) for a, b in zip(rates, after["rates"][name], strict=True))


def test_two_parameter_op_updates_both_parameters():
    cta = CTAugment()
    policy = Policy(
        torch.tensor([[cta.op_names.index("rescale")]]),
        torch.tensor([[[0.5, 0.9999]]], dtype=torch.float64),
    )
    cta.update(policy, torch.tensor([0.0]))
    scale, method = cta.state_dict()["rates"]["rescale"]
    assert scale[8] == pytest.approx(0.99) and method[5] == pytest.approx(0.99)
    assert scale.sum() == pytest.approx(16.99) and method.sum() == pytest.approx(5.99)


def test_updating_gathered_ranks_equals_updating_each_in_rank_order():
    # What a distributed trainer does: all-gather (policy, proximity), update on every rank.
    g = _gen(2)
    gathered, sequential = CTAugment(), CTAugment()
    probes = [gathered.probe_policy(64, g) for _ in range(3)]
    weights = [torch.rand(64, generator=g) for _ in range(3)]
    gathered.update(
        Policy(torch.cat([p.ops for p in probes]), torch.cat([p.levels for p in probes])),
        torch.cat(weights),
    )
    for probe, w in zip(probes, weights, strict=True):
        sequential.update(probe, w)
    for name, rates in gathered.state_dict()["rates"].items():
        other = sequential.state_dict()["rates"][name]
        assert all(torch.equal(a, b) for a, b in zip(rates, other, strict=True))


def test_update_rejects_mismatched_inputs():
    cta = CTAugment()
    probe = cta.probe_policy(4, _gen(0))
    with pytest.raises(ValueError, match="one proximity per image"):
        cta.update(probe, torch.ones(3))
    with pytest.raises(ValueError, match="range"):
        cta.update(Policy(probe.ops, probe.levels + 1), torch.ones(4))


# ==== options ====


def test_code_translate_and_remixmatch_rescale_are_no_ops():
    images = _images(8)
    g = _gen(0)
    paper, code = CTAugment(), CTAugment(translate="code", rescale="remixmatch")
    for name in ("translate_x", "translate_y", "rescale"):
        policy = _single_op_policy(paper, name, [0.0] * 8)
        if name == "rescale":
            policy = Policy(policy.ops, torch.full((8, 1, 2), 0.9, dtype=torch.float64))
        assert torch.equal(code.apply(images, policy, g), images), name
        assert not torch.equal(paper.apply(images, policy, g), images), name
    assert code.op_names == paper.op_names


@pytest.mark.parametrize(
    "options", [{"sampling": "uniform"}, {"translate": "pixels"}, {"rescale": "none"}]
)
def test_unknown_options_raise(options):
    with pytest.raises(ValueError, match="valid"):
        CTAugment(**options)


def test_stats_lists_every_op_like_the_original():
    lines = _trained().stats().splitlines()
    assert [line.split()[0] for line in lines] == sorted(OPS)
    rotate = next(line for line in lines if line.startswith("rotate"))
    assert len(rotate.split()) == 1 + 17
    rescale = next(line for line in lines if line.startswith("rescale"))
    assert len(rescale.split(" / ")) == 2
    assert next(line for line in lines if line.startswith("identity")).strip() == "identity"
