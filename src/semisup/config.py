"""Run configuration: typed dataclasses, YAML files and dotted `--set key=value` overrides.

Layering, lowest first: dataclass defaults (the papers' settings), the data set's preset
(`PRESETS`, only for tiny built-in data), a YAML file (`--config`), then command-line flags and
`--set` pairs. Unknown keys and wrongly typed values fail at once with a message listing the
valid keys. The `algorithm` and `model` sections are free-form: `name` plus keyword arguments,
validated against the constructor signature of the named algorithm or model. Every number is
checked against its range (`semisup.ranges`).
"""

from __future__ import annotations

import dataclasses
import inspect
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from semisup.durations import parse_duration
from semisup.errors import UserError
from semisup.ranges import FIELD_RANGES, check, kwarg_range


@dataclass
class DataConfig:
    """The `data.*` section."""

    name: str = "digits"  # data set (see `semisup list`); "folder" for your own images
    dir: str = "~/.cache/semisup/data"  # where data sets are read from / downloaded to
    num_labels: int | None = None  # labeled images in total; None: 4 per class (folder: all)
    split_seed: int | None = None  # seed of the labeled split; None: train.seed
    unlabeled_includes_labeled: bool = True  # FixMatch/ReMixMatch protocol (False: MixMatch's)
    # Long tail (CIFAR-10-LT, CReST/UDAL): class k keeps N_1·γ^(−k/(C−1)) images; None: off
    imbalance_ratio: float | None = None
    labeled_fraction: float | None = None  # labels per class: ceil(fraction · N_k)
    unlabeled_imbalance: Literal["same", "reversed", "uniform"] = "same"  # unlabeled class profile
    # DARP protocol: N_1 labeled and M_1 unlabeled images in the head class (1500, 3000), each
    # class then int(N_1·γ^(−k/(C−1))) and int(M_1·γ^(−k/(C−1))); replace labeled_fraction
    labeled_head: int | None = None
    unlabeled_head: int | None = None
    split_order: Literal["random", "first"] = "random"  # long tail: random images, or the first
    mismatch: int | None = None  # class mismatch (Oliver et al.): 0/25/50/75/100 % unseen classes
    mismatch_preset: str = "auto"  # animals (CIFAR-10) | clothing (Fashion-MNIST) | digits
    image_size: int | None = None  # folder data: resize to this side (None: most common size)
    download: bool = True  # download missing standard files from the official URLs
    mirror: str | None = None  # base URL to download from instead (also $SEMISUP_MIRROR)


@dataclass
class TrainConfig:
    """The `train.*` section: the engine.

    Keys left at None are decided when the run starts (`semisup.planning`) and written into the
    run's config.yaml: by the papers' settings for `defaults: paper` (any run from a `--config`
    file), or by a wall-clock budget and measurement on this machine for `defaults: practical`.
    """

    # auto: paper when a --config file is given, else practical (see docs/practical.md)
    defaults: Literal["auto", "paper", "practical"] = "auto"
    steps: int | None = None  # optimizer steps; None: paper 2^20, practical sized to time_budget
    time_budget: str | None = None  # wall-clock budget ("90s", "20m", "1.5h"); None: by device
    batch_size: int | None = None  # labeled images per step (unlabeled: mu ×); None: 64 (CPU: 16)
    eval_every: int | None = None  # steps between evaluations; None: 1024 (paper), ~20 per run
    eval_batch_size: int = 1024  # images per forward pass at evaluation
    ema_decay: float = 0.999  # EMA of the weights, evaluated instead of the raw model
    # decay_t = min(decay, (1+t)/(10+t)) (Mean Teacher); None: off (paper), on (practical)
    ema_warmup: bool | None = None
    # BatchNorm statistics of the EMA model: copied from the live model (the original code) or
    # averaged like the weights; None: copy (paper), average (practical)
    ema_buffers: Literal["copy", "average"] | None = None
    # step-counted schedule defaults (ramp-ups, warm-ups) scaled from 2^20 steps to this run's
    # length; None: no (paper), yes (practical)
    scale_schedules: bool | None = None
    # practical runs of a semi-supervised algorithm train on the labeled images alone for this
    # share of the time budget first, then start the algorithm from those weights
    # (`semisup.supervised_phase`); None: 0.5 (practical, with a budget, colour images), else 0
    supervised_first: float | None = None
    supervised_steps: int | None = None  # that supervised phase's steps; None: from the share
    checkpoint_every: str = "5m"  # wall-clock time between checkpoints (besides evaluations)
    seed: int = 0  # seeds everything (and the labeled split unless data.split_seed is set)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # auto: bf16 autocast on CUDA GPUs and on CPUs with native bf16 where it measures faster
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: bool | None = None  # None: on (faster convolutions on CPU and GPU)
    grad_clip: float | None = None  # max gradient norm; None: no clipping (as the papers)
    nonfinite: Literal["stop", "skip"] = "stop"  # on a NaN/inf in a step: stop, or undo the step
    keep_checkpoints: int = 1  # checkpoints kept in the run directory (latest always kept)
    progress: bool = True  # show a progress bar
    tensorboard: bool | None = None  # TensorBoard event files; None: when it is installed


