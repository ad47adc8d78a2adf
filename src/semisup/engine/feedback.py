"""The CTAugment feedback loop, run by the trainer after every optimizer step.

ReMixMatch §3.2.2 / FixMatch §3.2 and google-research/fixmatch `cta/lib/train.py`: the labeled
batch, weakly augmented, gets a *probe* policy (uniform levels, rates unused); the **EMA** model
(BatchNorm in inference mode) classifies the probes, and every (op, level) of each probe policy
moves its bin's rate towards that probe's proximity p_y.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from semisup.augment.ctaugment import CTAugment, proximity
from semisup.augment.policy import Policy
from semisup.distributed import all_gather_cat
from semisup.models.inputs import to_model_input

if TYPE_CHECKING:
    from semisup.engine.trainer import RawBatch, Trainer


class CTAFeedback:
    """Trainer callback that updates a CTAugment's rates from EMA predictions on probes.

    Args:
        augmenter: the CTAugment whose rates the strong views sample from.
    """

    name = "ctaugment"

    def __init__(self, augmenter: CTAugment) -> None:
        self.augmenter = augmenter

    @torch.no_grad()
    def on_step_end(self, trainer: Trainer, raw: RawBatch, step: int) -> None:
        generator = trainer.augment_generator
        weak = trainer.views.weak(raw.x, generator)
        policy = self.augmenter.probe_policy(len(weak), generator)
        probes = self.augmenter.apply(weak, policy, generator)
        model = trainer.ema.module
        dtype = trainer.engine.autocast_dtype
        with torch.autocast(trainer.device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(to_model_input(probes, trainer.engine.channels_last))
        probs = logits.float().softmax(dim=1)
        # Every rank applies every rank's updates, in rank order, so the rates stay identical.
        everyone = Policy(all_gather_cat(policy.ops), all_gather_cat(policy.levels))
        self.augmenter.update(everyone, all_gather_cat(proximity(probs, raw.y)))

    def state_dict(self) -> dict[str, Any]:
        return self.augmenter.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.augmenter.load_state_dict(state)
