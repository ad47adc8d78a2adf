"""Batched augmentation policies: which op, at which level, for each image and each depth step.

A policy is plain tensors, so it can be all-gathered across distributed ranks, stored with a
batch, and replayed. CTAugment and RandAugment both sample policies and apply them here, one
batched op call per (depth step, op) group rather than one call per image.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from semisup.augment.ops import Op

MAX_PARAMS = 2  # the most parameters an op has (rescale: scale and method)


@dataclass(frozen=True, eq=False)
class Policy:
    """A per-image sequence of ops and their parameter values for a batch of N images.

    Attributes:
        ops: (N, D) int64, indices into an ordered op table; step d of image i applies
            `ops[i, d]`.
        levels: (N, D, 2) float64, the op's parameter values v in [0, 1]; slots past the op's
            parameter count are 0. float64 so that a level sampled as (j + U) / n never rounds
            up into bin j + 1 (which float32 does for U within ~1e-7 of 1).
    """

    ops: Tensor
    levels: Tensor

    def __post_init__(self) -> None:
        if self.ops.dim() != 2 or self.levels.shape != (*self.ops.shape, MAX_PARAMS):
            raise ValueError(
                f"a Policy needs ops (N, D) and levels (N, D, {MAX_PARAMS}); got ops "
                f"{tuple(self.ops.shape)} and levels {tuple(self.levels.shape)}"
            )

    def __len__(self) -> int:
        return self.ops.shape[0]

    @property
    def depth(self) -> int:
        """The number of ops applied to each image, D."""
        return self.ops.shape[1]

    def to(self, device: torch.device | str) -> Policy:
        """The same policy with both tensors on `device`."""
        return Policy(self.ops.to(device), self.levels.to(device))


def apply_policy(
    images: Tensor,
    policy: Policy,
    op_table: Mapping[str, Op],
    generator: torch.Generator | None = None,
) -> Tensor:
    """Applies each image's ops in order, calling every op once per depth step on its images.

    Args:
        images: (N, C, H, W) uint8 on any device.
        policy: a policy for the N images; `policy.ops` indexes `list(op_table)`.
        op_table: the ordered op table the policy was sampled from.
        generator: passed to the ops (only cutout draws random numbers); on `images.device`.

    Returns:
        (N, C, H, W) uint8 on `images.device`, image i augmented by its own policy.
    """
    if len(policy) != images.shape[0]:
        raise ValueError(f"a policy for {len(policy)} images cannot augment {images.shape[0]}")
    ops = list(op_table.values())
    op_ids = policy.ops.to(images.device)
    levels = policy.levels.to(images.device)
    for step in range(policy.depth):
        out = torch.empty_like(images)
        for op_id in torch.unique(op_ids[:, step]).tolist():
            where = (op_ids[:, step] == op_id).nonzero().squeeze(1)
            op = ops[op_id]
            level = _op_level(levels[where, step], len(op.bins))
            out[where] = op.fn(images[where], level, generator=generator)
        images = out
    return images


def generator_device(generator: torch.Generator | None) -> torch.device:
    """Where policies drawn with `generator` live: its device, or the CPU without one."""
    return generator.device if generator is not None else torch.device("cpu")


def _op_level(level_slots: Tensor, num_params: int) -> Tensor:
    """An op's `level` argument: (M,) for ops with at most one parameter, else (M, params)."""
    if num_params <= 1:
        return level_slots[:, 0]
    return level_slots[:, :num_params]
