"""Mean Teacher (Tarvainen & Valpola, NeurIPS 2017, https://arxiv.org/abs/1703.01780).

The Π-model with a better target: the prediction of a *teacher* whose weights are an exponential
moving average (EMA) of the student's. Follows google-research/fixmatch `mean_teacher.py` (the
MixMatch/FixMatch baseline): consistency weight 50 ramped up linearly over the first 40 % of
training, MSE between softmax outputs, teacher EMA 0.999, the teacher run with training-mode
BatchNorm (batch statistics) on its own view; SGD + Nesterov 0.03, cosine decay, L2 5e-4; μ = 1
(the mixmatch repo's copy used Adam 0.002, constant, decoupled decay 0.02). The paper used a
sigmoid ramp-up exp(−5(1 − t)²) over 80 epochs instead.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from semisup.algorithms.base import Algorithm, TaskInfo
from semisup.algorithms.pimodel import consistency_outputs
from semisup.algorithms.registry import ALGORITHMS
from semisup.engine.ema import ModelEMA
from semisup.engine.schedules import linear_rampup
from semisup.models.bn import frozen_running_stats


@ALGORITHMS.register("meanteacher")
class MeanTeacher(Algorithm):
    """Mean Teacher (Tarvainen & Valpola, NeurIPS 2017): Π-model with an EMA teacher's target.

    J = CE(x, y) + w(t)·(1/C)‖f(ũ₁; θ') − f(ũ₂; θ)‖², θ' the teacher's weights.

    θ' ← α·θ' + (1 − α)·θ after every optimizer step (`on_step_end`). The teacher is a submodule,
    so checkpoints hold it; it gets no gradient. It is separate from the trainer's EMA (used for
    evaluation), though both follow the same rule and, with the papers' 0.999, the same weights.

    Args:
        model: the classifier (the student).
        info: data/run facts.
        lambda_u: w_max, the consistency weight after ramp-up (`consistency_weight`).
        rampup_fraction: fraction of training over which w(t) rises linearly from 0 to w_max.
        ema_decay: α, the teacher's EMA decay.
        mu: μ, unlabeled images per labeled image in a batch.
    """

    def __init__(
        self,
        model: nn.Module,
        info: TaskInfo,
        lambda_u: float = 50.0,
        rampup_fraction: float = 0.4,
        ema_decay: float = 0.999,
        mu: int = 1,
    ) -> None:
        super().__init__(model, info)
        self.lambda_u = lambda_u
        self.rampup_steps = round(rampup_fraction * info.total_steps)
        self.mu = mu
        self.views = {"x": "weak", "u_w0": "weak", "u_w1": "weak"}
        self.teacher_ema = ModelEMA(model, ema_decay)
        # Registered, so state_dict() holds the teacher; in training mode like the algorithm, so
        # it normalises with batch statistics (`training=True` in the code).
        self.teacher = self.teacher_ema.module.train(self.training)

    def forward(self, batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        logits_x = self.model(batch["x"])  # the only call that updates BN running statistics
        with torch.no_grad():
            probs_target = self.teacher(batch["u_w0"]).float().softmax(dim=-1)
        with frozen_running_stats(self.model):
            logits_u = self.model(batch["u_w1"])
        weight = self.lambda_u * linear_rampup(step, self.rampup_steps)
        return consistency_outputs(logits_x, batch["y"], logits_u, probs_target, weight)

    @torch.no_grad()
    def on_step_end(self, batch: dict[str, Tensor], out: dict[str, Tensor], step: int) -> None:
        self.teacher_ema.update(self.model)
