"""Distribution alignment (ReMixMatch, Algorithm 1 line 7): scale predictions by p_data / p_model.

Pieces, usable alone:
    `align`: the pure alignment formula.
    `WindowMean`: p_model as the mean of the last N batch-mean predictions (libml
        `PMovingAverage`; ReMixMatch and CReST+ use N = 128, starting uniform).
    `EMADistribution`: an exponential moving average of batch-mean distributions (libml `PData`
        with one-hot labels, momentum 0.999, starting uniform; UDAL-style EMA estimates).
    `DistributionAlignment`: ReMixMatch's combination of the two (or of a window and a fixed
        class prior).
    `EMAAlignment`: USB's `DistAlignEMAHook` (SoftMatch, AdaMatch): EMAs updated before aligning.
All state is in buffers; `forward` reads, `update` or `store` (no grad) writes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semisup import distributed
from semisup.math import thresholds


def align(probs: Tensor, target: Tensor, p_model: Tensor, eps: float = 1e-6) -> Tensor:
    """Normalize(p · (ε + target) / (ε + p_model)), row-wise (remixmatch `guess_label`, use_dm).

    docs/algorithms.md#numeric-checks R1: p = [0.6, 0.3, 0.1], uniform target,
    p_model = [0.5, 0.3, 0.2] → [0.44444491, 0.37037027, 0.18518482].

    Args:
        probs: (N, C) predicted distributions.
        target: (C,) the distribution predictions should follow (p_data).
        p_model: (C,) the running mean of the predictions.
        eps: ε of the code (1e-6), guards empty classes.
    """
    weighted = probs * ((eps + target) / (eps + p_model))
    return weighted / weighted.sum(dim=-1, keepdim=True)


def _batch_mean(probs: Tensor, num_classes: int) -> Tensor:
    """(..., C) distributions → their (C,) mean; a (C,) input is returned as it is."""
    return probs.detach().float().reshape(-1, num_classes).mean(dim=0)


class WindowMean(nn.Module):
    """Mean of the last `window` batch means, renormalised (libml `PMovingAverage`).

    docs/algorithms.md#numeric-checks R2: 128 uniform rows over 3 classes, then one update with
    [0.6, 0.3, 0.1] → [0.33541667, 0.33307292, 0.33151042].

    Args:
        num_classes: C.
        window: number of batch means kept (128 in ReMixMatch / CReST+).
        fill: initial value of every row; None starts uniform (1/C).
    """

    history: Tensor

    def __init__(self, num_classes: int, window: int = 128, fill: float | None = None) -> None:
        super().__init__()
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        value = 1.0 / num_classes if fill is None else fill
        self.register_buffer("history", torch.full((window, num_classes), value))

    def forward(self) -> Tensor:
        """The (C,) current estimate."""
        mean = self.history.mean(dim=0)
        return mean / mean.sum()

    @torch.no_grad()
    def update(self, probs: Tensor) -> None:
        """Drops the oldest row and appends the batch mean of `probs` ((N, C) or (C,)).

        Under DDP the mean is taken over every rank's batch, so all ranks keep the same window.
        """
        entry = distributed.all_reduce_mean(_batch_mean(probs, self.history.shape[1]))
        self.history.copy_(torch.cat([self.history[1:], entry[None]]))


class EMADistribution(nn.Module):
    """d ← m·d + (1 − m)·mean(batch), read renormalised (libml `PData.update`).

    docs/algorithms.md#numeric-checks R3: uniform over 3 classes, one update with one-hot labels
    [0, 0, 1, 2] → [0.3335, 0.33325, 0.33325].

    Args:
        num_classes: C.
        momentum: m (0.999 in the Google code).
        initial: starting distribution (C,); None starts uniform.
    """

    distribution: Tensor

    def __init__(
        self,
        num_classes: int,
        momentum: float = 0.999,
        initial: Sequence[float] | Tensor | None = None,
    ) -> None:
        super().__init__()
        self.momentum = momentum
        start = torch.full((num_classes,), 1.0 / num_classes)
        if initial is not None:
            start = torch.as_tensor(initial, dtype=torch.float32).clone()
            if start.shape != (num_classes,) or (start < 0).any() or start.sum() <= 0:
                raise ValueError(f"initial must be {num_classes} non-negative weights, got {start}")
        self.register_buffer("distribution", start / start.sum())

    def forward(self) -> Tensor:
        """The (C,) current estimate."""
        return self.distribution / self.distribution.sum()

    @torch.no_grad()
    def update(self, probs: Tensor) -> None:
        """Moves towards the batch mean of `probs` ((N, C) distributions or one-hot rows).

        Under DDP the mean is taken over every rank's batch.
        """
        entry = distributed.all_reduce_mean(_batch_mean(probs, self.distribution.shape[0]))
        self.distribution.lerp_(entry, 1.0 - self.momentum)


class DistributionAlignment(nn.Module):
    """ReMixMatch's distribution alignment, q̃ = Normalize(q · p(y) / p̃(y)) (Algorithm 1 line 7).

    p̃(y) (`p_model`) is the mean of the un-aligned batch-mean predictions on unlabeled data over
    the last `window` steps, starting uniform. p(y) (`p_data`) is, as in the code when the data set
    provides no distribution, an EMA (0.999) of the labeled batches' one-hot labels starting
    uniform; or a fixed class `prior` (the code's `p_labeled` / `p_unlabeled`). `forward` uses the
    values from before this step; `update` runs after the optimizer step (remixmatch post_ops).

    Args:
        num_classes: C.
        window: p_model window in batches (the code's `dbuf`, 128).
        data_momentum: EMA momentum of p_data (0.999).
        prior: a fixed (C,) target distribution instead of the label EMA.
        eps: ε in the ratio (1e-6).

    Example:
        >>> da = DistributionAlignment(10)
        >>> targets = pseudo.sharpen(da(probs_u_w), 0.5)
        >>> ...  # after the optimizer step:
        >>> da.update(probs_u_w, y)
    """

    def __init__(
        self,
        num_classes: int,
        window: int = 128,
        data_momentum: float = 0.999,
        prior: Sequence[float] | Tensor | None = None,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.eps = eps
        self.fixed_prior = prior is not None
        self.p_model = WindowMean(num_classes, window)
        self.p_data = EMADistribution(num_classes, data_momentum, prior)

    def forward(self, probs: Tensor) -> Tensor:
        """(N, C) predictions → aligned (N, C) distributions (no state change)."""
        return align(probs, self.p_data(), self.p_model(), self.eps)

    @torch.no_grad()
    def update(self, probs_unlabeled: Tensor, labels: Tensor | None = None) -> None:
        """Appends the unlabeled batch mean to p_model; moves p_data towards one-hot `labels`.

        Pass the *un-aligned* predictions. `labels` are ignored with a fixed prior.
        """
        self.p_model.update(probs_unlabeled)
        if labels is not None and not self.fixed_prior:
            self.p_data.update(F.one_hot(labels, self.num_classes).float())


def align_with_queue(probs: Tensor, queue: Tensor) -> Tensor:
    """SimMatch's DA with a uniform target: Normalize(p / mean(queue + this batch's mean)).

    The code writes the batch mean into the queue (initialised to zeros) before dividing, so
    the zeros only scale every class alike (`alignment.align` adds ε = 1e-6 to both sides,
    which the code does not; it only matters for a class predicted with probability ~0).
    docs/algorithms.md#numeric-checks S1: a first batch {[0.6, 0.3, 0.1],
    [0.2, 0.3, 0.5]} turns row 1 into [0.52941176, 0.35294118, 0.11764706].

    Args:
        probs: (N, C) un-aligned probabilities.
        queue: (L, C) past batch means, oldest first; its first row makes room for this batch.
    """
    filled = torch.cat([queue[1:], probs.mean(dim=0, keepdim=True)])
    p_model = filled.mean(dim=0)
    uniform = torch.full_like(p_model, 1.0 / len(p_model))
    return align(probs, uniform, p_model / p_model.sum())


class EMAAlignment(nn.Module):
    """USB's `DistAlignEMAHook`: q̃ = Normalize(q·(ε + p_target) / (ε + p_model)), ε = 1e-6.

    p_model is an EMA (momentum m) of the unlabeled batch means, started at the first batch mean;
    p_target is uniform, or with `learn_target` an EMA of the labeled batch means started
    uniform (USB's `p_target_type='model'`, AdaMatch). USB updates both *before* aligning, so a
    step aligns with estimates that already count its own batch: `estimates` returns them
    (computed from every process's batch, nothing stored), `forward` aligns with them and
    `store` keeps them after the optimizer step. USB
    `semilearn/algorithms/hooks/dist_align.py`.

    Args:
        num_classes: C.
        momentum: m (USB `ema_p`, 0.999).
        learn_target: move p_target towards the labeled predictions (AdaMatch) instead of
            keeping it uniform (SoftMatch).
    """

    p_model: Tensor
    p_target: Tensor
    started: Tensor

    def __init__(self, num_classes: int, momentum: float = 0.999, learn_target: bool = False):
        super().__init__()
        self.momentum = momentum
        self.learn_target = learn_target
        self.register_buffer("p_model", torch.full((num_classes,), 1.0 / num_classes))
        self.register_buffer("p_target", torch.full((num_classes,), 1.0 / num_classes))
        self.register_buffer("started", torch.tensor(False))

    def estimates(self, probs_u: Tensor, probs_x: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(p_model, p_target) once this step's batches are counted; no state change.

        Args:
            probs_u: (N, C) un-aligned unlabeled predictions (no gradient).
            probs_x: (B, C) labeled predictions; needed with `learn_target`.
        """
        batch_mean = distributed.all_gather_cat(probs_u.detach()).mean(dim=0)
        p_model = batch_mean
        if bool(self.started):
            p_model = thresholds.moving_average(self.p_model, batch_mean, self.momentum)
        p_target = self.p_target
        if self.learn_target:
            if probs_x is None:
                raise ValueError("EMAAlignment(learn_target=True) needs the labeled predictions")
            labeled_mean = distributed.all_gather_cat(probs_x.detach()).mean(dim=0)
            p_target = thresholds.moving_average(self.p_target, labeled_mean, self.momentum)
        return p_model, p_target

    def forward(self, probs: Tensor, p_model: Tensor, p_target: Tensor) -> Tensor:
        """(N, C) predictions aligned with the given estimates (from `estimates`)."""
        return align(probs, p_target, p_model, eps=1e-6)

    @torch.no_grad()
    def store(self, p_model: Tensor, p_target: Tensor) -> None:
        """Keeps the estimates of a finished step."""
        self.p_model.copy_(p_model)
        self.p_target.copy_(p_target)
        self.started.fill_(True)
