"""Every out-of-range or malformed option is one `error:` line (exit 2) and nothing is written."""

from __future__ import annotations

import inspect
import typing

import pytest

from semisup.algorithms import ALGORITHMS
from semisup.config import SECTIONS, Config, build_config
from semisup.models import MODELS
from semisup.ranges import FIELD_RANGES, KWARG_RANGES, Range, check, kwarg_range

from .helpers import TINY, assert_clean_failure, run_cli

# (--set pairs or flags, the start of what the error line says after "error: ")
FIXED_SECTIONS = [
    (["--set", "train.steps=0"], "train.steps must be >= 1, got 0"),
    (["--set", "train.steps=-5"], "train.steps must be >= 1, got -5"),
    (["--set", "train.steps=1.5"], "train.steps must be int or null, got 1.5"),
    (["--set", "train.steps=nan"], "train.steps must be int or null, got 'nan'"),
    (["--steps", "0"], "train.steps must be >= 1, got 0"),
    (["--set", "train.batch_size=0"], "train.batch_size must be >= 1, got 0"),
    (["--set", "train.batch_size=-8"], "train.batch_size must be >= 1, got -8"),
    (["--set", "train.eval_every=0"], "train.eval_every must be >= 1, got 0"),
    (["--set", "train.eval_batch_size=0"], "train.eval_batch_size must be >= 1, got 0"),
    (["--set", "train.ema_decay=1"], "train.ema_decay must be in [0, 1), got 1.0"),
    (["--set", "train.ema_decay=1.5"], "train.ema_decay must be in [0, 1), got 1.5"),
    (["--set", "train.ema_decay=-0.1"], "train.ema_decay must be in [0, 1), got -0.1"),
    (["--set", "train.ema_decay=nan"], "train.ema_decay must be a finite number, got nan"),
    (["--set", "train.ema_decay=.inf"], "train.ema_decay must be a finite number, got inf"),
    (["--seed", "-1"], "train.seed must be in [0, 4294967295], got -1"),
    (["--seed", str(2**32)], "train.seed must be in [0, 4294967295], got 4294967296"),
    (["--seed", str(2**40)], "train.seed must be in [0, 4294967295], got 1099511627776"),
    (["--set", "train.grad_clip=0"], "train.grad_clip must be > 0, got 0.0"),
    (["--set", "train.grad_clip=-1"], "train.grad_clip must be > 0, got -1.0"),
    (["--set", "train.grad_clip=nan"], "train.grad_clip must be a finite number, got nan"),
    (["--set", "train.keep_checkpoints=0"], "train.keep_checkpoints must be >= 1, got 0"),
    (["--set", "train.nonfinite=explode"], "train.nonfinite must be one of: stop, skip"),
    (["--set", "train.precision=fp8"], "train.precision must be one of: auto, fp32"),
    (["--set", "train.progress=maybe"], "train.progress must be bool, got 'maybe'"),
    (["--set", "optim.lr=0"], "optim.lr must be > 0, got 0.0"),
    (["--set", "optim.lr=-0.1"], "optim.lr must be > 0, got -0.1"),
    (["--set", "optim.lr=nan"], "optim.lr must be a finite number, got nan"),
    (["--set", "optim.lr=inf"], "optim.lr must be a finite number, got inf"),
    (["--set", "optim.lr=-.inf"], "optim.lr must be a finite number, got -inf"),
    (["--set", "optim.lr=fast"], "optim.lr must be float or null, got 'fast'"),
    (["--set", "optim.momentum=1"], "optim.momentum must be in [0, 1), got 1.0"),
    (["--set", "optim.momentum=-0.5"], "optim.momentum must be in [0, 1), got -0.5"),
    (["--set", "optim.weight_decay=-1e-4"], "optim.weight_decay must be in [0, 1), got -0.0001"),
    (["--set", "optim.weight_decay=1"], "optim.weight_decay must be in [0, 1), got 1.0"),
    (["--set", "optim.cosine_factor=-0.1"], "optim.cosine_factor must be in [0, 0.5], got -0.1"),
    (["--set", "optim.cosine_factor=0.75"], "optim.cosine_factor must be in [0, 0.5], got 0.75"),
    (
        ["--set", "optim.name=rmsprop"],
        "optim.name must be one of sgd, adam, adamw or null, got 'rmsprop'",
    ),
    (
        ["--set", "optim.schedule=linear"],
        "optim.schedule must be one of cosine, constant, warmup_cosine or null",
    ),
    (["--set", "augment.cta_threshold=5"], "augment.cta_threshold must be in [0, 1], got 5.0"),
    (["--set", "augment.cta_threshold=-1"], "augment.cta_threshold must be in [0, 1], got -1.0"),
    (["--set", "augment.cta_decay=1"], "augment.cta_decay must be in [0, 1), got 1.0"),
    (["--set", "augment.cta_decay=1.5"], "augment.cta_decay must be in [0, 1), got 1.5"),
    (["--set", "augment.cta_depth=0"], "augment.cta_depth must be >= 1, got 0"),
    (["--set", "augment.cta_depth=-1"], "augment.cta_depth must be >= 1, got -1"),
    (["--set", "augment.weak_shift=5"], "augment.weak_shift must be in [0, 0.5], got 5.0"),
    (["--set", "augment.weak_shift=-0.1"], "augment.weak_shift must be in [0, 0.5], got -0.1"),
    (["--set", "augment.weak_shift=0.6"], "augment.weak_shift must be in [0, 0.5], got 0.6"),
    (["--set", "augment.strong=autoaugment"], "augment.strong must be one of: ctaugment"),
    (
        ["--set", "augment.cta_sampling=random"],
        "augment.cta_sampling must be one of fixmatch, remixmatch or null",
    ),
    (["--num-labels", "0"], "data.num_labels must be >= 1, got 0"),
    (["--num-labels", "-3"], "data.num_labels must be >= 1, got -3"),
    (["--set", "data.split_seed=-1"], "data.split_seed must be in [0, 4294967295], got -1"),
    (["--set", "data.split_seed=4294967296"], "data.split_seed must be in [0, 4294967295]"),
    (["--set", "data.imbalance_ratio=0.5"], "data.imbalance_ratio must be >= 1, got 0.5"),
    (["--set", "data.imbalance_ratio=0"], "data.imbalance_ratio must be >= 1, got 0.0"),
    (["--set", "data.labeled_fraction=0"], "data.labeled_fraction must be in (0, 1], got 0.0"),
    (["--set", "data.labeled_fraction=1.5"], "data.labeled_fraction must be in (0, 1], got 1.5"),
    (["--set", "data.mismatch=-1"], "data.mismatch must be in [0, 100], got -1"),
    (["--set", "data.mismatch=101"], "data.mismatch must be in [0, 100], got 101"),
    (["--set", "data.image_size=0"], "data.image_size must be >= 1, got 0"),
    (["--set", "data.unlabeled_imbalance=upside"], "data.unlabeled_imbalance must be one of"),
    (["--set", "train.stepz=3"], "unknown config key 'train.stepz'"),
    (["--set", "foo.bar=1"], "unknown config key 'foo.bar'"),
    (["--set", "train=3"], "unknown config key 'train'"),
    (["--set", "train.steps"], "--set expects key=value pairs"),
    (["--set", "=3"], "--set expects key=value pairs"),
    (["--algorithm", "fixmach"], "unknown algorithm 'fixmach'"),
    (["--dataset", "mnits"], "unknown dataset 'mnits'"),
]

