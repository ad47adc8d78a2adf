"""A memory bank of labeled-example embeddings, one slot per labeled image (SimMatch §3.3).

Slot i holds the latest (or a momentum-smoothed) L2-normalised embedding of labeled image i and
its class, so a batch can be compared with every labeled example at once. The bank is a pair of
registered buffers, so checkpoints carry it and a resumed run continues with the same bank.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semisup import distributed

BankNormalization = Literal["code", "paper"]


def last_writes(index: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
    """The distinct slots of `index` (N,) and, for each, the row of its last occurrence.

    Writing rows at repeated indices in one `table[index] = rows` is undefined in PyTorch (any
    of the rows may land, and on many threads or a GPU the winner varies between runs). Resolving
    the repeats first, last occurrence wins, makes such a write deterministic; without repeats it
    is the same write.

    Args:
        index: (N,) int64 slots, possibly repeated (a labeled batch larger than the labeled set).
        rows: (N, ...) the values to write.

    Returns:
        (slots (M,) sorted and distinct, rows (M, ...)).
    """
    slots, inverse = torch.unique(index, return_inverse=True)
    positions = torch.arange(len(index), device=index.device)
    last = torch.full_like(slots, -1).scatter_reduce(0, inverse, positions, "amax")
    return slots, rows[last]


def momentum_update(
    old: Tensor, new: Tensor, momentum: float, normalization: BankNormalization = "paper"
) -> Tensor:
    """Normalize(m · old + (1 − m) · new) (SimMatch eq. (12), CIFAR code with m = 0.7).

    "paper" scales each of the N mixed embeddings to unit norm, as the paper's cosine similarity
    needs (docs/algorithms.md#numeric-checks S4: old = e1, new = e2, m = 0.7 → [0.91914503,
    0.39391930]). "code" is what the CIFAR code and USB
    (`semilearn/algorithms/simmatch/simmatch.py`, `update_bank`) write: `F.normalize` of the (D, N)
    bank slice with its default dim=1, i.e. each of the D feature dimensions scaled to unit norm
    across the N written items, so the squared row norms sum to D (about 1.4 per row at D = 128, N =
    64). With m = 0 "paper" is an overwrite (the ImageNet code); "code" still normalises across the
    items, as that code would.

    Args:
        old: (N, D) stored embeddings.
        new: (N, D) fresh unit embeddings.
        momentum: m ∈ [0, 1).
        normalization: "paper" (per embedding) or "code" (per dimension, across the batch).
    """
    mixed = momentum * old + (1.0 - momentum) * new
    return F.normalize(mixed, dim=0 if normalization == "code" else -1)


class LabeledMemoryBank(nn.Module):
    """Embeddings (K, D) and labels (K,) of the K labeled examples, indexed by labeled position.

    Starts, as the SimMatch code does, with random unit vectors and label 0 in every slot; each
    slot is written the first time its example is in a labeled batch.

    Args:
        size: K, the number of labeled examples (`TaskInfo.num_labeled`).
        dim: D, the embedding size.
        generator: random source of the initial vectors (None: torch's global generator).
        normalization: how a momentum write is normalised (`momentum_update`): "paper" per
            embedding, "code" per feature dimension across the written batch.

    Example:
        >>> bank = LabeledMemoryBank(info.num_labeled, 128, normalization="code")
        >>> similarities = z @ bank.embeddings.T  # (N, K)
        >>> bank.update(batch["x_idx"], z_x.detach(), batch["y"], momentum=0.7)  # after the step
    """

    embeddings: Tensor
    labels: Tensor

    def __init__(
        self,
        size: int,
        dim: int,
        generator: torch.Generator | None = None,
        normalization: BankNormalization = "paper",
    ) -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f"a memory bank needs at least one slot, got size {size}")
        if normalization not in ("code", "paper"):
            raise ValueError(f"normalization must be 'code' or 'paper', got {normalization!r}")
        self.normalization = normalization
        start = F.normalize(torch.randn(size, dim, generator=generator), dim=-1)
        self.register_buffer("embeddings", start)
        self.register_buffer("labels", torch.zeros(size, dtype=torch.int64))

    @torch.no_grad()
    def update(self, index: Tensor, embeddings: Tensor, labels: Tensor, momentum: float) -> None:
        """Writes `embeddings` (N, D) and `labels` (N,) into slots `index` (N,).

        With momentum m > 0, or with "code" normalisation, the written rows become
        `momentum_update(old, new, m, normalization)` over the whole gathered batch; otherwise
        they are overwritten. When an index appears more than once in a batch (fewer labeled
        examples than the batch size), every copy counts in the "code" normalisation, as in the
        original code, and one write wins, where the code leaves it undefined which: here the
        last occurrence (`last_writes`), so runs are reproducible. Under DDP every rank writes
        every rank's batch (gathered in rank order, normalised together), so all ranks keep the
        same bank.
        """
        index = distributed.all_gather_cat(index)
        labels = distributed.all_gather_cat(labels)
        new = distributed.all_gather_cat(embeddings.detach().to(self.embeddings.dtype))
        if momentum > 0 or self.normalization == "code":
            new = momentum_update(self.embeddings[index], new, momentum, self.normalization)
        slots, new = last_writes(index, new)
        self.embeddings[slots] = new
        self.labels[slots] = last_writes(index, labels)[1]


class EmbeddingQueue(nn.Module):
    """A first-in-first-out memory of the last K (embedding, class distribution) pairs.

    CoMatch's memory bank (salesforce/CoMatch `Train_CoMatch.py`: `queue_feats`, `queue_probs`,
    `queue_ptr`): every step pushes the weak-view embeddings of the unlabeled batch with their
    pseudo-labels and the labeled embeddings with their one-hot labels, overwriting the oldest
    entries. The queue starts with zeros; `count` (items ever pushed) tells when it has filled.

    Args:
        size: K, the number of entries (2560 = 5 batches of (1 + μ)·B = 512 in the CIFAR code).
        dim: embedding size.
        num_classes: C, size of the stored distributions.

    Example:
        >>> queue = EmbeddingQueue(2560, 64, 10)
        >>> weights = (z @ queue.embeddings.T / 0.2).softmax(dim=-1)  # (N, K)
        >>> smoothed = weights @ queue.probs  # (N, C)
        >>> queue.push(torch.cat([z_u_w, z_x]), torch.cat([probs_u_w, one_hot_y]))
    """

    embeddings: Tensor
    probs: Tensor
    count: Tensor

    def __init__(self, size: int, dim: int, num_classes: int) -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f"a queue needs at least one entry, got size {size}")
        self.size = size
        self.register_buffer("embeddings", torch.zeros(size, dim))
        self.register_buffer("probs", torch.zeros(size, num_classes))
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))

    @torch.no_grad()
    def push(self, embeddings: Tensor, probs: Tensor) -> None:
        """Writes N rows after the newest entry, wrapping around (only the last K if N > K)."""
        n = len(embeddings)
        start = int(self.count) + max(n - self.size, 0)
        kept = min(n, self.size)
        slots = (start + torch.arange(kept, device=self.embeddings.device)) % self.size
        self.embeddings[slots] = embeddings[n - kept :].detach().to(self.embeddings.dtype)
        self.probs[slots] = probs[n - kept :].detach().to(self.probs.dtype)
        self.count += n
