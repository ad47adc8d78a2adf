import pytest

from semisup.algorithms import ALGORITHMS
from semisup.config import (
    PRESETS,
    build_config,
    config_from_dict,
    parse_assignments,
    resolve_kwargs,
)
from semisup.errors import UserError


def test_layering_defaults_preset_file_overrides(tmp_path):
    cfg = build_config()
    assert cfg.algorithm == {"name": "auto"}  # FixMatch (paper) or FlexMatch (practical)
    assert cfg.train.time_budget == PRESETS["digits"]["train.time_budget"]  # digits preset
    assert cfg.train.steps is None  # decided when the run starts (semisup.planning)
    assert build_config(None, {"data.name": "mnist"}).train.time_budget is None
    # A preset's budget gives way to a step count; a config file sets everything itself.
    assert build_config(None, {"train.steps": 30}).train.time_budget is None
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  steps: 10\n  ema_decay: 0.9\nalgorithm:\n  threshold: 0.8\n")
    cfg = build_config(path, {"train.steps": 20})
    assert cfg.train.steps == 20  # command line beats file
    assert cfg.train.ema_decay != PRESETS["digits"]["train.ema_decay"]  # no preset with a file
    assert cfg.train.ema_decay == 0.9
    assert cfg.algorithm == {"name": "auto", "threshold": 0.8}


def test_set_values_are_parsed_and_type_checked():
    overrides = parse_assignments(["train.grad_clip=5", "data.num_labels=250", "train.seed=3"])
    cfg = build_config(None, overrides)
    assert cfg.train.grad_clip == 5.0 and isinstance(cfg.train.grad_clip, float)
    assert cfg.data.num_labels == 250
    assert build_config(None, parse_assignments(["optim.lr=1e-3"])).optim.lr == 0.001
    assert build_config(None, parse_assignments(["train.grad_clip=none"])).train.grad_clip is None


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        (
            "train.stepz=5",
            "unknown config key 'train.stepz'. Valid train keys: train.defaults, train.steps",
        ),
        ("trian.steps=5", "unknown config key 'trian.steps'. Sections: algorithm, model, data"),
        ("train.steps=abc", "train.steps must be int or null, got 'abc'"),
        ("train.steps=1.5", "train.steps must be int or null, got 1.5"),
        ("train.progress=maybe", "train.progress must be bool"),
        ("train.precision=fp8", "train.precision must be one of: auto, fp32, bf16, fp16"),
    ],
)
def test_bad_keys_and_values_fail_with_the_valid_options(pair, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(".", r"\.")):
        build_config(None, parse_assignments([pair]))


def test_set_needs_key_value_pairs():
    with pytest.raises(UserError, match="key=value"):
        parse_assignments(["train.steps"])


def test_bad_yaml_file_is_reported(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: [1, 2")
    with pytest.raises(UserError, match="not valid YAML"):
        build_config(path)
    with pytest.raises(UserError, match="does not exist"):
        build_config(tmp_path / "missing.yaml")
    path.write_text("train: 5\n")
    with pytest.raises(UserError, match="section 'train' must be a mapping"):
        build_config(path)


def test_algorithm_kwargs_are_checked_against_the_signature():
    fixmatch = ALGORITHMS.get("fixmatch")
    resolved = resolve_kwargs(
        fixmatch, {"name": "fixmatch", "threshold": 0.9}, "algorithm", ("model", "info")
    )
    assert resolved == {
        "name": "fixmatch",
        "threshold": 0.9,
        "lambda_u": 1.0,
        "mu": 7,
        "temperature": 1.0,
    }
    with pytest.raises(UserError, match=r"unknown key algorithm\.treshold .*algorithm\.threshold"):
        resolve_kwargs(fixmatch, {"name": "fixmatch", "treshold": 0.9}, "algorithm", ("model",))
    with pytest.raises(UserError, match="algorithm.mu must be int"):
        resolve_kwargs(
            fixmatch, {"name": "fixmatch", "mu": "seven"}, "algorithm", ("model", "info")
        )


def test_unknown_algorithm_lists_the_valid_ones():
    with pytest.raises(
        UserError, match="unknown algorithm 'fixmach'. Valid algorithms: .*fixmatch"
    ):
        ALGORITHMS.get("fixmach")


def test_round_trip_through_a_dict():
    cfg = build_config(None, parse_assignments(["train.steps=7", "algorithm.threshold=0.5"]))
    assert config_from_dict(cfg.to_dict()) == cfg
