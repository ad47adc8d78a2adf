"""MixUp over one shuffled pool and the interleave order of MixMatch / ReMixMatch / RealMix.

The model calls that use them are in `semisup.models.forward`.

Follows libml/layers.py of google-research/mixmatch and remixmatch (`MixMode('xxy.yxy')`,
`interleave_offsets`, `interleave`) and docs/algorithms.md#mixmatch steps 3-4,
docs/algorithms.md#remixmatch steps 5-6, docs/algorithms.md#numeric-checks M3/M5.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor


def mixup_draws(
    n: int,
    beta: float,
    device: torch.device | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """The random part of MixUp: per-example λ ~ Beta(β, β) and one permutation of the pool.

    Args:
        n: pool size.
        beta: β of the Beta distribution (0.75 in every MixMatch/ReMixMatch run).
        device: where to draw (no host synchronisation on accelerators).
        generator: source of randomness (None: torch's default generator for `device`).

    Returns:
        (λ (n,) float in (0, 1), permutation (n,) int64).
    """
    concentration = torch.full((n, 2), float(beta), device=device)
    lam = torch._sample_dirichlet(concentration, generator=generator)[:, 0]
    permutation = torch.randperm(n, device=device, generator=generator)
    return lam, permutation


def mix(inputs: Tensor, targets: Tensor, lam: Tensor, permutation: Tensor) -> tuple[Tensor, Tensor]:
    """MixUp of a pool with a permutation of itself, MixMatch eq. (8)-(11), per example.

    λ' = max(λ, 1 − λ), then x'_i = λ'_i·x_i + (1 − λ'_i)·x_π(i), and the same for the targets.

    Because λ' ≥ ½ each mixed item stays closer to its own source; an item may be paired with
    itself (π(i) = i), as in the code.

    Args:
        inputs: (N, ...) pool of inputs.
        targets: (N, C) pool of target distributions.
        lam: (N,) λ values (before the max).
        permutation: (N,) the partner π(i) of each item.

    Returns:
        (mixed inputs like `inputs`, mixed targets like `targets`).
    """
    lam = torch.maximum(lam, 1.0 - lam)
    lam_inputs = lam.to(inputs.dtype).view(-1, *([1] * (inputs.dim() - 1)))
    lam_targets = lam.to(targets.dtype).view(-1, 1)
    mixed_inputs = lam_inputs * inputs + (1.0 - lam_inputs) * inputs[permutation]
    mixed_targets = lam_targets * targets + (1.0 - lam_targets) * targets[permutation]
    return mixed_inputs, mixed_targets


def mixup(
    inputs: Tensor, targets: Tensor, beta: float, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """MixUp of a pool with itself: `mix` with fresh `mixup_draws` on the inputs' device."""
    lam, permutation = mixup_draws(len(inputs), beta, inputs.device, generator)
    return mix(inputs, targets, lam, permutation)


def interleave_offsets(batch: int, nu: int) -> list[int]:
    """Chunk boundaries that split a batch into nu + 1 near-equal chunks, larger chunks last.

    docs/algorithms.md#numeric-checks M5: (64, 2) → [0, 21, 42, 64];
    (64, 9) → [0, 6, 12, 18, 24, 30, 36, 43, 50, 57, 64].

    Args:
        batch: items per forward batch.
        nu: number of batches besides the first (the code's `nu`).
    """
    sizes = [batch // (nu + 1)] * (nu + 1)
    for i in range(batch - sum(sizes)):
        sizes[-i - 1] += 1
    offsets = [0]
    for size in sizes:
        offsets.append(offsets[-1] + size)
    return offsets


@functools.lru_cache(maxsize=64)
def interleave_index(batch: int, groups: int, device: torch.device) -> Tensor:
    """Row order of a concatenation of `groups` batches after interleaving (cached per device).

    Chunk i of batch 0 trades places with chunk i of batch i (i ≥ 1), so every batch holds one
    chunk of every source. The permutation is its own inverse.
    """
    offsets = interleave_offsets(batch, groups - 1)
    index = list(range(groups * batch))
    for i in range(1, groups):
        for row in range(offsets[i], offsets[i + 1]):
            index[row], index[i * batch + row] = i * batch + row, row
    return torch.tensor(index, device=device)


def interleave(rows: Tensor, batch: int) -> Tensor:
    """The libml `interleave` on a concatenation of equal batches (an involution: apply it to undo).

    docs/algorithms.md#numeric-checks M5: batches x, a, b of 6 become [x0 x1 a2 a3 b4 b5],
    [a0 a1 x2 x3 a4 a5], [b0 b1 b2 b3 x4 x5].

    Args:
        rows: (groups·batch, ...) the batches concatenated along dim 0.
        batch: items per batch.
    """
    if batch < 1 or len(rows) % batch:
        raise ValueError(f"cannot split {len(rows)} rows into batches of {batch}")
    # Advanced indexing keeps a channels-last memory format (index_select does not).
    return rows[interleave_index(batch, len(rows) // batch, rows.device)]
