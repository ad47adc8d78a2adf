import json

import pytest
import torch
import yaml

from semisup.algorithms.base import TaskInfo
from semisup.algorithms.crest import (
    CReST,
    class_profile,
    generation_temperature,
    pick_pseudo_labels,
    sampling_rates,
)
from semisup.algorithms.fixmatch import FixMatch
from semisup.commands.cli import main
from semisup.commands.crest_generations import build_generation, candidates, load_picks, with_picks
from semisup.config import config_from_dict
from semisup.engine.checkpoint import load_checkpoint
from semisup.engine.metrics import predict_logits
from semisup.math import prior

from .helpers import LogitsAsImages, as_images

# docs/algorithms.md#numeric-checks CR1, γ = 100, 10 %
CIFAR10_LT_LABELS = (500, 300, 180, 108, 65, 39, 24, 14, 9, 5)
CR2 = [
    0.40293126,
    0.24155094,
    0.14480599,
    0.08680891,
    0.05204057,
    0.03119750,
    0.01870241,
    0.01121180,
    0.00672130,
    0.00402931,
]
CR3 = [
    0.21544347,
    0.25550971,
    0.30302711,
    0.35938137,
    0.42621588,
    0.50547968,
    0.59948425,
    0.71097094,
    0.84319093,
    1.0,
]
CR4_TARGET = [
    0.24468109,
    0.18944768,
    0.14668246,
    0.11357090,
    0.08793382,
    0.06808397,
    0.05271494,
    0.04081526,
    0.03160178,
    0.02446811,
]


def test_cr2_long_tail_profile_follows_the_labeled_class_ranking():
    profile = class_profile(CIFAR10_LT_LABELS, 100.0)
    assert torch.allclose(profile, torch.tensor(CR2), atol=1e-7)
    # The ranking comes from the labeled counts, whatever the class order.
    reversed_profile = class_profile(CIFAR10_LT_LABELS[::-1], 100.0)
    assert torch.allclose(reversed_profile, torch.tensor(CR2[::-1]), atol=1e-7)
    # Without a known imbalance ratio the labeled class prior is the profile.
    assert torch.allclose(class_profile((3, 1), None), torch.tensor([0.75, 0.25]))


def test_cr3_sampling_rates_and_picked_counts():
    rates = sampling_rates(torch.tensor(CR2), alpha=3.0)
    assert torch.allclose(rates, torch.tensor(CR3, dtype=torch.float64), atol=1e-7)
    # 1000 items predicted as each class: class 0 takes 215, class 5 takes 505.
    probs = torch.eye(10).repeat_interleave(1000, dim=0)
    _, labels = pick_pseudo_labels(probs, rates)
    counts = torch.bincount(labels, minlength=10)
    assert counts[0] == 215 and counts[5] == 505 and counts[9] == 1000
    # A balanced profile keeps every prediction (the code's update_mode "all").
    assert torch.equal(sampling_rates(torch.full((4,), 0.25), 3.0), torch.ones(4).double())


def test_cr4_generation_temperatures_and_the_alignment_target():
    temperatures = [generation_temperature(g, 6, 0.5) for g in range(6)]
    assert temperatures == pytest.approx([1.0, 0.9, 0.8, 0.7, 0.6, 0.5])
    assert generation_temperature(0, 1, 0.5) == 1.0
    info = TaskInfo(10, sum(CIFAR10_LT_LABELS), CIFAR10_LT_LABELS, total_steps=100)
    learner = CReST(LogitsAsImages(), info, distribution_alignment=True, imbalance_ratio=100.0)
    target = prior.progressive_target(learner.p_data, 0.5)
    assert torch.allclose(target, torch.tensor(CR4_TARGET), atol=1e-7)


def test_picking_rule_on_hand_made_predictions():
    probs = torch.tensor(
        [
            [0.9, 0.1],  # class 0, rank 1
            [0.6, 0.4],  # class 0, rank 4
            [0.2, 0.8],  # class 1
            [0.8, 0.2],  # class 0, rank 2
            [0.7, 0.3],  # class 0, rank 3
            [0.4, 0.6],  # class 1
        ]
    )
    positions, labels = pick_pseudo_labels(probs, torch.tensor([0.5, 1.0]))
    # Class 0: int(4 · 0.5) = 2 most confident; class 1: all, most confident first.
    assert positions.tolist() == [0, 3, 2, 5]
    assert labels.tolist() == [0, 0, 1, 1]


def test_without_alignment_the_learner_is_fixmatch():
    info = TaskInfo(2, 10, (8, 2), total_steps=100)
    batch = {
        "x": as_images([[1.0, 0.0]]),
        "y": torch.tensor([1]),
        "u_w": as_images([[5.0, 0.0], [0.0, 0.0]]),
        "u_s": as_images([[0.0, 1.0], [0.0, 0.0]]),
    }
    expected = FixMatch(LogitsAsImages(), info)(batch, 0)["loss"]
    learner = CReST(LogitsAsImages(), info, imbalance_ratio=4.0)
    assert learner(batch, 0)["loss"].item() == pytest.approx(expected.item())
    assert learner.views["u_s"] == "strong_cutout"


