"""BatchNorm control: forwards that use batch statistics but leave running statistics alone.

The Google SSL code runs several training-mode forward calls per step and keeps the running
(moving-average) BatchNorm updates of only one of them (MixMatch: the first interleaved call,
ReMixMatch: the last; docs/algorithms.md#batchnorm). In PyTorch every training-mode call updates the
running statistics, so the other calls run inside `frozen_running_stats`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


@contextmanager
def frozen_running_stats(module: nn.Module) -> Iterator[None]:
    """Within the block, BatchNorm layers of `module` do not update their running statistics.

    Training-mode layers still normalise with the statistics of each call's batch (as TF's
    `training=True` does whether or not its update ops run); evaluation-mode layers still use the
    running statistics. Implemented by switching `track_running_stats` off for the block, so the
    running mean, variance and `num_batches_tracked` stay bit-identical (no momentum-0 arithmetic).

    Example:
        >>> with frozen_running_stats(model):
        ...     logits = model(u_w)  # batch statistics, running statistics untouched
    """
    layers = [m for m in module.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    for layer in layers:
        layer.track_running_stats = False
    try:
        yield
    finally:
        for layer in layers:
            layer.track_running_stats = True
