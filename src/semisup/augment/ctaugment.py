"""CTAugment: augmentation magnitudes learned online from the model's accuracy on probe images.

Berthelot et al., "ReMixMatch", ICLR 2020, Sec. 3.2.2, and Sohn et al., "FixMatch", NeurIPS 2020,
Sec. 3.2; code google-research/fixmatch `libml/ctaugment.py`, `cta/lib/train.py` and
google-research/remixmatch `libml/ctaugment.py`.

Every op parameter owns a vector of bin "rates" that start at 1. Training policies pick ops
uniformly and, for each parameter, a bin with probability given by the rates (bins whose rate
fell well below the best bin's are never picked). After each step the EMA model classifies
probe images augmented with uniform levels, and the rate of every bin those levels fell in moves
towards the probe's proximity, the probability of the true class.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from semisup.augment.ops import OPS, Op, translate_x_code, translate_y_code
from semisup.augment.policy import MAX_PARAMS, Policy, apply_policy, generator_device

SAMPLINGS = ("fixmatch", "remixmatch")
TRANSLATES = ("paper", "code")
RESCALES = ("fixmatch", "remixmatch")
BIN_SHRINK = 0.999  # the code's int(v * n * 0.999), which keeps v = 1 in the last bin
CODE_TRANSLATES = {"translate_x": translate_x_code, "translate_y": translate_y_code}


def proximity(probs: Tensor, targets: Tensor) -> Tensor:
    """How close each prediction is to its one-hot label: 1 − ½·Σ_c |p_c − onehot(y)_c|.

    For probabilities that sum to 1 this is p_y. The code (`cta/lib/train.py`) uses ½; the
    ReMixMatch paper prints 1/(2L), which would shrink every update by the class count L.

    Args:
        probs: (N, C) class probabilities (softmax of the EMA model on the probe images).
        targets: (N,) integer labels.

    Returns:
        (N,) proximities in [0, 1], in the dtype of `probs`.
    """
    onehot = F.one_hot(targets, probs.shape[1]).to(probs.dtype)
    return 1 - 0.5 * (probs - onehot).abs().sum(1)


def bin_index(levels: Tensor, num_bins: int | Tensor) -> Tensor:
    """The bin a level v updates: int(v · n · 0.999), as in `update_rates` of the code.

    The 0.999 keeps v = 1 in the last bin, and shifts levels just above a bin edge into the bin
    below it, as the code does.
    """
    return (levels * num_bins * BIN_SHRINK).floor().long()


def rate_to_p(rate: Tensor, decay: float, threshold: float) -> Tensor:
    """Bin weights from rates (last dimension = the bins of one parameter).

    p = rate + (1 − decay), divided by its maximum; entries below `threshold` become 0.
    """
    p = rate + (1 - decay)
    p = p / p.amax(-1, keepdim=True)
    return torch.where(p < threshold, torch.zeros_like(p), p)


def bin_probabilities(p: Tensor, sampling: str) -> Tensor:
    """Sampling probabilities of one parameter's bins (or segments) from the weights `p`.

    "fixmatch" (fixmatch repo): bin j with probability ∝ p_j, then v = (j + U) / n.
    "remixmatch" (remixmatch repo): segment j, between bins j and j + 1, with probability
    ∝ p_j + p_{j+1}, then v = (j + U) / (n − 1).
    """
    weights = _segments(p) if _check_sampling(sampling) == "remixmatch" else p
    return weights / weights.sum(-1, keepdim=True)


class CTAugment:
    """Control Theory Augment, batched over tensors and replicable across distributed ranks.

    Rates are float64 CPU tensors: the update is a long sequential exponential average
    (64 examples × 2 ops every step for 2^20 steps) run on the CPU in the order the code uses,
    and float64 keeps it free of float32 rounding, so the thresholded bins follow the exact math
    the reference values (docs/algorithms.md#numeric-checks C3–C6) are computed with.

    Example:
        >>> cta = CTAugment(cutout_after=True)  # FixMatch's strong augmentation
        >>> g = torch.Generator().manual_seed(0)
        >>> strong = cta(torch.zeros(4, 3, 32, 32, dtype=torch.uint8), g)
        >>> probe = cta.probe_policy(4, g)  # then, after the model ran on the probe images:
        >>> cta.update(probe, torch.tensor([0.9, 0.1, 0.5, 1.0]))

    Args:
        depth: ops per image (the code's `adepth`).
        threshold: bins whose normalised weight is below this are never sampled (`ath`; the
            class default in the code is 0.85 but every run uses the flag, 0.80).
        decay: rate of the exponential average of proximities (`adecay`).
        sampling: "fixmatch" samples bins, "remixmatch" samples segments between bins; see
            `bin_probabilities`.
        translate: "paper" translates by up to 30 % of the image side as the paper describes;
            "code" is the Google code's translate, whose offset is at most 0.3 px and therefore
            leaves the image unchanged. The default follows the paper because the code's op is
            an evident unit slip; pick "code" to reproduce the published runs exactly.
        rescale: "fixmatch" crops up to 25 % per side and resizes back (fixmatch repo);
            "remixmatch" is the remixmatch repo's rescale, whose crop box is in pixels, which
            PIL rounds back to the whole image: a no-op. The default is the working op; the
            no-op keeps its bins and rates so the probe statistics match the remixmatch code.
        cutout_after: append cutout at v = 1 to every training policy, FixMatch's strong
            augmentation (`AugmentPoolCTACutOut` in fixmatch.py); probe policies never get it.
        op_table: the ops to draw from, in index order (default: all 19 ops).
    """

    def __init__(
        self,
        depth: int = 2,
        threshold: float = 0.80,
        decay: float = 0.99,
        *,
        sampling: str = "fixmatch",
        translate: str = "paper",
        rescale: str = "fixmatch",
        cutout_after: bool = False,
        op_table: Mapping[str, Op] | None = None,
    ) -> None:
        self.depth = depth
        self.threshold = threshold
        self.decay = decay
        self.sampling = _check_sampling(sampling)
        self.translate = _check_choice("translate", translate, TRANSLATES)
        self.rescale = _check_choice("rescale", rescale, RESCALES)
        self.cutout_after = cutout_after
        self.op_table = _variant_table(
            dict(OPS if op_table is None else op_table), translate, rescale
        )
        self.op_names = tuple(self.op_table)
        if cutout_after and "cutout" not in self.op_table:
            raise ValueError("cutout_after=True needs a 'cutout' op in the op table")
        bins = [op.bins for op in self.op_table.values()]
        if max(len(b) for b in bins) > MAX_PARAMS:
            raise ValueError(f"ops may have at most {MAX_PARAMS} parameters")
        # (K, 2): bins of each op parameter, 0 for the slots an op does not have.
        self._num_bins = torch.tensor([list(b) + [0] * (MAX_PARAMS - len(b)) for b in bins])
        max_bins = int(self._num_bins.max())
        valid = torch.arange(max_bins) < self._num_bins[..., None]
        # (K, 2, B) float64 rates; the padding past each parameter's bins stays 0.
        self._rates = valid.to(torch.float64)

    def sample_policy(self, n: int, generator: torch.Generator | None = None) -> Policy:
        """A training policy for n images: `depth` uniform ops, bins drawn from the rates.

        Tensors are built on the generator's device (the CPU without one). With `cutout_after`
        the policy has one more step, cutout at v = 1, so it replays exactly what `__call__`
        applies.
        """
        device = generator_device(generator)
        ops = torch.randint(len(self.op_names), (n, self.depth), generator=generator, device=device)
        weights = self._sampling_weights().to(device)[ops]  # (n, depth, 2, W)
        flat = weights.reshape(-1, weights.shape[-1])
        bins = torch.multinomial(flat, 1, replacement=True, generator=generator)
        bins = bins.view(n, self.depth, MAX_PARAMS)
        u = torch.rand(bins.shape, generator=generator, device=device, dtype=torch.float64)
        num_bins = self._num_bins.to(device)[ops]
        divisor = num_bins - 1 if self.sampling == "remixmatch" else num_bins
        levels = torch.where(num_bins > 0, (bins + u) / divisor.clamp_min(1), 0.0)
        policy = Policy(ops, levels)
        return self._with_cutout(policy) if self.cutout_after else policy

    def probe_policy(self, n: int, generator: torch.Generator | None = None) -> Policy:
        """A probe policy for n images: `depth` uniform ops, every level uniform in [0, 1).

        The rates play no part, so every bin keeps being measured.
        """
        device = generator_device(generator)
        ops = torch.randint(len(self.op_names), (n, self.depth), generator=generator, device=device)
        u = torch.rand(
            (n, self.depth, MAX_PARAMS), generator=generator, device=device, dtype=torch.float64
        )
        levels = torch.where(self._num_bins.to(device)[ops] > 0, u, 0.0)
        return Policy(ops, levels)

    def apply(
        self, images: Tensor, policy: Policy, generator: torch.Generator | None = None
    ) -> Tensor:
        """Applies a policy sampled by this augmenter (e.g. a probe policy) to uint8 images."""
        return apply_policy(images, policy, self.op_table, generator)

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Samples a training policy for the (N, C, H, W) uint8 images and applies it.

        The generator draws the policy and the cutout centres; keep it on `images.device`.
        """
        return self.apply(images, self.sample_policy(images.shape[0], generator), generator)

    def update(self, policy: Policy, proximity: Tensor) -> None:
        """Moves the rate of every (op, parameter) bin each probe visited towards its proximity.

        For each example in order, each of its ops in order, each parameter:
        bin = int(v · n · 0.999) and rate[bin] ← decay · rate[bin] + (1 − decay) · w, exactly the
        code's sequential `update_rates` (`identity` has no parameter, so nothing moves).

        Distributed training: the update depends only on its arguments and the current rates.
        All-gather every rank's probe (policy.ops, policy.levels, proximity) in rank order,
        concatenate, and call `update` on every rank with the result; the rates stay identical
        everywhere without broadcasting them.

        Args:
            policy: the probe policy of the labeled batch (from `probe_policy`).
            proximity: (N,) proximities of the EMA model's predictions on the probe images
                (see `proximity`), in [0, 1].
        """
        if proximity.shape != (len(policy),):
            raise ValueError(f"need one proximity per image: {len(policy)}, got {proximity.shape}")
        if len(policy) == 0:
            return
        ops = policy.ops.cpu()
        levels = policy.levels.cpu().to(torch.float64)
        if ops.min() < 0 or ops.max() >= len(self.op_names) or levels.min() < 0 or levels.max() > 1:
            raise ValueError("the policy has op indices or levels outside this augmenter's range")
        num_bins = self._num_bins[ops]  # (N, D, 2)
        used = num_bins > 0
        # Flat index of each (op, parameter, bin) cell in the (K, 2, B) rate tensor.
        cells = (ops[..., None] * MAX_PARAMS + torch.arange(MAX_PARAMS)) * self._rates.shape[-1]
        cells = cells + bin_index(levels, num_bins)
        weights = proximity.detach().cpu().to(torch.float64)[:, None, None].expand(used.shape)
        # Boolean indexing walks (example, step, parameter) in row-major order, the code's order.
        # A memoryview reads and writes single float64 entries much faster than numpy indexing.
        rates = memoryview(self._rates.view(-1).numpy())
        for cell, w in zip(cells[used].tolist(), weights[used].tolist(), strict=True):
            rates[cell] = rates[cell] * self.decay + w * (1 - self.decay)

    def probabilities(self) -> dict[str, tuple[Tensor, ...]]:
        """Each parameter's current sampling probabilities, by op: one tensor per parameter.

        With "fixmatch" sampling the entries are bins (n); with "remixmatch", segments (n − 1).
        """
        weights = self._sampling_weights()
        probs = weights / weights.sum(-1, keepdim=True)
        width = 1 if self.sampling == "remixmatch" else 0
        return {
            name: tuple(probs[k, s, : n - width].clone() for s, n in enumerate(op.bins))
            for k, (name, op) in enumerate(self.op_table.items())
        }

    def state_dict(self) -> dict[str, Any]:
        """The rates (float64 tensors, by op and parameter) and the options."""
        return {
            "rates": {
                name: [self._rates[k, s, :n].clone() for s, n in enumerate(op.bins)]
                for k, (name, op) in enumerate(self.op_table.items())
            },
            **self._options(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores the rates; the op set, bins and options must match this augmenter's.

        Raises:
            ValueError: if the state was saved with other ops, bin counts or options.
        """
        options = {key: state.get(key) for key in self._options()}
        if options != self._options():
            raise ValueError(
                f"CTAugment state has options {options}, this augmenter {self._options()}; "
                "build it with the options of the run that saved the state"
            )
        rates = state["rates"]
        if set(rates) != set(self.op_names):
            raise ValueError(
                f"CTAugment state has ops {sorted(rates)}, but this augmenter has "
                f"{sorted(self.op_names)}; build it with the op table of the run that saved it"
            )
        for k, (name, op) in enumerate(self.op_table.items()):
            shapes = tuple(len(r) for r in rates[name])
            if shapes != op.bins:
                raise ValueError(f"op '{name}' has bins {op.bins} but the state has {shapes}")
            for s, rate in enumerate(rates[name]):
                self._rates[k, s, : len(rate)] = torch.as_tensor(rate).to("cpu", torch.float64)

    def stats(self) -> str:
        """One line per op: the thresholded, normalised rates (`rate_to_p`) of each parameter.

        The format of the code's `stats()`: parameters separated by " / ", two decimals.
        """
        lines = []
        for name in sorted(self.op_names):
            k = self.op_names.index(name)
            params = [
                " ".join(
                    f"{x:.2f}" for x in rate_to_p(self._rates[k, s, :n], self.decay, self.threshold)
                )
                for s, n in enumerate(self.op_table[name].bins)
            ]
            lines.append(f"{name:<16}    {' / '.join(params)}")
        return "\n".join(lines)

    def _options(self) -> dict[str, Any]:
        return {
            "depth": self.depth,
            "threshold": self.threshold,
            "decay": self.decay,
            "sampling": self.sampling,
            "translate": self.translate,
            "rescale": self.rescale,
            "cutout_after": self.cutout_after,
        }

    def _sampling_weights(self) -> Tensor:
        """(K, 2, W) unnormalised bin (or segment) weights; 0 past each parameter's bins.

        Parameter slots an op lacks get uniform dummy weights so every row can be sampled;
        their levels are zeroed afterwards.
        """
        valid = torch.arange(self._rates.shape[-1]) < self._num_bins[..., None]
        p = rate_to_p(self._rates, self.decay, self.threshold) * valid
        if self.sampling == "remixmatch":
            p = _segments(p) * valid[..., 1:]
        unused = (self._num_bins == 0)[..., None]
        return torch.where(unused, torch.ones_like(p), p)

    def _with_cutout(self, policy: Policy) -> Policy:
        """The policy followed, for every image, by cutout at v = 1."""
        n, device = len(policy), policy.ops.device
        cutout = torch.full((n, 1), self.op_names.index("cutout"), device=device)
        level = torch.zeros((n, 1, MAX_PARAMS), dtype=torch.float64, device=device)
        level[..., 0] = 1.0
        return Policy(torch.cat([policy.ops, cutout], 1), torch.cat([policy.levels, level], 1))


def _segments(p: Tensor) -> Tensor:
    """The remixmatch repo's segment weights p[1:] + p[:-1] along the last dimension."""
    return p[..., 1:] + p[..., :-1]


def _variant_table(table: dict[str, Op], translate: str, rescale: str) -> dict[str, Op]:
    """The op table with the code's no-op translate and/or rescale swapped in, names kept."""
    if translate == "code":
        for name, code_fn in CODE_TRANSLATES.items():
            table[name] = Op(fn=code_fn, bins=table[name].bins)
    if rescale == "remixmatch":
        table["rescale"] = Op(fn=OPS["identity"].fn, bins=table["rescale"].bins)
    return table


def _check_sampling(sampling: str) -> str:
    return _check_choice("sampling", sampling, SAMPLINGS)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"unknown {name} '{value}'; valid: {', '.join(choices)}")
    return value
