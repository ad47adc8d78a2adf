"""Virtual Adversarial Training (Miyato et al., TPAMI 2018, https://arxiv.org/abs/1704.03976).

The prediction on an unlabeled image should not change under the small input perturbation that
changes it most: that direction is found by one step of power iteration on the KL divergence,
starting from a random direction. Follows google-research/fixmatch `vat.py` with
`third_party/vat_utils.py` (the MixMatch/FixMatch baseline), including where they differ from
the paper:

- the loss is KL(p(u + r_adv) ‖ p(u)), the perturbed prediction first (`kl_divergence_from_logits(
  logits_student, logits_teacher)`), where the paper's LDS is KL(p(u) ‖ p(u + r_adv)); the power
  iteration uses the paper's direction KL(p(u) ‖ p(u + d));
- the direction is normalised by its largest absolute value, then by its L2 norm (+1e-6);
- the VAT weight 0.3 ramps up linearly over the first 40 % of training; entropy minimisation
  (weight 0.06, the paper's "VAT + EntMin") is on and not ramped;
- Adam 0.002 with a constant learning rate and decoupled weight decay 0.02·lr on kernels;
- ε = 6 for images scaled to [−1, 1] (32×32×3: a per-pixel RMS of 0.11; scale ε with
  √(pixels) on smaller images); only the labeled call updates BatchNorm running statistics; μ = 1.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semisup.algorithms.base import Algorithm, TaskInfo
from semisup.algorithms.presets import MIXMATCH_ADAM
from semisup.algorithms.registry import ALGORITHMS
from semisup.math import losses
from semisup.math.schedules import linear_rampup
from semisup.models.bn import frozen_running_stats


def normalize_direction(d: Tensor) -> Tensor:
    """Per-image d / max|d|, then / √(1e-6 + ‖d‖²): `get_normalized_vector` of the VAT code."""
    dims = tuple(range(1, d.dim()))
    d = d / (1e-12 + d.abs().amax(dim=dims, keepdim=True))
    return d / (1e-6 + d.square().sum(dim=dims, keepdim=True)).sqrt()


def adversarial_perturbation(
    model: nn.Module,
    u: Tensor,
    logits_u: Tensor,
    eps: float,
    xi: float = 1e-6,
    generator: torch.Generator | None = None,
) -> Tensor:
    """r_adv = ε·g/‖g‖ with g = ∇_d KL(p(u) ‖ p(u + d)) at d = ξ·(random unit direction).

    One power iteration, the paper's fast approximation of r_vadv. The gradient is taken with
    respect to d only and the result is a constant: nothing here accumulates into the model's
    gradients, so the model learns from the perturbation only through the loss that uses it.

    Args:
        model: the classifier (called once, on u + d).
        u: (N, ...) unlabeled images.
        logits_u: (N, C) the model's logits on u (used without gradient).
        eps: ε, the L2 norm of the returned perturbation per image.
        xi: ξ, the finite-difference step of the power iteration.
        generator: random source of the initial direction.

    Returns:
        (N, ...) perturbation with no gradient history.
    """
    d = torch.randn(u.shape, generator=generator, device=u.device, dtype=u.dtype)
    d = (xi * normalize_direction(d)).requires_grad_()
    divergence = losses.kl_divergence(logits_u.detach(), model(u + d)).mean()
    (grad,) = torch.autograd.grad(divergence, d)
    return eps * normalize_direction(grad.detach())


@ALGORITHMS.register("vat")
class VAT(Algorithm):
    """VAT (Miyato et al., TPAMI 2018) + entropy minimisation: consistency under r_adv.

    L = CE(x, y) + w(t)·KL(p(u + r_adv) ‖ p̂(u)) + λ_H·H(p(u)).

    p̂(u) is the clean prediction without gradient; the entropy term's gradient flows through it.

    Args:
        model: the classifier.
        info: data/run facts.
        lambda_u: the VAT weight after ramp-up (`vat`).
        eps: ε, the perturbation's L2 norm per image (`vat_eps`).
        xi: ξ, the power iteration's finite-difference step.
        entropy_weight: λ_H, weight of the entropy of the clean prediction (`entmin_weight`;
            0 gives plain VAT).
        rampup_fraction: fraction of training over which w(t) rises linearly from 0 to `lambda_u`.
        mu: μ, unlabeled images per labeled image in a batch.
    """

    # google-research/fixmatch vat.py trains like the MixMatch family: Adam 0.002, decoupled decay.
    optim_defaults: ClassVar[dict[str, Any]] = MIXMATCH_ADAM

    def __init__(
        self,
        model: nn.Module,
        info: TaskInfo,
        lambda_u: float = 0.3,
        eps: float = 6.0,
        xi: float = 1e-6,
        entropy_weight: float = 0.06,
        rampup_fraction: float = 0.4,
        mu: int = 1,
    ) -> None:
        super().__init__(model, info)
        self.lambda_u = lambda_u
        self.eps = eps
        self.xi = xi
        self.entropy_weight = entropy_weight
        self.rampup_steps = round(rampup_fraction * info.total_steps)
        self.mu = mu
        self.views = {"x": "weak", "u_w": "weak"}

    def forward(self, batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        u = batch["u_w"]
        logits_x = self.model(batch["x"])  # the only call that updates BN running statistics
        with frozen_running_stats(self.model):
            logits_u = self.model(u)
            r_adv = adversarial_perturbation(self.model, u, logits_u, self.eps, self.xi)
            logits_u_adv = self.model(u + r_adv)
        loss_x = F.cross_entropy(logits_x, batch["y"])
        loss_u = losses.kl_divergence(logits_u_adv, logits_u.detach()).mean()
        loss_entropy = losses.entropy(logits_u).mean()

        weight = self.lambda_u * linear_rampup(step, self.rampup_steps)
        return {
            "loss": loss_x + weight * loss_u + self.entropy_weight * loss_entropy,
            "loss_x": loss_x.detach(),
            "loss_u": loss_u.detach(),
            "loss_entropy": loss_entropy.detach(),
            "unlabeled_distribution": logits_u.detach().float().softmax(dim=-1).mean(dim=0),
        }
