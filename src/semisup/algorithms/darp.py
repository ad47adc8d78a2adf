"""DARP (Kim et al., NeurIPS 2020, https://arxiv.org/abs/2007.08844) on FixMatch.

Distribution Aligning Refinery of Pseudo-labels: the stored predictions on the whole unlabeled
set are refined so that their class totals match the expected class distribution of the
unlabeled data, by solving the paper's convex problem (stay close to the predictions, weighted
by their inverse entropy, under row and column sum constraints). Follows bbuing9/DARP
`train_fix.py` / `training_functions.py::train_fix` and `common.py` (`estimate_pseudo`,
`opt_solver`), USB `imb_algorithms/darp`:

- the weak-view prediction of every unlabeled image is stored (a table indexed by `u_idx`);
- after the warm-up (the code's `epoch > warm`: 201 of 500 epochs) every `period` = 10 steps the
  whole table is refined (noisy entries removed with α = 2, then T = 10 rounds of the iterative
  scaling solver) and the refined table kept; the steps in between read their targets from it;
- target distribution: labeled class ratio × number of unlabeled images (the code for an
  unlabeled set with the labeled set's profile; `--est` distributions are not supported);
- FixMatch as the DARP code runs it: the weak view in its own no-gradient call, two strong views
  (RandAugment + cutout) of each unlabeled image with the same hard pseudo-label, mask
  max ≥ 0.95, loss averaged over all 2μB strong images; μ = 1, Adam 0.002 with decoupled weight
  decay 0.02·lr (the MixMatch-pytorch optimizer of the code), 500 × 500 steps.

Each column equation of the solver is solved with Newton's method on its logarithm with the
analytic derivative, to 1e-6; the code calls scipy's `newton` without a derivative (the secant
method) with tolerance 0.1. Same iterations, same fixed point, solved more precisely.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semisup import distributed
from semisup.algorithms.base import Algorithm, TaskInfo
from semisup.algorithms.presets import MIXMATCH_ADAM
from semisup.algorithms.registry import ALGORITHMS
from semisup.errors import UserError
from semisup.math import prior, pseudo
from semisup.modules.memory import last_writes

EPS = 1e-6  # the code's 1e-6 in estimate_pseudo, the rescaling and the entropy


def remove_noisy_entries(probs: Tensor, target: Tensor, alpha: float) -> Tensor:
    """The code's `estimate_pseudo` and rescaling: keep each class's most likely images only.

    For class k only the int(α·N̂_k) images with the largest p_k keep their entry, rescaled so
    the kept entries of the column sum to N̂_k; every other entry becomes ~0 (1e-6 before the
    row normalisation).

    Args:
        probs: (N, K) stored predictions.
        target: (K,) N̂, expected number of unlabeled images per class.
        alpha: α, how many more candidates than N̂_k a class keeps (2).
    """
    counts = (alpha * target).long().clamp(max=len(probs))
    order = probs.argsort(dim=0, descending=True, stable=True)
    ranks = order.argsort(dim=0)  # rank of each entry within its column, 0 = largest
    kept = (ranks < counts).to(probs.dtype)
    scale = (target + EPS) / ((probs * kept).sum(dim=0) + EPS)
    rescaled = probs * kept * scale + EPS
    return rescaled / rescaled.sum(dim=1, keepdim=True)


def _column_scaling(
    log_base: Tensor, weights: Tensor, log_target: Tensor, start: Tensor, steps: int, tol: float
) -> Tensor:
    """ν_k with Σ_i exp(b_ik − ν_k / w_i) = c_k for every k, by Newton's method on the log."""
    nu = start.clone()
    for _ in range(steps):
        exponents = log_base - nu[None, :] / weights[:, None]
        value = exponents.logsumexp(dim=0) - log_target
        slope = -(exponents.softmax(dim=0) / weights[:, None]).sum(dim=0)
        delta = value / slope
        nu = nu - delta
        if delta.abs().max() < tol:
            break
    return nu


def distribution_matching(
    probs: Tensor, target: Tensor, iterations: int = 10, newton_steps: int = 30, tol: float = 1e-6
) -> Tensor:
    """The code's `opt_solver`: M = argmin Σ_i w_i KL-type distance to p_i, rows 1, columns N̂.

    The solution has the form M_ik = p_ik/e · x_i · exp(−ν_k / w_i), w_i = 1/H(p_i); the code
    alternates `iterations` times between the row normaliser x and the column variables ν
    (one scalar equation per class), then normalises the rows once more: rows sum to 1
    exactly, columns to N̂ up to the last alternation. Predictions that already have the
    target column sums come back unchanged.

    Args:
        probs: (N, K) predictions (rows sum to 1, entries > 0).
        target: (K,) N̂, the column sums to reach (sums to N).
        iterations: T, alternations of the solver (10).
        newton_steps: most Newton steps per column equation (30, the code's `num_newton`).
        tol: stop a column's Newton iteration once its step is below this.
    """
    p = probs.double()
    weights = 1.0 / (-(p * (p + EPS).log()).sum(dim=1)).clamp(min=1e-12)
    log_a = p.log() - 1.0
    log_target = target.double().log()
    nu = torch.zeros_like(log_target)
    log_y = (-1.0 / weights)[:, None].expand_as(p)  # the code's start: ν = 1
    for _ in range(iterations):
        log_x = -(log_a + log_y).logsumexp(dim=1)
        nu = _column_scaling(log_a + log_x[:, None], weights, log_target, nu, newton_steps, tol)
        log_y = -nu[None, :] / weights[:, None]
    log_x = -(log_a + log_y).logsumexp(dim=1)
    return (log_a + log_x[:, None] + log_y).exp().to(probs.dtype)


