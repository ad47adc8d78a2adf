"""Model calls shared by several algorithms: one call over concatenated views, interleaved calls.

The Google SSL code's BatchNorm conventions live here: FixMatch's single forward over every
view (shared batch statistics, one running-statistics update) and MixMatch/ReMixMatch's
interleaved calls (google-research/mixmatch `libml/layers.py`: `interleave`), where only one
call updates the running statistics (docs/algorithms.md#batchnorm).
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import Tensor, nn

from semisup.math import mixing
from semisup.models import bn


def forward_three_views(
    model: nn.Module, batch: dict[str, Tensor]
) -> tuple[Tensor, Tensor, Tensor]:
    """FixMatch's single call over concat(x, u_w, u_s): float logits of x, u_w and u_s.

    BatchNorm normalises the three parts with shared batch statistics and updates its running
    statistics once, as in the original code.
    """
    x, u_w, u_s = batch["x"], batch["u_w"], batch["u_s"]
    logits = model(torch.cat([x, u_w, u_s])).float()
    logits_x, logits_u_w, logits_u_s = logits.split([len(x), len(u_w), len(u_s)])
    return logits_x, logits_u_w, logits_u_s


def interleaved_forward(
    model: nn.Module, inputs: Tensor, batch: int, bn_update_call: int
) -> Tensor:
    """Logits of `model` on a pool, computed in interleaved batches of `batch` items.

    Each batch is a separate training-mode call, so BatchNorm normalises it with its own
    statistics; only call number `bn_update_call` (0 = first as MixMatch, −1 = last as ReMixMatch)
    updates the running statistics.

    Args:
        model: the classifier.
        inputs: (groups·batch, ...) the pool, in source order.
        batch: items per forward call.
        bn_update_call: index of the call that updates BatchNorm running statistics.

    Returns:
        (groups·batch, C) logits in the order of `inputs`.
    """
    chunks = mixing.interleave(inputs, batch).split(batch)
    updating = bn_update_call % len(chunks)
    logits = []
    for i, chunk in enumerate(chunks):
        with nullcontext() if i == updating else bn.frozen_running_stats(model):
            logits.append(model(chunk))
    return mixing.interleave(torch.cat(logits), batch)


def mix_and_forward(
    model: nn.Module,
    inputs: list[Tensor],
    targets: list[Tensor],
    beta: float,
    bn_update_call: int,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """MixMatch's "xxy.yxy" step: one MixUp over the pooled sources, then an interleaved forward.

    Args:
        model: the classifier.
        inputs: equal-sized batches (B, ...): labeled first, then the unlabeled views.
        targets: their (B, C) target distributions (one-hot labels, label guesses).
        beta: MixUp β.
        bn_update_call: which interleaved call updates BatchNorm running statistics.
        generator: randomness for `mixup_draws`.

    Returns:
        (logits, mixed targets), both (len(inputs)·B, C) in pool order (labeled rows first);
        logits in float32.
    """
    mixed_inputs, mixed_targets = mixing.mixup(
        torch.cat(inputs), torch.cat(targets), beta, generator
    )
    logits = interleaved_forward(model, mixed_inputs, len(inputs[0]), bn_update_call)
    return logits.float(), mixed_targets
