"""An endless stream of random index batches with a checkpointable position."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class EpochSampler:
    """Draws batches from a fresh random permutation each epoch.

    Like a shuffled, repeated data set: batches may straddle epochs, and every item is drawn
    once per pass.

    All randomness comes from the sampler's own generator, and `state_dict` holds the generator
    state, the current permutation and the position in it, so a resumed run draws exactly the
    batches an uninterrupted run would.

    Args:
        indices: the items to draw from (e.g. the labeled pool indices).
        seed: seeds the sampler's generator.
    """

    def __init__(self, indices: Tensor, seed: int) -> None:
        if len(indices) == 0:
            raise ValueError("cannot sample from an empty index set")
        self.indices = indices
        self.generator = torch.Generator().manual_seed(seed)
        self.order = self._permutation()
        self.position = 0

    def _permutation(self) -> Tensor:
        return self.indices[torch.randperm(len(self.indices), generator=self.generator)]

    def next(self, batch_size: int) -> Tensor:
        """The next `batch_size` indices (crossing into new epochs as needed)."""
        parts = []
        while batch_size > 0:
            if self.position == len(self.order):
                self.order, self.position = self._permutation(), 0
            take = min(batch_size, len(self.order) - self.position)
            parts.append(self.order[self.position : self.position + take])
            self.position += take
            batch_size -= take
        return torch.cat(parts)

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.get_state(),
            "order": self.order.clone(),
            "position": self.position,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.order = state["order"].clone()
        self.position = int(state["position"])
