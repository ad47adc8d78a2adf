"""The supervised-only baseline: labeled data alone, same model, augmentation and schedule."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from semisup.algorithms.base import Algorithm, TaskInfo
from semisup.algorithms.registry import ALGORITHMS


@ALGORITHMS.register("supervised")
class Supervised(Algorithm):
    """Cross-entropy on weakly augmented labeled images; the lower bound every table reports."""

    def __init__(self, model: nn.Module, info: TaskInfo) -> None:
        super().__init__(model, info)
        self.views = {"x": "weak"}
        self.mu = 0

    def forward(self, batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        loss = F.cross_entropy(self.model(batch["x"]), batch["y"])
        return {"loss": loss, "loss_x": loss.detach()}