def test_la_inference_uses_the_label_ema_of_this_generations_batches():
    info = TaskInfo(2, 10, (8, 2), total_steps=100)
    learner = CReST(LogitsAsImages(), info, imbalance_ratio=4.0)
    assert torch.allclose(learner.p_data, torch.tensor([0.8, 0.2]))  # gt_p stays the DA profile
    assert torch.allclose(learner.logit_adjustment(), torch.tensor([0.5, 0.5]).log())
    out = {"unlabeled_distribution": torch.tensor([0.5, 0.5])}
    # crest `PData.update`: p ← 0.999·p + 0.001·mean(onehot(y)), from uniform; picks are labels
    learner.on_step_end({"y": torch.tensor([1])}, out, step=0)  # [0.4995, 0.5005]
    learner.on_step_end({"y": torch.tensor([0, 0, 0, 1])}, out, step=1)
    expected = torch.tensor([0.4997505, 0.5002495])  # 0.999·[0.4995, 0.5005] + 0.001·[0.75, 0.25]
    assert torch.allclose(learner.logit_adjustment(), expected.log(), atol=1e-7)
    assert CReST(LogitsAsImages(), info, la_inference=False).logit_adjustment() is None


FAST_LT = [
    "--steps",
    "30",
    "--set",
    "train.eval_every=15",
    "train.batch_size=16",
    "train.ema_decay=0.9",
    "algorithm.mu=2",
    "data.imbalance_ratio=10",
    "data.labeled_fraction=0.2",
    "augment.strong=randaugment",
]


def _config(run_dir):
    return config_from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))


def test_two_generations_on_long_tailed_digits_then_resume(tmp_path, capsys):
    out = tmp_path / "crest"
    assert main(["crest", "--generations", "2", "--plus", *FAST_LT, "--out", str(out)]) == 0
    assert "crest+ (2 generations): final test accuracy" in capsys.readouterr().out
    for g in (0, 1):
        names = {p.name for p in (out / f"gen{g}").iterdir()}
        assert {"config.yaml", "checkpoint.pt", "metrics.jsonl", "summary.json"} <= names
    summary = json.loads((out / "summary.json").read_text())
    gen0, gen1 = summary["generation_results"]
    assert summary["method"] == "crest+" and summary["test_accuracy"] == gen1["test_accuracy"]
    assert [gen0["da_temperature"], gen1["da_temperature"]] == [1.0, 0.5]

    # Generation 0's picks: its EMA model's most confident predictions, rebalanced.
    trainer = build_generation(_config(out / "gen0"), tmp_path / "check", None)
    data = trainer.data
    trainer.ema.load_state_dict(load_checkpoint(out / "gen0" / "checkpoint.pt")["ema"])
    pool = candidates(data)
    assert not torch.isin(pool, data.labeled_idx).any()
    runtime = trainer.runtime  # evaluated as the command did: same batches, layout, precision
    probs = predict_logits(
        trainer.ema.module,
        data.images[pool],
        trainer.settings.eval_batch_size,
        trainer.device,
        runtime.channels_last,
        runtime.autocast_dtype,
    ).softmax(-1)
    rates = sampling_rates(class_profile(data.labeled_class_counts(), 10.0), 3.0)
    chosen, labels = pick_pseudo_labels(probs, rates)
    picks = load_picks(out / "gen0")
    assert torch.equal(picks["pool_index"], pool[chosen]) and torch.equal(picks["label"], labels)
    predicted = gen0["predicted_per_class"]
    assert gen0["picked_per_class"] == [
        int(n * float(r)) for n, r in zip(predicted, rates, strict=True)
    ]

    # Generation 1's labeled set: the original labels plus the picks with their pseudo-labels.
    extended = with_picks(data, picks["pool_index"], picks["label"])
    original_counts = torch.tensor(data.labeled_class_counts())
    expected_counts = original_counts + torch.tensor(gen0["picked_per_class"])
    assert gen1["labeled_class_counts"] == expected_counts.tolist()
    assert list(extended.labeled_class_counts()) == gen1["labeled_class_counts"]
    assert torch.equal(extended.labeled_idx[: len(data.labeled_idx)], data.labeled_idx)
    assert torch.equal(
        extended.images[extended.labeled_idx[len(data.labeled_idx) :]],
        data.images[picks["pool_index"]],
    )
    assert torch.equal(extended.targets[: len(data.targets)], data.targets)  # truths kept

    # Interrupted in generation 1: resuming skips generation 0 and continues at its step.
    finished = (out / "gen0" / "checkpoint.pt").stat().st_mtime_ns
    (out / "gen1" / "summary.json").unlink()
    assert main(["crest", "--resume", "--out", str(out), "--steps", "45"]) == 0
    err = capsys.readouterr().err
    assert "generation 0 is finished" in err and "at step 30" in err
    assert (out / "gen0" / "checkpoint.pt").stat().st_mtime_ns == finished
    metrics = (out / "gen1" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in metrics] == [15, 30, 45]


def test_command_line_errors(tmp_path, capsys):
    out = tmp_path / "crest"
    assert main(["crest", "--algorithm", "fixmatch", "--plus", "--out", str(out)]) == 2
    assert (
        "--plus (progressive distribution alignment) needs algorithm crest"
        in capsys.readouterr().err
    )
    assert not out.exists()
    assert main(["crest", "--set", "algorithm.da_temperature=0.3", "--out", str(out)]) == 2
    assert "set by semisup crest" in capsys.readouterr().err
    out.mkdir()
    (out / "crest.yaml").write_text("generations: 2\n")
    assert main(["crest", "--out", str(out)]) == 2
    assert "continue it with --resume" in capsys.readouterr().err


@pytest.mark.slow
def test_crest_plus_on_long_tailed_digits_beats_chance(tmp_path):
    out = tmp_path / "crest"
    flags = ["--steps", "300", "--set", "train.eval_every=100", *FAST_LT[3:]]
    assert main(["crest", "--generations", "2", "--plus", *flags, "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_balanced_accuracy"] > 0.5  # chance: 0.1
    assert summary["generation_results"][0]["picked_accuracy"] > 0.8