@ALGORITHMS.register("darp")
class DARP(Algorithm):
    """DARP (Kim et al., NeurIPS 2020) on FixMatch: pseudo-labels refined to the class prior.

    L = CE(x, y) + λ_u·(1/(S·μB)) Σ_s Σ_b 1[max q_b ≥ τ]·CE(u_s,b, argmax q_b) over S strong
    views, where q is the weak-view softmax during the warm-up and the refined table row after
    it. No gradient flows through q. Tables are buffers (checkpointed); they are written after
    the optimizer step with the predictions of every process.

    Args:
        model: the classifier.
        info: data/run facts (`num_unlabeled` sizes the tables, `labeled_class_counts` gives
            the target distribution).
        threshold: τ (≥).
        lambda_u: λ_u.
        mu: μ, unlabeled images per labeled image (1 in the DARP code).
        strong_views: S, strong views per unlabeled image (2 in the DARP code).
        alpha: α of the noisy-entry removal (2).
        iterations: T of the solver (10; the code's `iter_T`).
        period: steps between refinements (10; the code's `num_iter`).
        warmup_fraction: fraction of training before the first refinement (201/500: the code
            refines from epoch 201 of 500 with `--warm 200`).
    """

    optim_defaults: ClassVar[dict[str, Any]] = MIXMATCH_ADAM

    def __init__(
        self,
        model: nn.Module,
        info: TaskInfo,
        threshold: float = 0.95,
        lambda_u: float = 1.0,
        mu: int = 1,
        strong_views: int = 2,
        alpha: float = 2.0,
        iterations: int = 10,
        period: int = 10,
        warmup_fraction: float = 201 / 500,
    ) -> None:
        super().__init__(model, info)
        if info.num_unlabeled < 1:
            raise UserError("DARP stores a prediction per unlabeled image: it needs unlabeled data")
        if strong_views < 1 or period < 1:
            raise UserError(
                f"algorithm.strong_views and algorithm.period must be ≥ 1, got {strong_views} "
                f"and {period}"
            )
        self.threshold, self.lambda_u, self.mu = threshold, lambda_u, mu
        self.strong_views, self.alpha, self.iterations = strong_views, alpha, iterations
        self.period = period
        self.start_step = round(warmup_fraction * info.total_steps)
        self.views = {
            "x": "weak",
            "u_w": "weak",
            **{f"u_s{i}": "strong_cutout" for i in range(strong_views)},
        }
        size = (info.num_unlabeled, info.num_classes)
        target = prior.class_prior(info.labeled_class_counts) * info.num_unlabeled
        self.register_buffer("target", target)
        self.register_buffer("predictions", torch.full(size, 1.0 / info.num_classes))
        self.register_buffer("refined", torch.full(size, 1.0 / info.num_classes))

    def refine(self, u_idx: Tensor, probs_u_w: Tensor) -> Tensor:
        """The refined table, from the stored predictions updated with this step's (all ranks)."""
        slots, rows = last_writes(
            distributed.all_gather_cat(u_idx), distributed.all_gather_cat(probs_u_w)
        )
        table = self.predictions.index_put((slots,), rows)
        cleaned = remove_noisy_entries(table, self.target, self.alpha)
        return distribution_matching(cleaned, self.target, self.iterations)

    def forward(self, batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        x, u_idx = batch["x"], batch["u_idx"]
        with torch.no_grad():  # the code's separate weak-view call
            probs_u_w = self.model(batch["u_w"]).float().softmax(dim=-1)
        strong = [batch[f"u_s{i}"] for i in range(self.strong_views)]
        logits = self.model(torch.cat([x, *strong]))
        logits_x, logits_u_s = logits[: len(x)], logits[len(x) :]
        loss_x = F.cross_entropy(logits_x, batch["y"])

        # Pseudo-labels: the prediction during warm-up, then the refined table's row.
        state: dict[str, Tensor] = {"probs_u_w": probs_u_w}
        targets_u = probs_u_w
        if step >= self.start_step and step % self.period == 0:
            state["refined_table"] = self.refine(u_idx, probs_u_w)
            targets_u = state["refined_table"][u_idx]
        elif step >= self.start_step:
            targets_u = self.refined[u_idx]
        mask = pseudo.confidence_mask(targets_u, self.threshold)
        pseudo_u = targets_u.argmax(dim=-1)

        # The same hard label for every strong view; mean over all S·μB strong images.
        repeats = self.strong_views
        per_image = F.cross_entropy(logits_u_s, pseudo_u.repeat(repeats), reduction="none")
        loss_u = (per_image * mask.repeat(repeats)).mean()
        return {
            **pseudo.loss_outputs(loss_x, loss_u, self.lambda_u),
            **pseudo.monitors(probs_u_w, pseudo_u, mask, batch.get("u_y")),
            "state": state,
        }

    @torch.no_grad()
    def on_step_end(self, batch: dict[str, Tensor], out: dict[str, Tensor], step: int) -> None:
        """Stores this step's predictions (all ranks) and the table refined in this step."""
        state = out["state"]
        u_idx = distributed.all_gather_cat(batch["u_idx"])
        slots, rows = last_writes(u_idx, distributed.all_gather_cat(state["probs_u_w"]))
        self.predictions[slots] = rows
        if "refined_table" in state:
            self.refined.copy_(state["refined_table"])
