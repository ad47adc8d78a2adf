"""The `Algorithm` contract: a module that maps one training batch to a dict of losses.

Naming glossary used by every algorithm (STYLE.md §3.3):

| name | meaning |
|---|---|
| `x`, `y` | labeled images (B, C, H, W) and integer labels (B,) |
| `x_idx` | index of each labeled image within the labeled set (B,) |
| `u_w`, `u_s` (`u_s0`, `u_s1`, …) | weak / strong views of the unlabeled images (μB, C, H, W) |
| `u_y` | hidden true labels of the unlabeled images, −1 if unknown or labeled: monitoring only |
| `logits_x`, `logits_u_w`, `logits_u_s` | model outputs for those views |
| `probs_*`, `targets_u`, `pseudo_u` | softmax outputs, soft targets, hard pseudo-labels |
| `mask` | per-sample float weights (N,) |
| `loss_x`, `loss_u`, `loss` | supervised, unsupervised, total |
| `step` | optimizer steps done before this one (0-based) |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from semisup.algorithms.presets import FIXMATCH_SGD
from semisup.data.copies import UnlabeledCopies
from semisup.math import prior


@dataclass(frozen=True)
class TaskInfo:
    """What an algorithm may need to know about the data and the run.

    Attributes:
        num_classes: number of classes.
        num_labeled: size of the labeled set (memory banks are indexed by labeled position).
        labeled_class_counts: labeled images per class (class priors for DA / logit adjustment).
        total_steps: optimizer steps in the whole run (for schedules defined as fractions).
        num_unlabeled: size U of the unlabeled set (RealMix's Extend: `u_idx // U` is the copy);
            0 where unknown (unit tests that build no data).
    """

    num_classes: int
    num_labeled: int
    labeled_class_counts: tuple[int, ...]
    total_steps: int
    num_unlabeled: int = 0


class Algorithm(nn.Module):
    """Maps a training batch to named scalar tensors; the trainer backpropagates `out["loss"]`.

    Contract:
        - Owns the model plus any heads, teachers and banks (as submodules or buffers), so
          `state_dict()` holds all of its state.
        - Declares the image views it needs in `self.views`: batch key → "weak", "strong" or
          "none". Keys starting with "x" are built from the labeled batch, keys starting with
          "u" from the unlabeled batch. The trainer also passes "y", "x_idx", "u_idx", "u_y".
        - Declares `self.mu`, the unlabeled batch size as a multiple of the labeled one
          (0: no unlabeled data).
        - Never calls backward or the optimizer, never moves devices, logs or writes files.
        - Returns `loss` plus detached monitoring values, every one of them logged: scalars
          (`loss_x`, `loss_u`, `mask_rate`, `pseudo_label_accuracy`, ...) and (C,) vectors
          such as `unlabeled_distribution`, the mean predicted class distribution on the
          unlabeled batch. Tensors that only `on_step_end` needs (embeddings for a bank, a
          refined table) go under `out["state"]`, a dict that is never logged.
        - May set `self.unlabeled_copies` (`semisup.data.copies`) to have the trainer draw
          unlabeled images from an expanded set (RealMix's Extend).
        - Hyperparameters are keyword arguments of `__init__` with the paper's defaults; that
          signature is the only place they are defined.

    `optim_defaults` holds the optimizer settings of the algorithm's original code and
    `augment_defaults` its CTAugment variant; the config's `optim.*` / `augment.*` keys override
    them. The base defaults are FixMatch's (SGD + Nesterov, cosine; fixmatch-repo CTAugment).
    """

    optim_defaults: ClassVar[dict[str, Any]] = FIXMATCH_SGD
    augment_defaults: ClassVar[dict[str, Any]] = {
        "cta_sampling": "fixmatch",
        "cta_rescale": "fixmatch",
    }

    # Hyperparameters that count optimizer steps of the papers' 2^20-step runs (ramp-ups,
    # warm-ups). With `train.scale_schedules` a default left unset is scaled to the run's length.
    step_hyperparameters: ClassVar[tuple[str, ...]] = ()

    # Set True where some parameters get no gradient in some steps (DDP must then search for
    # them every step, which costs time).
    ddp_find_unused_parameters: ClassVar[bool] = False

    def __init__(self, model: nn.Module, info: TaskInfo) -> None:
        super().__init__()
        self.model = model
        self.info = info
        self.num_classes = info.num_classes
        self.views: dict[str, str] = {"x": "weak"}
        self.mu: int = 0
        # An expansion of the unlabeled set the trainer draws from instead (RealMix's Extend).
        self.unlabeled_copies: UnlabeledCopies | None = None

    def forward(self, batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        """Computes the losses for one batch. Subclasses implement this."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    @torch.no_grad()
    def on_step_end(self, batch: dict[str, Tensor], out: dict[str, Tensor], step: int) -> None:
        """Updates internal state (banks, running distributions) after the optimizer step."""

    def logit_adjustment(self) -> Tensor | None:
        """A (C,) vector subtracted from the logits for "logit-adjusted" test accuracy, or None.

        When not None the trainer also reports `test_accuracy_la` / `test_balanced_accuracy_la`
        (e.g. log p_data for post-hoc logit adjustment, UDAL's LA(inf)).
        """
        return None


class PriorTracking:
    """Mixin of the long-tail algorithms (FixMatch + DA, CReST, UDAL): p_data, p̂ and LA (Inf).

    p_data is the labeled class prior, p̂ an estimate of the model's mean unlabeled prediction,
    and "LA (Inf)" post-hoc logit adjustment of the test logits by −log p_data.

    List it before `Algorithm` among the bases so its `on_step_end` / `logit_adjustment` win.
    """

    p_data: Tensor
    p_model: nn.Module
    la_inference: bool

    def track_priors(self, info: TaskInfo, p_model: nn.Module, la_inference: bool) -> None:
        """p_data ← the labeled class histogram (a buffer); p̂ ← `p_model` (a submodule)."""
        assert isinstance(self, nn.Module)
        self.register_buffer("p_data", prior.class_prior(info.labeled_class_counts))
        self.p_model = p_model
        self.la_inference = la_inference

    @torch.no_grad()
    def on_step_end(self, batch: dict[str, Tensor], out: dict[str, Tensor], step: int) -> None:
        """Pushes the un-aligned mean weak-view prediction (or label guess) into p̂."""
        self.p_model.update(out["unlabeled_distribution"])

    def logit_adjustment(self) -> Tensor | None:
        """The post-hoc "LA (Inf)" adjustment: log p_data (None when switched off)."""
        return self.p_data.log() if self.la_inference else None
