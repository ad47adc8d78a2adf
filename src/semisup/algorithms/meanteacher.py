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

from semisup.algorithms.base import TaskInfo
from semisup.algorithms.pimodel import PiModel
from semisup.algorithms.registry import ALGORITHMS
from semisup.modules.ema import ModelEMA


@ALGORITHMS.register("meanteacher")
class MeanTeacher(PiModel):
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
        super().__init__(model, info, lambda_u, rampup_fraction, mu)
        self.teacher_ema = ModelEMA(model, ema_decay)
        # Registered, so state_dict() holds the teacher; in training mode like the algorithm, so
        # it normalises with batch statistics (`training=True` in the code).
        self.teacher = self.teacher_ema.module.train(self.training)

    @torch.no_grad()
    def consistency_target(self, u: Tensor) -> Tensor:
        """The teacher's softmax on the first view (no gradient)."""
        return self.teacher(u).float().softmax(dim=-1)

    @torch.no_grad()
    def on_step_end(self, batch: dict[str, Tensor], out: dict[str, Tensor], step: int) -> None:
        """θ' ← α·θ' + (1 − α)·θ."""
        self.teacher_ema.update(self.model)
