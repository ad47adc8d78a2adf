"""Builds a whole run from a Config (data, model, algorithm, augmentation, trainer) and runs it."""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from semisup.algorithms import ALGORITHMS, Algorithm, TaskInfo
from semisup.augment import (
    CReSTRandAugment,
    CTAugment,
    RandAugment,
    ViewMaker,
    WeakAugment,
    full_cutout,
)
from semisup.augment.feedback import CTAFeedback
from semisup.augment.simclr import SimCLRAugment
from semisup.config import Config, DataConfig, TrainConfig, resolve_kwargs
from semisup.data import DATASETS, ImageDataset
from semisup.data.protocols import build_protocol
from semisup.data.ssl import SSLData, build_ssl_data
from semisup.engine.optim import OptimSettings
from semisup.engine.tensorboard import build_loggers
from semisup.engine.trainer import Callback, EngineSettings, Trainer
from semisup.errors import UserError
from semisup.models import MODELS, build_model, default_model_name

log = logging.getLogger("semisup")


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_dataset(data: DataConfig) -> ImageDataset:
    """Calls the registered loader with the `data.*` options it accepts."""
    loader = DATASETS.get(data.name)
    options = {
        "download": data.download,
        "mirror": data.mirror,
        "image_size": data.image_size,
    }
    accepted = inspect.signature(loader).parameters
    kwargs = {k: v for k, v in options.items() if k in accepted}
    return loader(Path(data.dir).expanduser(), **kwargs)


def resolve_device(name: str) -> torch.device:
    """'auto' → CUDA when available, else CPU; a CUDA request without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise UserError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(
            f"device {name} was requested but no CUDA GPU is available; use --device cpu"
        )
    return device


def resolve_engine(train: TrainConfig, device: torch.device) -> EngineSettings:
    """Turns `train.*` into engine settings, deciding the "auto" precision and memory format.

    auto precision is bf16 autocast on CUDA GPUs that support it and fp32 elsewhere (on CPUs
    without native bf16 it is 2.5x slower); channels-last is on by default, which made the small
    CNN 1.5x faster on a CPU (benchmarks/README.md has the measurements behind these choices).
    """
    precision = train.precision
    if precision == "auto":
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        precision = "bf16" if cuda_bf16 else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise UserError("train.precision=fp16 needs a CUDA GPU; use bf16 or fp32 on a CPU")
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    channels_last = True if train.channels_last is None else train.channels_last
    for key in ("steps", "batch_size", "eval_every", "eval_batch_size"):
        if getattr(train, key) < 1:
            raise UserError(f"train.{key} must be at least 1, got {getattr(train, key)}")
    return EngineSettings(
        steps=train.steps,
        batch_size=train.batch_size,
        eval_every=train.eval_every,
        eval_batch_size=train.eval_batch_size,
        ema_decay=train.ema_decay,
        ema_warmup=train.ema_warmup,
        seed=train.seed,
        device=device,
        autocast_dtype=dtype,
        channels_last=channels_last,
        grad_clip=train.grad_clip,
        nonfinite=train.nonfinite,
        keep_checkpoints=train.keep_checkpoints,
        progress=train.progress,
    )


def resolve_optim(cfg: Config, algorithm_cls: type[Algorithm]) -> OptimSettings:
    """Fills unset `optim.*` keys from the algorithm's original settings.

    The resolved values are written back into `cfg`, so config.yaml shows what was used.
    """
    values = {**algorithm_cls.optim_defaults}
    for f in dataclasses.fields(cfg.optim):
        given = getattr(cfg.optim, f.name)
        if given is not None:
            values[f.name] = given
        setattr(cfg.optim, f.name, values[f.name])
    return OptimSettings(**values)


def resolve_augment(cfg: Config, algorithm_cls: type[Algorithm], hflip: bool) -> None:
    """Fills the unset `augment.*` keys from the algorithm's defaults and the data set."""
    for key, value in algorithm_cls.augment_defaults.items():
        if getattr(cfg.augment, key) is None:
            setattr(cfg.augment, key, value)
    if cfg.augment.hflip is None:
        cfg.augment.hflip = hflip


