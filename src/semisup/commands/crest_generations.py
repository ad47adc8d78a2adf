"""`semisup crest`: CReST / CReST+ generational self-training as one resumable command.

Each generation g = 0..G−1 (Wei et al., CVPR 2021; google-research/crest
`util/semisup.py::train_generations`; docs/algorithms.md#crest):

1. labeled set = the original labeled split + the picks of generation g−1 with their
   pseudo-labels (picks do not accumulate); the unlabeled set and the class prior stay those of
   the original split;
2. a fresh experiment (new weights, optimizer, schedule and algorithm state, same seed) trains
   `train.steps` steps, by default the `crest` learner (CReST+: alignment temperature t_g);
3. the EMA model predicts every unlabeled image that is not in the original labeled set, and
   `pick_pseudo_labels` keeps the int(n_c·μ_c) most confident of each predicted class.

Layout of RUN_DIR: config.yaml (the base config) and crest.yaml (the generation settings),
gen<g>/ (an ordinary run directory: config.yaml, checkpoint.pt, metrics.jsonl, summary.json,
plus pseudo_labels.json with the picks) and summary.json (the final generation's results and
every generation's numbers). `--resume` skips finished generations (those with a summary.json)
and continues the interrupted one from its last checkpoint.

The command runs in one process (a DDP run of several generations in turn is not supported).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor

from semisup.algorithms.crest import (
    class_profile,
    generation_temperature,
    pick_pseudo_labels,
    sampling_rates,
)
from semisup.commands.rundir import (
    claim_run_dir,
    default_run_dir,
    flag_overrides,
    resume_config,
)
from semisup.config import Config, build_config, read_yaml
from semisup.data.ssl import SSLData
from semisup.engine.metrics import predict_logits
from semisup.engine.trainer import Trainer
from semisup.errors import UserError
from semisup.experiment import build_run, prepare_data
from semisup.files import make_folder, write_json, write_yaml
from semisup.ranges import POSITIVE, check
from semisup.run_files import start_trainer

log = logging.getLogger("semisup")

# Learner keys that the command sets in every generation.
MANAGED_KEYS = ("da_temperature", "imbalance_ratio")
# What RUN_DIR/summary.json reports of the final generation, and of each generation.
FINAL_KEYS = (
    "test_accuracy",
    "test_balanced_accuracy",
    "median_last20_accuracy",
    "per_class_accuracy",
)
GENERATION_KEYS = (
    *FINAL_KEYS,
    "test_accuracy_la",
    "da_temperature",
    "steps",
    "wall_seconds",
    "labeled_class_counts",
    "predicted_per_class",
    "picked_per_class",
    "picked_accuracy",
)


@dataclass(frozen=True)
class Settings:
    """The generation settings (RUN_DIR/crest.yaml).

    Attributes:
        generations: G (6 in the README and run.sh; the flag default is 15).
        alpha: α of the sampling rates (3: μ = rate^(1/3)).
        final_temperature: t_min, CReST+'s alignment temperature in the last generation (0.5).
    """

    generations: int = 6
    alpha: float = 3.0
    final_temperature: float = 0.5


def is_plus(cfg: Config) -> bool:
    """CReST+: the `crest` learner with distribution alignment (`--plus`)."""
    return cfg.algorithm["name"] == "crest" and bool(cfg.algorithm.get("distribution_alignment"))


def generation_config(base: Config, generation: int, settings: Settings) -> Config:
    """The config of one generation: for the `crest` learner, its t_g and the class profile."""
    cfg = copy.deepcopy(base)
    if cfg.algorithm["name"] == "crest":
        t = generation_temperature(generation, settings.generations, settings.final_temperature)
        cfg.algorithm.update(
            da_temperature=t if is_plus(cfg) else 1.0, imbalance_ratio=cfg.data.imbalance_ratio
        )
    return cfg


def candidates(data: SSLData) -> Tensor:
    """Pool positions of the unlabeled images that are not labeled (the code's unlabeled_idx)."""
    return data.unlabeled_idx[~torch.isin(data.unlabeled_idx, data.labeled_idx)]


def with_picks(data: SSLData, positions: Tensor, labels: Tensor) -> SSLData:
    """`data` whose labeled set also holds the picked pool images, labeled with `labels`.

    The picks are appended to the pool as copies carrying the pseudo-labels, so the original
    images keep their true targets (used only to monitor pseudo-label accuracy).
    """
    start = len(data.images)
    return dataclasses.replace(
        data,
        images=torch.cat([data.images, data.images[positions]]),
        targets=torch.cat([data.targets, labels.to(data.targets.dtype)]),
        labeled_idx=torch.cat([data.labeled_idx, torch.arange(start, start + len(positions))]),
    )


def build_generation(cfg: Config, gen_dir: Path, picks: dict[str, Tensor] | None) -> Trainer:
    """The trainer of one generation: the original split, extended with `picks` if given.

    The learner's class prior stays the original labeled class counts.
    """
    data = prepare_data(cfg)
    prior = data.labeled_class_counts()
    if picks is not None:
        data = with_picks(data, picks["pool_index"], picks["label"])
    return build_run(cfg, data, gen_dir, labeled_class_counts=prior)


def rebalanced_picks(
    trainer: Trainer, data: SSLData, imbalance_ratio: float | None, alpha: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Class-rebalancing sampling with the EMA model's predictions (no augmentation).

    Returns:
        The picks' pool positions and pseudo-labels, and the predicted class of every
        candidate image.
    """
    pool = candidates(data)
    if len(pool) == 0:  # every image is labeled: nothing to pick
        return pool, pool, pool
    logits = predict_logits(
        trainer.ema.module,
        data.images[pool],
        trainer.settings.eval_batch_size,
        trainer.device,
        trainer.runtime.channels_last,
        trainer.runtime.autocast_dtype,
    )
    profile = class_profile(trainer.algorithm.info.labeled_class_counts, imbalance_ratio)
    rates = sampling_rates(profile, alpha)
    chosen, labels = pick_pseudo_labels(logits.softmax(dim=-1), rates)
    return pool[chosen], labels, logits.argmax(dim=1)


def pick_statistics(
    data: SSLData, positions: Tensor, labels: Tensor, predicted: Tensor
) -> dict[str, Any]:
    """Predicted and picked images per class, and the accuracy of the picks (known classes)."""
    truth = data.targets[positions]
    known = truth >= 0
    return {
        "predicted_per_class": torch.bincount(predicted, minlength=data.num_classes).tolist(),
        "picked_per_class": torch.bincount(labels, minlength=data.num_classes).tolist(),
        "picked_accuracy": float((labels == truth)[known].float().mean()) if known.any() else None,
    }


def train_generation(
    cfg: Config, gen_dir: Path, picks: dict[str, Tensor] | None, settings: Settings
) -> None:
    """Trains (or finishes) one generation, then writes its picks and summary.json."""
    make_folder(gen_dir, "choose another --out")
    trainer = build_generation(cfg, gen_dir, picks)
    data = trainer.data
    start_trainer(trainer, gen_dir, resume=False)
    write_yaml(gen_dir / "config.yaml", cfg.to_dict())
    result = trainer.fit()

    positions, labels, predicted = rebalanced_picks(
        trainer, data, cfg.data.imbalance_ratio, settings.alpha
    )
    picked = {"pool_index": positions.tolist(), "label": labels.tolist()}
    write_json(gen_dir / "pseudo_labels.json", picked)
    summary = {
        "algorithm": cfg.algorithm["name"],
        "dataset": cfg.data.name,
        "num_labels": cfg.data.num_labels,
        "seed": cfg.train.seed,
        "da_temperature": cfg.algorithm.get("da_temperature"),
        **result,
        "per_class_accuracy": trainer.history[-1].get("per_class_accuracy"),
        **pick_statistics(data, positions, labels, predicted),
    }
    write_json(gen_dir / "summary.json", summary)


def load_picks(gen_dir: Path) -> dict[str, Tensor]:
    """The picks a finished generation wrote."""
    path = gen_dir / "pseudo_labels.json"
    if not path.is_file():
        raise UserError(f"{path} is missing: delete {gen_dir}/summary.json to redo its picking")
    saved = json.loads(path.read_text())
    return {key: torch.tensor(saved[key], dtype=torch.int64) for key in ("pool_index", "label")}


def run_generations(base: Config, run_dir: Path, settings: Settings) -> dict[str, Any]:
    """Trains the generations not finished yet; writes and returns RUN_DIR/summary.json."""
    picks = None
    generations = []
    for generation in range(settings.generations):
        gen_dir = run_dir / f"gen{generation}"
        if (gen_dir / "summary.json").is_file():
            log.info("generation %d is finished: %s", generation, gen_dir)
        else:
            log.info("generation %d of %d -> %s", generation, settings.generations, gen_dir)
            train_generation(
                generation_config(base, generation, settings), gen_dir, picks, settings
            )
        result = json.loads((gen_dir / "summary.json").read_text())
        generations.append({"generation": generation, **{k: result[k] for k in GENERATION_KEYS}})
        picks = load_picks(gen_dir)
    final = generations[-1]
    summary = {
        "method": "crest+" if is_plus(base) else "crest",
        **dataclasses.asdict(settings),
        **{k: result[k] for k in ("algorithm", "dataset", "num_labels", "seed")},
        **{k: final[k] for k in FINAL_KEYS},
        "generation_results": generations,
    }
    write_json(run_dir / "summary.json", summary)
    return summary


# ============ command line ============
def add_parser(commands: argparse._SubParsersAction) -> None:
    """Registers `semisup crest`: the `semisup train` flags plus the generation settings."""
    parser = commands.add_parser(
        "crest",
        parents=[commands.choices["train"]],  # every `semisup train` flag, kept in step
        conflict_handler="resolve",
        help="CReST/CReST+: self-training over generations with class-rebalancing sampling",
        description=(
            "Trains G generations (each a fresh run on the labeled set plus the previous "
            "generation's rebalanced pseudo-labels) into RUN_DIR/gen<g>/, then writes "
            "RUN_DIR/summary.json. train.steps is per generation. --resume continues where "
            "the run stopped."
        ),
    )
    parser.add_argument("--generations", type=int, help="G, number of generations (default 6)")
    parser.add_argument(
        "--plus",
        action="store_true",
        help="CReST+: progressive distribution alignment (algorithm.distribution_alignment=true)",
    )
    parser.add_argument("--alpha", type=float, help="sampling exponent α: rate^(1/α) (default 3)")
    parser.add_argument(
        "--final-temperature",
        type=float,
        help="CReST+: alignment temperature of the last generation (default 0.5)",
    )
    parser.set_defaults(handler=run)


def resolve_settings(args: argparse.Namespace, saved: dict[str, Any] | None) -> Settings:
    """The flags over the saved settings (resume: they must agree) over the defaults."""
    given = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(Settings)
        if getattr(args, f.name) is not None
    }
    if saved is not None:
        changed = sorted(k for k, v in given.items() if saved.get(k) != v)
        if changed:
            raise UserError(
                f"cannot change --{changed[0].replace('_', '-')} when resuming (the run uses "
                f"{saved[changed[0]]}); start a new run with another --out instead"
            )
        given = saved
    settings = Settings(**given)
    if settings.generations < 1:
        raise UserError(f"--generations must be at least 1, got {settings.generations}")
    check("--alpha", settings.alpha, POSITIVE)
    check("--final-temperature", settings.final_temperature, POSITIVE)
    return settings


def run(args: argparse.Namespace) -> int:
    """`semisup crest`: starts or resumes a CReST run and prints the final generation's result."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError("semisup crest runs in one process; start it without torchrun")
    overrides = flag_overrides(args)
    if args.plus:
        overrides["algorithm.distribution_alignment"] = True
    if args.resume:
        if not args.out:
            raise UserError("--resume needs --out RUN_DIR, the CReST run to continue")
        run_dir = Path(args.out)
        base = resume_config(run_dir, overrides)
        settings = resolve_settings(args, read_settings(run_dir / "crest.yaml"))
    else:
        if "algorithm.name" not in {**(read_yaml(args.config) if args.config else {}), **overrides}:
            overrides["algorithm.name"] = "crest"
        base = build_config(args.config, overrides)
        managed = sorted(set(base.algorithm) & set(MANAGED_KEYS))
        if managed:
            raise UserError(
                f"algorithm.{managed[0]} is set by semisup crest in every generation (use "
                "--plus, --final-temperature and data.imbalance_ratio)"
            )
        run_dir = Path(args.out) if args.out else default_run_dir(base)
        if args.plus and base.algorithm["name"] != "crest":
            raise UserError("--plus (progressive distribution alignment) needs algorithm crest")
        settings = resolve_settings(args, None)
    with claim_run_dir(run_dir, args.resume, marker="crest.yaml"):
        if not args.resume:
            write_yaml(run_dir / "config.yaml", base.to_dict())
            write_yaml(run_dir / "crest.yaml", dataclasses.asdict(settings))
        summary = run_generations(base, run_dir, settings)
    print(f"run saved in {run_dir}")
    if summary["test_accuracy"] is not None:
        print(
            f"{summary['method']} ({settings.generations} generations): final test accuracy "
            f"{100 * summary['test_accuracy']:.2f}% (EMA model), median of the last 20 "
            f"evaluations {100 * summary['median_last20_accuracy']:.2f}%"
        )
    return 0


def read_settings(path: Path) -> dict[str, Any]:
    """The generation settings a CReST run saved, or a UserError saying why they are unusable."""
    try:
        saved = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise UserError(f"cannot resume the CReST run: {path} is unreadable ({e})") from e
    if not isinstance(saved, dict) or set(saved) - {f.name for f in dataclasses.fields(Settings)}:
        raise UserError(f"cannot resume the CReST run: {path} does not hold its settings")
    return saved