# (algorithm, key=value) pairs whose value is outside the parameter's meaning.
ALGORITHM_KWARGS = [
    ("fixmatch", "threshold=1.5", "algorithm.threshold must be in [0, 1], got 1.5"),
    ("fixmatch", "threshold=-0.1", "algorithm.threshold must be in [0, 1], got -0.1"),
    ("fixmatch", "threshold=nan", "algorithm.threshold must be a finite number, got nan"),
    ("fixmatch", "lambda_u=-1", "algorithm.lambda_u must be >= 0, got -1"),
    ("fixmatch", "mu=0", "algorithm.mu must be >= 1, got 0"),
    ("fixmatch", "mu=-1", "algorithm.mu must be >= 1, got -1"),
    ("fixmatch", "mu=2.5", "algorithm.mu must be int, got 2.5"),
    ("fixmatch", "temperature=0", "algorithm.temperature must be > 0, got 0"),
    ("fixmatch", "treshold=0.9", "unknown key algorithm.treshold for algorithm 'fixmatch'"),
    ("remixmatch", "k=0", "algorithm.k must be > 0, got 0"),
    ("remixmatch", "alignment_window=0", "algorithm.alignment_window must be >= 1, got 0"),
    ("remixmatch", "beta=0", "algorithm.beta must be > 0, got 0"),
    ("remixmatch", "lambda_rot=-0.5", "algorithm.lambda_rot must be >= 0, got -0.5"),
    ("remixmatch", "rampup_steps=-1", "algorithm.rampup_steps must be >= 0, got -1"),
    ("mixmatch", "k=0", "algorithm.k must be > 0, got 0"),
    ("mixmatch", "beta=-1", "algorithm.beta must be > 0, got -1"),
    ("mixmatch", "temperature=0", "algorithm.temperature must be > 0, got 0"),
    ("simmatch", "alpha=1.5", "algorithm.alpha must be in [0, 1], got 1.5"),
    ("simmatch", "bank_momentum=1", "algorithm.bank_momentum must be in [0, 1), got 1"),
    ("simmatch", "teacher_momentum=1.0", "algorithm.teacher_momentum must be in [0, 1), got 1.0"),
    ("simmatch", "proj_dim=0", "algorithm.proj_dim must be >= 1, got 0"),
    ("simmatch", "da_length=0", "algorithm.da_length must be >= 1, got 0"),
    ("simmatch", "start_steps=-1", "algorithm.start_steps must be >= 0, got -1"),
    ("simmatch", "lambda_in=-2", "algorithm.lambda_in must be >= 0, got -2"),
    ("comatch", "queue_size=0", "algorithm.queue_size must be >= 1, got 0"),
    ("comatch", "contrast_threshold=2", "algorithm.contrast_threshold must be in [0, 1], got 2"),
    ("comatch", "alpha=-0.5", "algorithm.alpha must be in [0, 1], got -0.5"),
    ("comatch", "lambda_c=-1", "algorithm.lambda_c must be >= 0, got -1"),
    ("darp", "alpha=0.5", "algorithm.alpha must be >= 1, got 0.5"),
    ("darp", "iterations=0", "algorithm.iterations must be >= 1, got 0"),
    ("darp", "period=0", "algorithm.period must be >= 1, got 0"),
    ("darp", "warmup_fraction=2", "algorithm.warmup_fraction must be in [0, 1], got 2"),
    ("darp", "strong_views=0", "algorithm.strong_views must be >= 1, got 0"),
    ("dash", "c=1", "algorithm.c must be > 1, got 1"),
    ("dash", "gamma=0.9", "algorithm.gamma must be > 1, got 0.9"),
    ("dash", "rho_min=-1", "algorithm.rho_min must be >= 0, got -1"),
    ("dash", "period_fraction=0", "algorithm.period_fraction must be in (0, 1], got 0"),
    ("meanteacher", "ema_decay=1", "algorithm.ema_decay must be in [0, 1), got 1"),
    ("uda", "threshold=2", "algorithm.threshold must be in [0, 1], got 2"),
    ("vat", "eps=0", "algorithm.eps must be > 0, got 0"),
    ("vat", "xi=-1", "algorithm.xi must be > 0, got -1"),
    ("vat", "entropy_weight=-1", "algorithm.entropy_weight must be >= 0, got -1"),
    ("realmix", "erase_probability=1.5", "algorithm.erase_probability must be in [0, 1]"),
    ("realmix", "ood_fraction=-0.1", "algorithm.ood_fraction must be in [0, 1], got -0.1"),
    ("realmix", "extend_copies=0", "algorithm.extend_copies must be >= 1, got 0"),
    ("realmix", "extend_seed=-1", "algorithm.extend_seed must be in [0, 4294967295], got -1"),
    ("pimodel", "rampup_fraction=1.5", "algorithm.rampup_fraction must be in [0, 1], got 1.5"),
    ("pseudolabel", "threshold=-1", "algorithm.threshold must be in [0, 1], got -1"),
    ("crest", "da_temperature=0", "algorithm.da_temperature must be > 0, got 0"),
    ("crest", "imbalance_ratio=0.5", "algorithm.imbalance_ratio must be >= 1, got 0.5"),
    ("udal", "alpha_min=2", "algorithm.alpha_min must be in [0, 1], got 2"),
    ("udal", "p_model_momentum=1", "algorithm.p_model_momentum must be in [0, 1), got 1"),
    ("fixmatch_da", "window=0", "algorithm.window must be >= 1, got 0"),
    ("fixmatch_da", "k=-1", "algorithm.k must be > 0, got -1"),
    ("udal_mixmatch", "schedule_k=0", "algorithm.schedule_k must be > 0, got 0"),
]

