"""Trainer callbacks: the `Callback` protocol and the CTAugment feedback loop.

The CTAugment feedback loop (ReMixMatch §3.2.2, FixMatch §3.2, google-research/fixmatch
`cta/lib/train.py`) runs after every optimizer step: the labeled batch, weakly augmented, gets a
*probe* policy (uniform levels, rates unused); the **EMA** model (BatchNorm in inference mode)
classifies the probes, and every (op, level) of each probe policy moves its bin's rate towards
that probe's proximity p_y.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from semisup.augment.ctaugment import CTAugment, proximity
from semisup.augment.policy import Policy
from semisup.distributed import all_gather_cat
from semisup.engine.batches import BatchSource, RawBatch
from semisup.engine.runtime import Runtime
from semisup.models.inputs import input_normalization, to_model_input
from semisup.modules.ema import ModelEMA


class StepContext(Protocol):
    """What a callback sees of the trainer."""

    batches: BatchSource
    ema: ModelEMA
    runtime: Runtime


class Callback(Protocol):
    """Runs after every optimizer step; its state is checkpointed under its `name`."""

    name: str

    def on_step_end(self, trainer: StepContext, raw: RawBatch, step: int) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class CTAFeedback:
    """Trainer callback that updates a CTAugment's rates from EMA predictions on probes.

    Args:
        augmenter: the CTAugment whose rates the strong views sample from.
    """

    name = "ctaugment"

    def __init__(self, augmenter: CTAugment) -> None:
        self.augmenter = augmenter

    @torch.no_grad()
    def on_step_end(self, trainer: StepContext, raw: RawBatch, step: int) -> None:
        generator = trainer.batches.generator
        weak = trainer.batches.views.weak(raw.x, generator)
        policy = self.augmenter.probe_policy(len(weak), generator)
        probes = self.augmenter.apply(weak, policy, generator)
        model = trainer.ema.module
        x = to_model_input(probes, trainer.runtime.channels_last, input_normalization(model))
        with trainer.runtime.autocast():
            logits = model(x)
        probs = logits.float().softmax(dim=1)
        # Every rank applies every rank's updates, in rank order, so the rates stay identical.
        everyone = Policy(all_gather_cat(policy.ops), all_gather_cat(policy.levels))
        self.augmenter.update(everyone, all_gather_cat(proximity(probs, raw.y)))

    def state_dict(self) -> dict[str, Any]:
        return self.augmenter.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.augmenter.load_state_dict(state)