@dataclass
class OptimConfig:
    """The `optim.*` section; None means the algorithm's original setting."""

    name: Literal["sgd", "adam", "adamw"] | None = None  # adamw: decay inside the step (USB)
    lr: float | None = None
    momentum: float | None = None  # SGD only
    nesterov: bool | None = None  # SGD only
    weight_decay: float | None = None  # on conv/linear kernels (all: decay_all_parameters)
    decoupled_weight_decay: bool | None = None  # True: kernels ×(1 − wd·lr) after each step
    decay_all_parameters: bool | None = None  # True: biases and BatchNorm decayed too
    # cosine: lr·cos(factor·π·t/T); warmup_cosine: SimMatch ImageNet's warm-up + half cosine
    schedule: Literal["cosine", "constant", "warmup_cosine"] | None = None
    cosine_factor: float | None = None  # 7/16: FixMatch; 1/16: CReST's "halfcos" (level 1)
    warmup_epochs: int | None = None  # warmup_cosine: epochs of linear warm-up (SimMatch: 5)
    schedule_epochs: int | None = None  # warmup_cosine: epochs in the run (SimMatch: 400)
    # Fine-tuning a pretrained network (USB-CV's recipe):
    warmup_steps: int = 0  # linear warm-up from 0 over these steps, then the schedule
    layer_decay: float = 1.0  # layer-wise lr decay: depth d of D gets lr·layer_decay^(D − d)
    freeze_backbone: bool = False  # train only the classifier (and the algorithm's own heads)


@dataclass
class AugmentConfig:
    """The `augment.*` section; None means the algorithm's original setting."""

    # ctaugment | randaugment (FixMatch's) | randaugment_crest (UDA/CReST's) | none (weak+cutout)
    strong: Literal["ctaugment", "randaugment", "randaugment_crest", "none"] = "ctaugment"
    cta_sampling: Literal["fixmatch", "remixmatch"] | None = None  # the two repos' bin sampling
    cta_translate: Literal["paper", "code"] = "paper"  # code: the Google code's no-op translate
    cta_rescale: Literal["fixmatch", "remixmatch"] | None = None  # remixmatch: the no-op rescale
    cta_threshold: float = 0.8  # bins whose rate is below this fraction of the best are unused
    cta_decay: float = 0.99  # rate ← decay · rate + (1 − decay) · proximity
    cta_depth: int = 2  # ops per CTAugment policy
    cutout: bool = True  # the full-size cutout after FixMatch's strong policy (False: ablation)
    weak_shift: float = 0.125  # largest random translation, fraction of the image side
    hflip: bool | None = None  # random horizontal flips; None: the data set's default
    # the view of the labeled images where the algorithm asks for a weak one: weak (the papers)
    # or simclr (crop, colour jitter, grey scale); None: weak (paper), simclr (practical)
    labeled: Literal["weak", "simclr"] | None = None


# The papers' run length and engine settings: what `defaults: paper` gives the None keys of
# `train.*` (the evaluation cadence is 1,024 steps, or a tenth of a shorter run).
PAPER_STEPS = 2**20
PAPER_TRAIN: dict[str, Any] = {
    "steps": PAPER_STEPS,
    "batch_size": 64,
    "ema_warmup": False,
    "ema_buffers": "copy",
    "scale_schedules": False,
}


# `algorithm.name: auto`: FixMatch under the papers' defaults (their reference method), FlexMatch
# under the practical ones (the best start at CPU budgets: benchmarks/README.md, "Practical").
AUTO_ALGORITHM = {"paper": "fixmatch", "practical": "flexmatch"}


