"""Batch sourcing: each step's labeled and unlabeled images, gathered and made into views."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from semisup.augment.views import ViewMaker
from semisup.data.base import UNKNOWN
from semisup.data.copies import UnlabeledCopies
from semisup.data.sampler import EpochSampler
from semisup.data.ssl import SSLData
from semisup.engine.runtime import Runtime
from semisup.models.inputs import Normalization, to_model_input

log = logging.getLogger("semisup")

# The training pool moves to the GPU when it takes at most this share of the GPU's free memory.
POOL_GPU_SHARE = 0.5


def place_pool(images: Tensor, device: torch.device) -> Tensor:
    """Where the trainer keeps the training pool and gathers each batch.

    On a CUDA device, the pool moves there when it fits in POOL_GPU_SHARE of the free memory;
    a larger one (e.g. a folder data set memory-mapped from its cache) stays on the host, and
    each batch is gathered there and copied over. On a CPU the pool is never copied: a
    memory-mapped pool is read batch by batch from the page cache.
    """
    if device.type != "cuda":
        return images
    free, _ = torch.cuda.mem_get_info(device)
    if images.nbytes <= free * POOL_GPU_SHARE:
        return images.to(device)
    log.info(
        "keeping the %.1f GB training pool in host memory (the GPU has %.1f GB free); each batch "
        "is copied to the GPU",
        images.nbytes / 1e9,
        free / 1e9,
    )
    return images


@dataclass
class RawBatch:
    """Indices and uint8 images of one step, before views are made."""

    x_idx: Tensor  # positions in the labeled set
    x: Tensor
    y: Tensor
    u_idx: Tensor | None  # positions in the unlabeled set (or its copies)
    u: Tensor | None
    u_y: Tensor | None


class BatchSource:
    """Draws every step's labeled and unlabeled batch and makes the algorithm's views.

    Every rank draws the same global batch (identical samplers) and keeps its own contiguous
    share, so ranks never see duplicated samples within a step; each rank augments its share
    with its own stream of random numbers (`generator`).

    Args:
        data: the split.
        views: builds views from raw uint8 batches.
        runtime: device and memory format.
        batch_size: labeled images per step, over all ranks.
        mu: unlabeled images per labeled image (0: no unlabeled batch).
        copies: an expansion of the unlabeled set to draw from instead (RealMix's Extend).
        seed: the run's seed.
        rank: this process's rank.
        world_size: number of processes.
        normalization: the model's input normalization (None: [−1, 1]).
    """

    def __init__(
        self,
        data: SSLData,
        views: ViewMaker,
        runtime: Runtime,
        batch_size: int,
        mu: int,
        copies: UnlabeledCopies | None,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        normalization: Normalization | None = None,
    ) -> None:
        self.data, self.views, self.runtime, self.copies = data, views, runtime, copies
        self.batch_size, self.mu, self.rank, self.world_size = batch_size, mu, rank, world_size
        self.normalization = normalization
        self.device = runtime.device
        self.images = place_pool(data.images, self.device)
        self.targets = data.targets.to(self.device)
        # The unlabeled images' true classes, for monitoring pseudo-labels: unknown for the
        # labeled images among them, whose "pseudo-label accuracy" would only measure fitting.
        self.hidden_targets = self.targets.clone()
        self.hidden_targets[data.labeled_idx.to(self.device)] = UNKNOWN
        self.labeled_sampler = EpochSampler(torch.arange(len(data.labeled_idx)), seed + 1)
        num_unlabeled = copies.size if copies is not None else len(data.unlabeled_idx)
        self.unlabeled_sampler = EpochSampler(torch.arange(num_unlabeled), seed + 2)
        self.generator = torch.Generator(self.device).manual_seed(seed + 3 + 1000 * rank)

    def next_raw(self) -> RawBatch:
        """Draws the next labeled and unlabeled index batches and gathers their images."""
        x_idx = self._my_share(self.labeled_sampler.next(self.batch_size))
        x_pool = self.data.labeled_idx[x_idx]
        u_idx = u_pool = u = None
        if self.mu > 0:
            u_idx = self._my_share(self.unlabeled_sampler.next(self.mu * self.batch_size))
            u_pool = self.data.unlabeled_idx[u_idx % len(self.data.unlabeled_idx)]
            u_idx = u_idx.to(self.device)
            u = self._gather(u_pool)
            if self.copies is not None:
                u = self.copies(u, u_idx)
        return RawBatch(
            x_idx=x_idx.to(self.device),
            x=self._gather(x_pool),
            y=self.targets[x_pool.to(self.device)],
            u_idx=u_idx,
            u=u,
            u_y=None if u_pool is None else self.hidden_targets[u_pool.to(self.device)],
        )

    def _my_share(self, global_idx: Tensor) -> Tensor:
        return global_idx.view(self.world_size, -1)[self.rank]

    def _gather(self, pool_idx: Tensor) -> Tensor:
        if self.images.device == self.device:
            return self.images[pool_idx.to(self.device)]
        return self.images[pool_idx].pin_memory().to(self.device, non_blocking=True)

    def make_batch(self, raw: RawBatch, view_kinds: dict[str, str]) -> dict[str, Tensor]:
        """The views `view_kinds` asks for, scaled to the model's input, plus labels and indices."""
        views = self.views(view_kinds, raw.x, raw.u, self.generator)
        batch = {
            k: to_model_input(v, self.runtime.channels_last, self.normalization)
            for k, v in views.items()
        }
        batch.update(y=raw.y, x_idx=raw.x_idx)
        if raw.u is not None:
            batch.update(u_idx=raw.u_idx, u_y=raw.u_y)
        return batch

    def state_dict(self) -> dict[str, Any]:
        """The samplers' positions (the augmentation stream is saved with the other RNGs)."""
        return {
            "labeled": self.labeled_sampler.state_dict(),
            "unlabeled": self.unlabeled_sampler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.labeled_sampler.load_state_dict(state["labeled"])
        self.unlabeled_sampler.load_state_dict(state["unlabeled"])
