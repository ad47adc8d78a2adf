"""Every YAML file in configs/ loads, names registered components and resolves (no data loaded)."""

from pathlib import Path

import pytest
import yaml

from semisup.algorithms import ALGORITHMS, TaskInfo
from semisup.config import build_config, resolve_kwargs
from semisup.data import DATASETS
from semisup.data.protocols import LongTail, build_protocol
from semisup.engine.optim import build_optimizer, learning_rate
from semisup.experiment import resolve_augment, resolve_optim
from semisup.models import MODELS, build_model, resolve_model_section

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
FILES = sorted(CONFIGS.glob("*.yaml"))


def _resolved(path):
    """The config with algorithm, model, optimizer and augmentation settings resolved."""
    cfg = build_config(path)
    algorithm_cls = ALGORITHMS.get(cfg.algorithm["name"])
    cfg.algorithm = resolve_kwargs(algorithm_cls, cfg.algorithm, "algorithm", ("model", "info"))
    cfg.model = resolve_model_section(cfg.model)
    optim = resolve_optim(cfg, algorithm_cls)
    resolve_augment(cfg, algorithm_cls, hflip=True)
    return cfg, algorithm_cls, optim


def test_the_paper_configs_are_there():
    names = {path.stem for path in FILES}
    for labels in (40, 250, 1000, 4000):
        assert f"remixmatch_cifar10_{labels}" in names and f"remixmatch_svhn_{labels}" in names
    for labels in (400, 2500, 10000):
        assert f"remixmatch_cifar100_{labels}" in names
    for labels in (250, 500, 1000, 2000, 4000):
        assert f"mixmatch_cifar10_{labels}" in names and f"mixmatch_svhn_{labels}" in names
    assert {"remixmatch_stl10_1000", "mixmatch_stl10_1000", "mixmatch_cifar100_10000"} <= names


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_config_file_loads_and_resolves(path):
    raw = yaml.safe_load(path.read_text())
    assert "name" in raw.get("algorithm", {}), "name the algorithm: the default is FixMatch"
    assert "name" in raw.get("data", {}), "name the data set: the default is digits"
    assert raw["model"]["name"] in MODELS, "name a registered model (or timm:<architecture>)"
    cfg, algorithm_cls, optim = _resolved(path)
    assert cfg.data.name in DATASETS.names()
    assert cfg.data.num_labels is None or cfg.data.num_labels > 0
    learning_rate(optim, 0, cfg.train.steps)
    # The algorithm builds on a small stand-in network and a plausible CIFAR-sized task.
    num_classes = 100 if "100" in cfg.data.name else 10
    stand_in = build_model("cnn", num_classes=num_classes, in_channels=3)
    build_optimizer(stand_in, optim)
    counts = (max(1, (cfg.data.num_labels or 4 * num_classes) // num_classes),) * num_classes
    info = TaskInfo(
        num_classes=num_classes,
        num_labeled=sum(counts),
        labeled_class_counts=counts,
        total_steps=cfg.train.steps,
        num_unlabeled=50_000,
    )
    algorithm_cls(stand_in, info, **{k: v for k, v in cfg.algorithm.items() if k != "name"})


REMIXMATCH_PRESETS = {
    # name: (k, lambda_rot, rampup_steps, model)
    "remixmatch_cifar10_40": (1, 2.0, 131072, "wrn28_2"),
    "remixmatch_cifar10_250": (8, 0.5, 16384, "wrn28_2"),
    "remixmatch_svhn_40": (1, 3.0, 16384, "wrn28_2"),
    "remixmatch_svhn_4000": (8, 0.5, 16384, "wrn28_2"),
    "remixmatch_stl10_1000": (4, 0.5, 16384, "wrn37_2"),
}


@pytest.mark.parametrize("name", REMIXMATCH_PRESETS)
def test_remixmatch_configs_hold_the_run_scripts_settings(name):
    cfg, _, optim = _resolved(CONFIGS / f"{name}.yaml")
    k, lambda_rot, rampup_steps, model = REMIXMATCH_PRESETS[name]
    a = cfg.algorithm
    assert (a["k"], a["lambda_rot"], a["rampup_steps"], cfg.model["name"]) == (
        k,
        lambda_rot,
        rampup_steps,
        model,
    )
    assert (a["lambda_u"], a["lambda_u1"], a["beta"], a["temperature"]) == (1.5, 0.5, 0.75, 0.5)
    assert a["guess_view"] == ("none" if "stl10" in name else "weak")
    assert (optim.name, optim.lr, optim.weight_decay, optim.schedule) == (
        "adam",
        0.002,
        0.02,
        "constant",
    )
    assert optim.decoupled_weight_decay
    assert (cfg.augment.strong, cfg.augment.cta_sampling, cfg.augment.cta_rescale) == (
        "ctaugment",
        "remixmatch",
        "remixmatch",
    )
    assert cfg.data.unlabeled_includes_labeled  # the "SSL2" layout
    assert (cfg.train.steps, cfg.train.batch_size) == (2**20, 64)


@pytest.mark.parametrize(
    ("name", "lambda_u"),
    [("mixmatch_cifar10_250", 75.0), ("mixmatch_svhn_1000", 250.0), ("mixmatch_stl10_1000", 50.0)],
)
def test_mixmatch_configs_hold_the_run_scripts_settings(name, lambda_u):
    cfg, _, optim = _resolved(CONFIGS / f"{name}.yaml")
    a = cfg.algorithm
    assert (a["k"], a["lambda_u"], a["beta"], a["rampup_steps"]) == (2, lambda_u, 0.75, 16384)
    assert not cfg.data.unlabeled_includes_labeled  # the "SSL" layout
    assert (optim.name, optim.weight_decay, optim.decoupled_weight_decay) == ("adam", 0.02, True)


def test_darp_config_holds_darps_split():
    data = build_config(CONFIGS / "darp_cifar10lt_100.yaml").data
    protocol = build_protocol(
        data.imbalance_ratio,
        data.labeled_fraction,
        data.unlabeled_imbalance,
        data.mismatch,
        data.mismatch_preset,
        data.labeled_head,
        data.unlabeled_head,
        data.split_order,
    )
    # train.py: N_1 = 1500 labeled, ratio 2 → M_1 = 3000 unlabeled, γ = 100 both, first images
    assert protocol == LongTail(100.0, None, "same", 1500, 3000, "first")
    assert data.unlabeled_includes_labeled  # train_split(..., fix=True)
