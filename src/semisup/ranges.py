"""The valid range of every numeric option, from what the option means in the papers.

Checked when the config is built (`semisup.config`), so an out-of-range value is one clear
error line before any data is read or any tensor made: thresholds and probabilities lie in
[0, 1], decays and momenta in [0, 1) (1 would freeze what they average), rates, temperatures
and scales are positive, sizes and counts at least 1, seeds in NumPy's 0..2**32 − 1. Every
float must also be finite (no NaN or infinity).

`FIELD_RANGES` covers the fixed sections by dotted key. The algorithm and model keyword
arguments are covered by parameter name (`KWARG_RANGES`), since the same name means the same
thing across algorithms, with `KWARG_OVERRIDES` for the few that differ; their defaults stay
in the constructors' signatures alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from semisup.errors import UserError


@dataclass(frozen=True)
class Range:
    """A closed or half-open interval; None leaves a side unbounded.

    Attributes:
        low: the lower bound.
        high: the upper bound.
        low_open: the lower bound itself is excluded.
        high_open: the upper bound itself is excluded.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def contains(self, value: float) -> bool:
        """Whether `value` lies in the range."""
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or not (
            value > self.high or (self.high_open and value == self.high)
        )

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"in {left}{_number(self.low)}, {_number(self.high)}{right}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {_number(self.low)}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {_number(self.high)}"
        return "finite"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


UNIT = Range(0, 1)  # probabilities, thresholds, fractions, mixing weights
DECAY = Range(0, 1, high_open=True)  # momenta and decays of moving averages
POSITIVE = Range(0, low_open=True)  # rates, temperatures, scales
NONNEGATIVE = Range(0)  # loss weights, floors, step counts that may be 0
COUNT = Range(1)  # sizes and counts
SEED = Range(0, 2**32 - 1)  # what numpy.random.seed accepts

FIELD_RANGES: dict[str, Range] = {
    "data.num_labels": COUNT,
    "data.split_seed": SEED,
    "data.imbalance_ratio": Range(1),  # γ = N_1 / N_C; 1 is balanced
    "data.labeled_fraction": Range(0, 1, low_open=True),
    "data.mismatch": Range(0, 100),  # percent of unlabeled images from unseen classes
    "data.image_size": COUNT,
    "data.labeled_head": COUNT,  # DARP's N_1
    "data.unlabeled_head": COUNT,  # DARP's M_1
    "train.steps": COUNT,
    "train.batch_size": COUNT,
    "train.eval_every": COUNT,
    "train.eval_batch_size": COUNT,
    "train.ema_decay": DECAY,
    "train.seed": SEED,
    "train.grad_clip": POSITIVE,
    "train.keep_checkpoints": COUNT,
    "train.supervised_first": Range(0, 1, high_open=True),  # share of the budget; 1: no algorithm
    "train.supervised_steps": NONNEGATIVE,  # 0: no supervised phase
    "optim.lr": POSITIVE,
    "optim.momentum": DECAY,
    "optim.weight_decay": Range(0, 1, high_open=True),
    "optim.cosine_factor": Range(0, 0.5),  # lr · cos(f·π·t/T) stays >= 0 for f <= 1/2
    "optim.warmup_epochs": NONNEGATIVE,
    "optim.schedule_epochs": COUNT,
    "optim.warmup_steps": NONNEGATIVE,  # USB's linear warm-up from 0
    "optim.layer_decay": Range(0, 1, low_open=True),  # lr · decay^(depth from the top)
    "augment.cta_threshold": UNIT,
    "augment.cta_decay": DECAY,
    "augment.cta_depth": COUNT,
    "augment.weak_shift": Range(0, 0.5),  # fraction of the side; reflect padding needs < 1
}

KWARG_RANGES: dict[str, Range] = {
    # confidence thresholds and other probabilities or fractions
    "threshold": UNIT,
    "contrast_threshold": UNIT,
    "alpha": UNIT,  # CoMatch / SimMatch: weight of the model's prediction
    "alpha_min": UNIT,
    "erase_probability": UNIT,
    "ood_fraction": UNIT,
    "rampup_fraction": UNIT,
    "warmup_fraction": UNIT,
    "period_fraction": Range(0, 1, low_open=True),
    "bn_momentum": UNIT,  # PyTorch's BatchNorm momentum (weight of the new statistics)
    # momenta and decays
    "ema_decay": DECAY,
    "bank_momentum": DECAY,
    "teacher_momentum": DECAY,
    "p_model_momentum": DECAY,
    "prior_momentum": DECAY,  # CReST: EMA of the labeled one-hot labels
    "momentum": DECAY,  # FreeMatch / SoftMatch / AdaMatch: EMA of confidences and classes
    # loss weights
    "lambda_u": NONNEGATIVE,
    "lambda_u1": NONNEGATIVE,
    "lambda_in": NONNEGATIVE,
    "lambda_c": NONNEGATIVE,
    "lambda_rot": NONNEGATIVE,
    "entropy_weight": NONNEGATIVE,
    "lambda_entropy": NONNEGATIVE,  # UDA's entropy minimisation
    "lambda_f": NONNEGATIVE,  # FreeMatch's fairness term
    # temperatures, rates, scales
    "temperature": POSITIVE,
    "da_temperature": POSITIVE,
    "beta": POSITIVE,  # the Beta(β, β) of MixUp
    "k": POSITIVE,  # MixMatch-style view counts (int), FixMatch-DA/UDAL schedule rates
    "schedule_k": POSITIVE,
    "eps": POSITIVE,
    "n_sigma": POSITIVE,  # SoftMatch: width of the truncated Gaussian in standard deviations
    "xi": POSITIVE,
    "c": Range(1, low_open=True),  # Dash: C > 1
    "gamma": Range(1, low_open=True),  # Dash: γ > 1
    "rho_min": NONNEGATIVE,
    "imbalance_ratio": Range(1),
    # sizes and counts
    "mu": COUNT,
    "da_length": COUNT,
    "alignment_window": COUNT,
    "window": COUNT,
    "queue_size": COUNT,
    "proj_dim": COUNT,
    "iterations": COUNT,
    "period": COUNT,
    "strong_views": COUNT,
    "extend_copies": COUNT,
    "width": COUNT,
    "start_steps": NONNEGATIVE,
    "rampup_steps": NONNEGATIVE,
    "extend_seed": SEED,
}

# (section name, e.g. an algorithm's registered name) -> parameter -> range, where a parameter
# means something else than the same name in KWARG_RANGES.
KWARG_OVERRIDES: dict[str, dict[str, Range]] = {
    "darp": {"alpha": Range(1)},  # DARP: keep α times more candidates than N̂_k
}


def check(key: str, value: Any, allowed: Range | None) -> Any:
    """Returns `value` if it is not a number, or a finite number in `allowed` (None: any).

    Raises:
        UserError: naming `key`, the range and the value.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{key} must be a finite number, got {value}")
    if allowed is not None and not allowed.contains(value):
        raise UserError(f"{key} must be {allowed}, got {value!r}")
    return value


def kwarg_range(owner: str, name: str) -> Range | None:
    """The range of keyword argument `name` of the algorithm or model registered as `owner`."""
    return KWARG_OVERRIDES.get(owner, {}).get(name, KWARG_RANGES.get(name))