def settle_defaults(cfg: Config, paper_when_auto: bool) -> None:
    """Decides `train.defaults: auto` (paper or practical) and with it `algorithm.name: auto`."""
    if cfg.train.defaults == "auto":
        cfg.train.defaults = "paper" if paper_when_auto else "practical"
    if cfg.algorithm.get("name", "auto") == "auto":
        cfg.algorithm["name"] = AUTO_ALGORITHM[cfg.train.defaults]


def fill_paper_defaults(train: TrainConfig) -> None:
    """Gives every None key of `train` the papers' value (keys already set stay)."""
    for key, value in PAPER_TRAIN.items():
        if getattr(train, key) is None:
            setattr(train, key, value)
    if train.eval_every is None:
        train.eval_every = min(1024, max(1, train.steps // 10))


# Keys that hold a duration ("20m"): checked as soon as they are set.
DURATION_KEYS = ("train.time_budget", "train.checkpoint_every")

SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "train": TrainConfig,
    "optim": OptimConfig,
    "augment": AugmentConfig,
}
FREE_SECTIONS = ("algorithm", "model")

# Settings that make a tiny built-in data set train in minutes on a CPU, for runs without a
# config file; a budget of the preset is left out when the command line sets train.steps.
PRESETS: dict[str, dict[str, Any]] = {
    "digits": {
        "train.time_budget": "5m",
        "train.ema_decay": 0.99,
    },
}


@dataclass
class Config:
    """A whole run's configuration."""

    algorithm: dict[str, Any] = field(default_factory=lambda: {"name": "auto"})
    model: dict[str, Any] = field(default_factory=lambda: {"name": "auto"})
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict (for YAML)."""
        return dataclasses.asdict(self)

    @property
    def split_seed(self) -> int:
        """The seed of the labeled split: `data.split_seed`, else the run's `train.seed`."""
        return self.train.seed if self.data.split_seed is None else self.data.split_seed


def coerce(value: Any, hint: Any, key: str) -> Any:
    """Checks `value` against a type hint, converting where lossless.

    Conversions: int → float, "1e-3" → 0.001, "none"/"null" → None for optional keys.
    Anything else that does not match raises a UserError naming `key`.
    """
    origin = get_origin(hint)
    if hint is Any:
        return value
    if origin is Union or origin is types.UnionType:
        options = get_args(hint)
        if type(None) in options and (value is None or value in ("none", "None", "null")):
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce(value, option, key)
            except UserError:
                pass
        names = " or ".join(_type_name(o) for o in options)
        raise UserError(f"{key} must be {names}, got {value!r}")
    if origin is Literal:
        if value not in get_args(hint):
            choices = ", ".join(str(c) for c in get_args(hint))
            raise UserError(f"{key} must be one of: {choices}; got {value!r}")
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, str):
            return value
    else:
        return value
    raise UserError(f"{key} must be {_type_name(hint)}, got {value!r}")


def _type_name(hint: Any) -> str:
    if hint is type(None):
        return "null"
    if get_origin(hint) is Literal:
        return "one of " + ", ".join(str(c) for c in get_args(hint))
    return getattr(hint, "__name__", str(hint))


