"""Wiring: a Config and a split become a ready `Trainer` (model, algorithm, views, engine).

`prepare_data(cfg)` builds the split (`semisup.data.build.build_data`) and records its resolved
seed and size in `cfg`; `build_run(cfg, data, run_dir)` builds everything else on any split
(CReST passes a split extended with its picks); `build_trainer` does both.

A run that starts from another run (`model.pretrained=RUN_DIR`, `--init-from`) takes that run's
model (unless `model.name` is set) and image size (unless `data.image_size` is set); a timm model
takes its pretrained input size for folder data.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from semisup.algorithms import ALGORITHMS, Algorithm, TaskInfo
from semisup.augment import (
    CReSTRandAugment,
    CTAugment,
    RandAugment,
    ViewMaker,
    WeakAugment,
    full_cutout,
)
from semisup.augment.simclr import SimCLRAugment
from semisup.config import (
    Config,
    OptimConfig,
    config_from_dict,
    fill_paper_defaults,
    resolve_kwargs,
    settle_defaults,
)
from semisup.data.build import accepts_option, build_data
from semisup.data.ssl import SSLData
from semisup.engine.callbacks import Callback, CTAFeedback
from semisup.engine.optim import freeze_backbone
from semisup.engine.runtime import resolve_device, resolve_runtime
from semisup.engine.tensorboard import build_loggers
from semisup.engine.trainer import Trainer
from semisup.errors import UserError
from semisup.inference import run_class_names_and_shape
from semisup.models import (
    build_model_from_section,
    default_model_name,
    describe_custom_model,
    resolve_model_section,
)
from semisup.models.inputs import input_normalization
from semisup.models.registry import preferred_image_size
from semisup.pretrained import load_pretrained, run_directory

log = logging.getLogger("semisup")


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_optim(cfg: Config, algorithm_cls: type[Algorithm]) -> OptimConfig:
    """Fills unset `optim.*` keys from the algorithm's original settings.

    The resolved values are written back into `cfg`, so config.yaml shows what was used.
    """
    for f in dataclasses.fields(cfg.optim):
        if getattr(cfg.optim, f.name) is None:
            setattr(cfg.optim, f.name, algorithm_cls.optim_defaults[f.name])
    return dataclasses.replace(cfg.optim)


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
    labeled = a.labeled or "weak"
    wants_simclr = "simclr" in view_kinds or labeled == "simclr"
    simclr = SimCLRAugment(bool(a.hflip)) if wants_simclr else None
    if not view_kinds & {"strong", "strong_cutout"}:
        return ViewMaker(weak, None, cutout, simclr=simclr, labeled=labeled), ()
    if a.strong == "ctaugment":
        cta = CTAugment(
            depth=a.cta_depth,
            threshold=a.cta_threshold,
            decay=a.cta_decay,
            sampling=str(a.cta_sampling),
            translate=a.cta_translate,
            rescale=str(a.cta_rescale),
        )
        return ViewMaker(weak, cta, cutout, simclr=simclr, labeled=labeled), (CTAFeedback(cta),)
    if a.strong == "randaugment":
        return ViewMaker(weak, RandAugment(), cutout, True, simclr, labeled), ()
    if a.strong == "randaugment_crest":
        return ViewMaker(weak, CReSTRandAugment(), cutout, True, simclr, labeled), ()
    return ViewMaker(weak, None, cutout, simclr=simclr, labeled=labeled), ()


def prepare_data(cfg: Config) -> SSLData:
    """The split `cfg.data` describes; its seed, image size and labeled-set size go into `cfg`.

    The model of a source run and the image size a model expects are settled first (see the
    module docstring), as the folder images are resized to that size.
    """
    inherit_source_run(cfg)
    size = preferred_image_size(cfg.model)
    if size is not None and cfg.data.image_size is None and _sizes_images(cfg):
        log.info(
            "data.image_size=%d: the input size of %s (set data.image_size to choose another)",
            size,
            cfg.model["name"],
        )
        cfg.data.image_size = size
    cfg.data.split_seed = cfg.split_seed
    data = build_data(cfg.data, cfg.split_seed)
    cfg.data.num_labels = len(data.labeled_idx)
    return data


def build_configured_model(
    cfg: Config,
    data: SSLData,
    pretrained: bool,
    start_weights: dict[str, torch.Tensor] | None = None,
) -> nn.Module:
    """The registered model `cfg.model` names ("auto": by image size), its keys resolved.

    It is filled with `start_weights` when given (a supervised phase's EMA weights), else, with
    `pretrained`, with `model.pretrained`.
    """
    in_channels, size = data.images.shape[1], data.images.shape[2]
    if cfg.model.get("name", "auto") == "auto":
        cfg.model["name"] = default_model_name(size)
    cfg.model = resolve_model_section(cfg.model)
    model = build_model_from_section(cfg.model, data.num_classes, in_channels)
    if start_weights is not None:
        model.load_state_dict(start_weights)
    elif pretrained and cfg.model["pretrained"]:
        load_pretrained(model, cfg.model["pretrained"], tuple(data.class_names))
    record_input_normalization(cfg, model)
    return model


def inherit_source_run(cfg: Config) -> None:
    """With `model.pretrained=RUN_DIR`: that run's model and image size where `cfg` sets none."""
    source = run_directory(cfg.model.get("pretrained"))
    if source is None:
        return
    source_cfg = config_from_dict(yaml.safe_load((source / "config.yaml").read_text()))
    if cfg.model.get("name", "auto") == "auto":
        inherited = {k: v for k, v in source_cfg.model.items() if k != "pretrained"}
        cfg.model = {**inherited, **{k: v for k, v in cfg.model.items() if k != "name"}}
    if cfg.data.image_size is None and _sizes_images(cfg):
        _, shape = run_class_names_and_shape(source, source_cfg)
        cfg.data.image_size = int(shape[-1])


def _sizes_images(cfg: Config) -> bool:
    return accepts_option(cfg.data.name, "image_size")


def build_run(
    cfg: Config,
    data: SSLData,
    run_dir: Path | None,
    labeled_class_counts: tuple[int, ...] | None = None,
    model: nn.Module | None = None,
    pretrained: bool = True,
    start_weights: dict[str, torch.Tensor] | None = None,
) -> Trainer:
    """Builds the model, algorithm, views and trainer of `cfg` on the split `data`.

    Resolves every "auto"/None setting of the algorithm, model, optimizer and augmentation into
    `cfg`, so `cfg.to_dict()` is the run's config.yaml.

    Args:
        cfg: the run's config.
        data: the split.
        run_dir: where the trainer writes (None: nowhere).
        labeled_class_counts: the class counts the algorithm takes as the labeled class prior;
            None: those of `data` (CReST keeps the original split's while picks extend it).
        model: a network to train instead of the registered one `cfg.model` names (the Python
            API's custom modules); `cfg.model` then records its class (`describe_custom_model`).
        pretrained: load `model.pretrained` (False when a checkpoint will replace the weights:
            resuming, evaluating).
        start_weights: the model's weights to start from instead (`semisup.supervised_phase`).
    """
    counts = labeled_class_counts or data.labeled_class_counts()
    settle_defaults(cfg, paper_when_auto=True)  # what `semisup.planning` left open
    fill_paper_defaults(cfg.train)
    cfg.augment.labeled = cfg.augment.labeled or "weak"
    algorithm_cls = ALGORITHMS.get(cfg.algorithm["name"])
    cfg.algorithm = resolve_kwargs(algorithm_cls, cfg.algorithm, "algorithm", ("model", "info"))
    for key in ("steps", "batch_size", "eval_every", "eval_batch_size"):
        if getattr(cfg.train, key) < 1:
            raise UserError(f"train.{key} must be at least 1, got {getattr(cfg.train, key)}")
    runtime = resolve_runtime(cfg.train, resolve_device(cfg.train.device))
    seed_everything(cfg.train.seed)

    if model is None:
        model = build_configured_model(cfg, data, pretrained, start_weights)
    else:
        cfg.model = describe_custom_model(model)

    info = TaskInfo(
        num_classes=data.num_classes,
        num_labeled=len(data.labeled_idx),
        num_unlabeled=len(data.unlabeled_idx),
        labeled_class_counts=counts,
        total_steps=cfg.train.steps,
    )
    algorithm_kwargs = {k: v for k, v in cfg.algorithm.items() if k != "name"}
    algorithm = algorithm_cls(model, info, **algorithm_kwargs)
    optim = resolve_optim(cfg, algorithm_cls)
    if optim.freeze_backbone:
        freeze_backbone(model)

    resolve_augment(cfg, algorithm_cls, data.hflip)
    views, callbacks = build_views(cfg, set(algorithm.views.values()))
    loggers = build_loggers(cfg.train.tensorboard, run_dir, counts)
    return Trainer(
        algorithm,
        data,
        cfg.train,
        optim,
        runtime,
        views,
        run_dir,
        cfg.to_dict(),
        callbacks,
        loggers,
    )


def record_input_normalization(cfg: Config, model: torch.nn.Module) -> None:
    """Writes a timm model's input mean and std into `cfg.model` (for config.yaml and `load`)."""
    normalization = input_normalization(model)
    if normalization is not None and "input_mean" in cfg.model:
        cfg.model["input_mean"] = list(normalization.mean)
        cfg.model["input_std"] = list(normalization.std)


def build_trainer(cfg: Config, run_dir: Path | None, pretrained: bool = True) -> Trainer:
    """`build_run` on the split of `cfg.data`."""
    return build_run(cfg, prepare_data(cfg), run_dir, pretrained=pretrained)
