"""Quick checks of the benchmark scripts under benchmarks/ (they are not part of the package)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def augment_throughput() -> ModuleType:
    return load_script("augment_throughput")


@pytest.mark.parametrize("strong", ["ctaugment", "randaugment"])
def test_pillow_replay_is_the_batched_strong_view(augment_throughput: ModuleType, strong: str):
    """The Pillow side of the benchmark does exactly the batched pipeline's work."""
    images, _, _ = augment_throughput.load_images(48, None)  # random images
    maker = augment_throughput.view_maker(strong)
    for seed in range(3):
        assert augment_throughput.check_replay(maker, images, seed, torch.device("cpu")) == 0


def test_replay_check_detects_a_different_view(augment_throughput: ModuleType):
    images, _, _ = augment_throughput.load_images(16, None)
    maker = augment_throughput.view_maker("ctaugment")
    plan = augment_throughput.sample_plan(maker, 16, 32, 32, 0, torch.device("cpu"))
    batched = augment_throughput.batched_strong(maker, images, 1)  # another seed
    assert (batched != augment_throughput.pil_strong(images, plan, torch.device("cpu"))).any()


def test_throughput_smoke(augment_throughput: ModuleType, tmp_path: Path, monkeypatch):
    out = tmp_path / "results.json"
    argv = ["augment_throughput.py", "--part", "throughput", "--sizes", "8", "--reps", "1"]
    argv += ["--random-images", "--json", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    threads = torch.get_num_threads()
    try:
        augment_throughput.main()
    finally:
        torch.set_num_threads(threads)
    rows = json.loads(out.read_text())["throughput"]
    assert {row["strong"] for row in rows} == {"ctaugment", "randaugment"}
    assert all(row["mismatched_pixels"] == 0 and row["ratio"] > 0 for row in rows)


SAMPLE_TESTS = """
import torch

from semisup import experiment
from semisup.config import TrainConfig


def test_passes():
    train = TrainConfig()
    experiment.resolve_runtime(train, torch.device("cpu"))
    assert train.seed >= 3  # the variant's seed
    assert train.seed == 3


def test_fails():
    assert 0.25 > 0.5
"""


def test_threshold_margins_records_every_threshold_comparison(tmp_path: Path):
    margins = load_script("threshold_margins")
    sample = tmp_path / "test_sample.py"
    sample.write_text(SAMPLE_TESTS)
    records = margins.run_variant([str(sample)], seed=3, threads=1, precision="fp32")
    assert [(r["statement"], r["op"], r["value"], r["threshold"]) for r in records] == [
        ("train.seed >= 3", ">=", 3.0, 3.0),
        ("0.25 > 0.5", ">", 0.25, 0.5),
    ]
    assert [margins.margin(r) for r in records] == [0.0, -0.25]
    summary = margins.summarise(records)
    assert "below the threshold in 0/1 variants" in summary  # 3 >= 3 holds
    assert "below the threshold in 1/1 variants" in summary