def parse_value(text: str) -> Any:
    """A `--set` value, read as YAML: `0.9` → 0.9, `true` → True, `[1, 2]` → list, else str."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_assignments(pairs: list[str]) -> dict[str, Any]:
    """`["train.steps=100", ...]` → `{"train.steps": 100, ...}`."""
    result = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--set expects key=value pairs like train.steps=100, got {pair!r}")
        result[key.strip()] = parse_value(text)
    return result


def flatten(nested: dict[str, Any], source: str) -> dict[str, Any]:
    """`{"train": {"steps": 1}}` → `{"train.steps": 1}`; sections must be mappings."""
    flat = {}
    for section, values in nested.items():
        if not isinstance(values, dict):
            raise UserError(f"{source}: section '{section}' must be a mapping of keys to values")
        for key, value in values.items():
            flat[f"{section}.{key}"] = value
    return flat


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Reads a config file as a flat dotted-key dict."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as e:
        raise UserError(f"config file {path} is not text (not UTF-8): pass a YAML file") from e
    except OSError as e:
        raise UserError(f"cannot read config file {path}: {e.strerror or e}") from e
    except yaml.YAMLError as e:
        raise UserError(f"config file {path} is not valid YAML: {' '.join(str(e).split())}") from e
    if not isinstance(loaded, dict):
        raise UserError(f"config file {path} must be a mapping of sections")
    return flatten(loaded, str(path))


def valid_keys() -> list[str]:
    """Every dotted key of the fixed sections."""
    return [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)]


def set_key(cfg: Config, key: str, value: Any) -> None:
    """Sets one dotted key, type-checked; unknown keys raise a UserError listing valid ones."""
    section, _, name = key.partition(".")
    if section in FREE_SECTIONS and name:
        getattr(cfg, section)[name] = value
        return
    if section not in SECTIONS or not name:
        raise UserError(
            f"unknown config key '{key}'. Sections: {', '.join([*FREE_SECTIONS, *SECTIONS])}; "
            f"valid keys: algorithm.<arg>, model.<arg>, {', '.join(valid_keys())}"
        )
    obj = getattr(cfg, section)
    hints = get_type_hints(type(obj))
    if name not in hints:
        names = ", ".join(f"{section}.{f.name}" for f in dataclasses.fields(obj))
        raise UserError(f"unknown config key '{key}'. Valid {section} keys: {names}")
    value = check(key, coerce(value, hints[name], key), FIELD_RANGES.get(key))
    if key in DURATION_KEYS and value is not None:
        try:  # an unreadable duration is an error now, not when training starts
            parse_duration(value)
        except UserError as e:
            raise UserError(f"{key}: {e}") from e
    setattr(obj, name, value)


def build_config(
    config_file: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> Config:
    """Layers defaults, the data set preset, a YAML file and overrides into a Config.

    The data set's preset applies only without a config file (a config file is a complete,
    reproducible setting).
    """
    user = read_yaml(config_file) if config_file else {}
    user.update(overrides or {})
    dataset = user.get("data.name", DataConfig.name)
    preset = {} if config_file else dict(PRESETS.get(str(dataset), {}))
    if "train.steps" in user:
        preset.pop("train.time_budget", None)
    cfg = Config()
    for key, value in {**preset, **user}.items():
        set_key(cfg, key, value)
    for section in FREE_SECTIONS:  # the numbers given; types and the rest: `resolve_kwargs`
        values = getattr(cfg, section)
        for name, value in values.items():
            check(f"{section}.{name}", value, kwarg_range(str(values.get("name")), name))
    return cfg


def config_from_dict(nested: dict[str, Any]) -> Config:
    """Rebuilds a Config from `Config.to_dict()` output (e.g. a run's config.yaml)."""
    cfg = Config()
    for key, value in flatten(nested, "config").items():
        set_key(cfg, key, value)
    return cfg


def resolve_kwargs(
    factory: Callable[..., Any],
    given: dict[str, Any],
    section: str,
    skip: tuple[str, ...],
    common: dict[str, tuple[Any, Any]] | None = None,
) -> dict[str, Any]:
    """Validates `section.*` keys against `factory`'s signature and fills in its defaults.

    Args:
        factory: a class (its `__init__` is read) or function.
        given: the section's keys, including "name".
        section: "algorithm" or "model", for messages.
        skip: parameters supplied by the library, not by users (e.g. "model", "info").
        common: keys every member of the section takes besides its factory's parameters
            (`model.pretrained`): name → (type hint, default). They are resolved too, but are
            not arguments of the factory.

    Returns:
        {"name": ..., every user-settable parameter: its value}, type-checked.
    """
    target = factory.__init__ if inspect.isclass(factory) else factory
    hints = get_type_hints(target)
    params = {
        n: p
        for n, p in inspect.signature(target).parameters.items()
        if n not in skip and n != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    common = common or {}
    name = given["name"]
    unknown = sorted(set(given) - set(params) - set(common) - {"name"})
    if unknown:
        valid = ", ".join(
            [f"{section}.{n} (default {p.default!r})" for n, p in params.items()]
            + [f"{section}.{n} (default {default!r})" for n, (_, default) in common.items()]
        )
        raise UserError(
            f"unknown key {section}.{unknown[0]} for {section} '{name}'. "
            f"Valid keys: {valid or 'none'}"
        )
    resolved: dict[str, Any] = {"name": name}
    for n, p in params.items():
        if n in given:
            value = coerce(given[n], hints.get(n, Any), f"{section}.{n}")
            resolved[n] = check(f"{section}.{n}", value, kwarg_range(name, n))
        elif p.default is not p.empty:
            resolved[n] = p.default
        else:
            raise UserError(f"{section}.{n} is required for {section} '{name}'")
    for n, (hint, default) in common.items():
        resolved[n] = coerce(given.get(n, default), hint, f"{section}.{n}")
    return resolved
