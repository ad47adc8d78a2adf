"""RealMix (Nair et al., 2019, https://arxiv.org/abs/1912.08766).

MixMatch plus three parts, each switchable for ablation (uizard-technologies/realmix
`realmix.py`, `scripts/make_aug_copy.py`; docs/algorithms.md#realmix):
    (a) Extend: N randomly erased copies of the unlabeled set replace it (50 in the paper);
    (b) training-signal annealing (UDA's TSA) on the supervised loss, adapted to mixed labels;
    (c) out-of-distribution masking: the least confident γ of each unlabeled batch is dropped.
Everything else (label guessing, MixUp pool, interleaved forward, losses) is MixMatch's.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from semisup.algorithms.base import TaskInfo
from semisup.algorithms.mixmatch import MixMatch
from semisup.algorithms.registry import ALGORITHMS
from semisup.data.copies import ErasedCopies
from semisup.errors import UserError
from semisup.math import losses, pseudo, tsa
from semisup.math.schedules import linear_rampup


@torch.no_grad()
def soft_label_keep_mask(probs: Tensor, targets: Tensor, eta: float) -> Tensor:
    """RealMix's intended TSA rule for mixed labels: keep while some target class is unmet.

    An example is kept if any class c with ỹ_c > 0 has p_c < ỹ_c · η (for a one-hot ỹ this is
    UDA's p_correct < η). docs/algorithms.md#numeric-checks RM5 (ỹ = [0.7, 0.3, 0], η = 0.55):
    probs [0.3, 0.6, 0.1] → 1, [0.6, 0.3, 0.1] → 0.

    Args:
        probs: (N, C) predicted probabilities of the mixed labeled images.
        targets: (N, C) mixed labels ỹ.
        eta: TSA threshold η.

    Returns:
        (N,) float mask, no gradient.
    """
    unmet = (targets > 0) & (probs < targets * eta)
    return unmet.any(dim=-1).float()


@torch.no_grad()
def code_keep_mask(probs: Tensor, logits: Tensor, targets: Tensor, eta: float) -> Tensor:
    """The rule as the RealMix code computes it (`anneal_sup_loss`): η scales the logits.

    Class c is "unmet" when p_c · 1[ỹ_c > 0] < logit_c · η, and the example is kept if any class
    is unmet, so a positive logit of a class absent from ỹ keeps it.
    docs/algorithms.md#numeric-checks RM5: ỹ = [0.7, 0.3, 0], η = 0.55, probs [0.6, 0.3, 0.1] with
    logits [1.0, 0.3, 0.8] → 1.
    """
    unmet = probs * (targets > 0) < logits * eta
    return unmet.any(dim=-1).float()


@torch.no_grad()
def ood_keep_mask(confidence: Tensor, fraction: float) -> Tensor:
    """RealMix's OOD mask with the code's strict cut: keep confidence > sorted(confidence)[⌊Nγ⌋].

    So ⌊Nγ⌋ + 1 examples are dropped, not Nγ. docs/algorithms.md#numeric-checks RM2: γ = 0.5,
    confidences [0.9, 0.2, 0.5, 0.7, 0.3, 0.95, 0.6, 0.4] → threshold 0.6,
    mask [1, 0, 0, 1, 0, 1, 0, 0].

    Args:
        confidence: (N,) max softmax of each mixed unlabeled example.
        fraction: γ ∈ (0, 1).
    """
    cut = torch.sort(confidence).values[int(len(confidence) * fraction)]
    return (confidence > cut).float()


def masked_squared_error(squared_errors: Tensor, mask: Tensor) -> Tensor:
    """Σ mask · (q − p)² / max(Σ mask · C, 1): the masked L_U of the code.

    docs/algorithms.md#numeric-checks RM3: 0.1375.

    Args:
        squared_errors: (N, C) per-class squared errors.
        mask: (N,) example weights.
    """
    total = (squared_errors * mask[:, None]).sum()
    return total / (mask.sum() * squared_errors.shape[1]).clamp(min=1.0)


@ALGORITHMS.register("realmix")
class RealMix(MixMatch):
    """RealMix (Nair, Fuentes Alonso & Beltramelli, 2019), Algorithm 1 and eq. (2), as its code.

    Loss = L_X(TSA) + λ_U · ramp · L_U(OOD-masked); L_X = Σ keep · H(ỹ, p) / max(Σ keep, 1) over
    the B mixed labeled items, L_U = masked_squared_error over the K·B mixed unlabeled items,
    confidences taken from the predictions on the mixed (post-MixUp) inputs, without gradient.

    Extend (a) generates copy c = u_idx // U of unlabeled image i = u_idx % U on the fly, from
    a hash of (`extend_seed`, c, i): nothing is materialised, each copy is the same whenever it
    is drawn (`semisup.data.copies.ErasedCopies`, handed to the trainer as `unlabeled_copies`).
    As in the code, the original images are not kept: the unlabeled stream is the N erased
    copies only; `extend_keep_original` adds the originals as copy 0 (then copies 1..N are
    erased). The trainer draws from all copies × U positions.

    Args:
        model: the classifier.
        info: data/run facts (`num_unlabeled` gives U for Extend).
        k: K weak views per unlabeled image.
        temperature: T, sharpening.
        beta: MixUp β.
        lambda_u: λ_U (75).
        rampup_steps: λ_U warm-up steps (16,384).
        extend_copies: N copies of the unlabeled set (50); 0 switches Extend off.
        extend_keep_original: also keep the un-erased images (as copy 0).
        extend_seed: seed of the copies (like the one offline data set of the code, shared by
            runs unless changed).
        erase_probability: p of random erasing per copy (0.3).
        tsa_schedule: "none" (the code's flag default), "linear" (the README's best run), "log"
            or "exp"; η rises from 1/C to 1 over training (UDA's schedules, `semisup.math.tsa`).
        tsa_rule: "intended" (`soft_label_keep_mask`) or "code" (`code_keep_mask`).
        ood_fraction: γ, fraction of each unlabeled batch masked out; 0 switches it off (the
            paper uses 0 / 0.2 / 0.4 / 0.6 / 0.85 at 0-100 % class mismatch).
    """

    def __init__(
        self,
        model: nn.Module,
        info: TaskInfo,
        k: int = 2,
        temperature: float = 0.5,
        beta: float = 0.75,
        lambda_u: float = 75.0,
        rampup_steps: int = 16384,
        extend_copies: int = 50,
        extend_keep_original: bool = False,
        extend_seed: int = 0,
        erase_probability: float = 0.3,
        tsa_schedule: Literal["none", "linear", "log", "exp"] = "linear",
        tsa_rule: Literal["intended", "code"] = "intended",
        ood_fraction: float = 0.0,
    ) -> None:
        super().__init__(model, info, k, temperature, beta, lambda_u, rampup_steps)
        if extend_copies < 0 or (extend_copies > 0 and info.num_unlabeled < 1):
            raise UserError(
                f"algorithm.extend_copies={extend_copies} needs ≥ 0 copies of a non-empty "
                f"unlabeled set (size {info.num_unlabeled}); use 0 to switch Extend off"
            )
        if not 0.0 <= ood_fraction < 1.0:
            raise UserError(f"algorithm.ood_fraction (γ) must be in [0, 1), got {ood_fraction}")
        if extend_copies > 0:
            self.unlabeled_copies = ErasedCopies(
                extend_copies,
                extend_keep_original,
                extend_seed,
                erase_probability,
                info.num_unlabeled,
            )
        self.tsa_schedule, self.tsa_rule, self.ood_fraction = tsa_schedule, tsa_rule, ood_fraction

    def forward(self, batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        probs_u, targets_u, logits, targets = self.guess_and_mix(batch)
        n = len(batch["x"])
        logits_x, logits_u = logits[:n], logits[n:]

        # (b) Supervised cross-entropy with training-signal annealing.
        eta = tsa.threshold(self.tsa_schedule, step / self.info.total_steps, self.num_classes)
        keep_x = torch.ones(n, device=logits.device)
        if self.tsa_schedule != "none":
            probs_x = logits_x.detach().softmax(dim=-1)
            if self.tsa_rule == "intended":
                keep_x = soft_label_keep_mask(probs_x, targets[:n], eta)
            else:
                keep_x = code_keep_mask(probs_x, logits_x.detach(), targets[:n], eta)
        loss_x = tsa.masked_mean(losses.soft_cross_entropy(logits_x, targets[:n]), keep_x)

        # (c) Squared error on the mixed unlabeled items, least confident γ masked out.
        probs_u_mixed = logits_u.softmax(dim=-1)
        keep_u = torch.ones(len(logits_u), device=logits.device)
        if self.ood_fraction > 0:
            keep_u = ood_keep_mask(probs_u_mixed.detach().amax(dim=-1), self.ood_fraction)
        squared_errors = (targets[n:] - probs_u_mixed).square()
        loss_u = masked_squared_error(squared_errors, keep_u)
        lambda_u = self.lambda_u * linear_rampup(step, self.rampup_steps)

        return {
            **pseudo.loss_outputs(loss_x, loss_u, lambda_u),
            **pseudo.monitors(probs_u, targets_u.argmax(dim=-1), None, batch.get("u_y")),
            "tsa_threshold": torch.tensor(eta),
            "tsa_keep_rate": keep_x.mean(),
            "mask_rate": keep_u.mean(),
        }