def no_cutout(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The cutout ablation (FixMatch paper §5 / `ab_fixmatch_nocutout.py`): images unchanged."""
    return images


def build_views(cfg: Config, view_kinds: set[str]) -> tuple[ViewMaker, tuple[Callback, ...]]:
    """The view maker for `augment.*`, plus the CTAugment feedback callback when CTA is used.

    Args:
        cfg: the config (its `augment` section is used).
        view_kinds: the kinds of view the algorithm asks for; without a strong one, no strong
            policy is built (and no CTAugment feedback runs).
    """
    a = cfg.augment
    weak = WeakAugment(bool(a.hflip), a.weak_shift)
    cutout = full_cutout if a.cutout else no_cutout
    simclr = SimCLRAugment(bool(a.hflip)) if "simclr" in view_kinds else None
    if not view_kinds & {"strong", "strong_cutout"}:
        return ViewMaker(weak, None, cutout, simclr=simclr), ()
    if a.strong == "ctaugment":
        cta = CTAugment(
            depth=a.cta_depth,
            threshold=a.cta_threshold,
            decay=a.cta_decay,
            sampling=str(a.cta_sampling),
            translate=a.cta_translate,
            rescale=str(a.cta_rescale),
        )
        return ViewMaker(weak, cta, cutout, simclr=simclr), (CTAFeedback(cta),)
    if a.strong == "randaugment":
        return ViewMaker(weak, RandAugment(), cutout, True, simclr), ()
    if a.strong == "randaugment_crest":
        return ViewMaker(weak, CReSTRandAugment(), cutout, True, simclr), ()
    return ViewMaker(weak, None, cutout, simclr=simclr), ()


@dataclass
class Experiment:
    """A fully built run."""

    config: Config
    data: SSLData
    trainer: Trainer


def build_experiment(cfg: Config, run_dir: Path | None) -> Experiment:
    """Builds everything `cfg` describes. Resolves every "auto"/None setting into `cfg`."""
    algorithm_cls = ALGORITHMS.get(cfg.algorithm["name"])
    cfg.algorithm = resolve_kwargs(algorithm_cls, cfg.algorithm, "algorithm", ("model", "info"))
    device = resolve_device(cfg.train.device)
    engine = resolve_engine(cfg.train, device)
    seed_everything(cfg.train.seed)

    dataset = load_dataset(cfg.data)
    if cfg.data.split_seed is None:
        cfg.data.split_seed = cfg.train.seed
    protocol = build_protocol(
        cfg.data.imbalance_ratio,
        cfg.data.labeled_fraction,
        cfg.data.unlabeled_imbalance,
        cfg.data.mismatch,
        cfg.data.mismatch_preset,
        cfg.data.labeled_head,
        cfg.data.unlabeled_head,
        cfg.data.split_order,
    )
    data = build_ssl_data(
        dataset,
        cfg.data.num_labels,
        cfg.data.split_seed,
        cfg.data.unlabeled_includes_labeled,
        protocol,
    )
    cfg.data.num_labels = len(data.labeled_idx)

    in_channels, size = dataset.image_shape[0], dataset.image_shape[1]
    if cfg.model.get("name", "auto") == "auto":
        cfg.model["name"] = default_model_name(size)
    model_factory = MODELS.get(cfg.model["name"])
    cfg.model = resolve_kwargs(model_factory, cfg.model, "model", ("num_classes", "in_channels"))
    model_kwargs = {k: v for k, v in cfg.model.items() if k != "name"}
    model = build_model(cfg.model["name"], data.num_classes, in_channels, **model_kwargs)

    info = TaskInfo(
        num_classes=data.num_classes,
        num_labeled=len(data.labeled_idx),
        num_unlabeled=len(data.unlabeled_idx),
        labeled_class_counts=data.labeled_class_counts(),
        total_steps=engine.steps,
    )
    algorithm_kwargs = {k: v for k, v in cfg.algorithm.items() if k != "name"}
    algorithm = algorithm_cls(model, info, **algorithm_kwargs)
    optim = resolve_optim(cfg, algorithm_cls)

    resolve_augment(cfg, algorithm_cls, dataset.hflip)
    views, callbacks = build_views(cfg, set(algorithm.views.values()))
    loggers = build_loggers(cfg.train.tensorboard, run_dir, data.labeled_class_counts())
    trainer = Trainer(
        algorithm, data, engine, optim, views, run_dir, cfg.to_dict(), callbacks, loggers
    )
    return Experiment(config=cfg, data=data, trainer=trainer)


def write_yaml(path: Path, content: dict[str, Any]) -> None:
    """Writes a YAML file (tuples as lists)."""
    path.write_text(yaml.safe_dump(json.loads(json.dumps(content)), sort_keys=False))


def write_json(path: Path, content: dict[str, Any]) -> None:
    """Writes an indented JSON file atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(content, indent=2) + "\n")
    tmp.replace(path)