MODEL_KWARGS = [
    (["--set", "model.name=cnn", "model.width=0"], "model.width must be >= 1, got 0"),
    (["--set", "model.name=cnn", "model.bn_momentum=2"], "model.bn_momentum must be in [0, 1]"),
    (["--set", "model.name=wrn28_2", "model.bn_momentum=-1"], "model.bn_momentum must be in"),
    (["--set", "model.name=resnet999"], "unknown model 'resnet999'"),
    (["--set", "model.name=cnn", "model.depth=3"], "unknown key model.depth for model 'cnn'"),
]


@pytest.mark.parametrize(("argv", "message"), FIXED_SECTIONS + MODEL_KWARGS)
def test_out_of_range_option(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", *TINY, *argv, "--out", str(out))
    assert_clean_failure(code, err, f"error: {message}")
    assert not out.exists()


@pytest.mark.parametrize(("algorithm", "pair", "message"), ALGORITHM_KWARGS)
def test_out_of_range_algorithm_argument(tmp_path, capsys, algorithm, pair, message):
    out = tmp_path / "run"
    argv = ["train", *TINY, f"algorithm.{pair}", "--algorithm", algorithm, "--out", str(out)]
    code, _, err = run_cli(capsys, *argv)
    assert_clean_failure(code, err, f"error: {message}")
    assert not out.exists()


def test_every_numeric_option_has_a_range():
    """A new numeric key needs an entry in semisup.ranges (its meaning decides the range)."""
    missing = []
    for section, cls in SECTIONS.items():
        for name, hint in typing.get_type_hints(cls).items():
            numeric = {int, float} & set(typing.get_args(hint) or (hint,))
            if numeric and f"{section}.{name}" not in FIELD_RANGES:
                missing.append(f"{section}.{name}")
    for registry, skip in (
        (ALGORITHMS, ("model", "info")),
        (MODELS, ("num_classes", "in_channels")),
    ):
        for owner in registry.names():
            factory = registry.get(owner)
            target = factory.__init__ if inspect.isclass(factory) else factory
            hints = typing.get_type_hints(target)
            for name in inspect.signature(target).parameters:
                numeric = {int, float} & set(typing.get_args(hints.get(name)) or (hints.get(name),))
                if name not in skip and numeric and kwarg_range(owner, name) is None:
                    missing.append(f"{owner}.{name}")
    assert missing == []


def test_every_default_lies_in_its_range():
    cfg = Config()
    for key, allowed in FIELD_RANGES.items():
        section, name = key.split(".")
        check(key, getattr(getattr(cfg, section), name), allowed)
    for registry in (ALGORITHMS, MODELS):
        for owner in registry.names():
            factory = registry.get(owner)
            target = factory.__init__ if inspect.isclass(factory) else factory
            for name, parameter in inspect.signature(target).parameters.items():
                if name in KWARG_RANGES and parameter.default is not parameter.empty:
                    check(f"{owner}.{name}", parameter.default, kwarg_range(owner, name))


@pytest.mark.parametrize(
    ("allowed", "inside", "outside", "text"),
    [
        (Range(0, 1), [0, 0.5, 1], [-1e-9, 1.0000001], "in [0, 1]"),
        (Range(0, 1, high_open=True), [0, 0.999], [1, 2], "in [0, 1)"),
        (Range(0, 1, low_open=True), [1e-9, 1], [0, -1], "in (0, 1]"),
        (Range(0, low_open=True), [1e-12, 1e9], [0, -3], "> 0"),
        (Range(1), [1, 10**12], [0, 0.999], ">= 1"),
        (Range(high=2.5), [-7, 2.5], [2.6], "<= 2.5"),
    ],
)
def test_range_bounds(allowed, inside, outside, text):
    assert str(allowed) == text
    assert all(allowed.contains(v) for v in inside)
    assert not any(allowed.contains(v) for v in outside)


def test_yaml_values_are_checked_like_flags(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  ema_decay: 1.0\n")
    with pytest.raises(ValueError, match=r"train.ema_decay must be in \[0, 1\), got 1.0"):
        build_config(path)
