"""ReMixMatch (Berthelot et al., ICLR 2020, https://arxiv.org/abs/1911.09785).

MixMatch plus distribution alignment, augmentation anchoring (K strong CTAugment views learn the
sharpened, aligned prediction on a weak view), a pre-mixup loss and a rotation loss. Follows
google-research/remixmatch `cta/cta_remixmatch.py` (= `remixmatch_no_cta.py` with CTAugment and
redux='1st'; docs/algorithms.md#remixmatch), including what the paper leaves out: the weak view is
part of the MixUp pool and only the last interleaved call updates BatchNorm running statistics. The
other label guesses of `remixmatch_no_cta.py` (`guess_label`, redux 'swap', its default, and 'mean')
are options; the "weak augmentations only" ablation (`ablation/ab_remixmatch.py`) runs with them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semisup.algorithms.base import Algorithm, TaskInfo
from semisup.algorithms.mixmatch import check_mixup_settings
from semisup.algorithms.presets import MIXMATCH_ADAM
from semisup.algorithms.registry import ALGORITHMS
from semisup.errors import UserError
from semisup.math import losses, pseudo
from semisup.math.schedules import linear_rampup
from semisup.models import bn, forward
from semisup.modules.alignment import DistributionAlignment


def rotate_quarters(images: Tensor) -> tuple[Tensor, Tensor]:
    """The code's `random_rotate`: fixed quarters of the batch, rotated by 0°, 180°, 90°, −90°.

    Item i gets label ⌊4i / N⌋: 0 unrotated, 1 flipped on both axes (180°), 2 transposed then
    rows flipped (np.rot90 k=1, counter-clockwise), 3 transposed then columns flipped (k=−1).
    docs/algorithms.md#numeric-checks R4. Images must be square.

    Args:
        images: (N, C, H, W) with H = W.

    Returns:
        (rotated images (N, C, H, W), labels (N,) int64).
    """
    n = len(images)
    starts = [-(-q * n // 4) for q in range(5)]  # ⌈qN/4⌉: quarter q holds labels ⌊4i/N⌋ = q
    quarters = [images[starts[q] : starts[q + 1]] for q in range(4)]
    rotated = torch.empty_like(images)  # keeps the memory format (channels-last convolutions)
    rotated[: starts[1]] = quarters[0]
    rotated[starts[1] : starts[2]] = quarters[1].flip(-2, -1)
    rotated[starts[2] : starts[3]] = quarters[2].transpose(-2, -1).flip(-2)
    rotated[starts[3] :] = quarters[3].transpose(-2, -1).flip(-1)
    labels = torch.arange(n, device=images.device) * 4 // n
    return rotated, labels


@ALGORITHMS.register("remixmatch")
class ReMixMatch(Algorithm):
    """ReMixMatch (Berthelot et al., ICLR 2020), Algorithm 1, as `cta_remixmatch.py` runs it.

    Per step (calls are separate training-mode forwards of B images):
    1. Rotation: the first strong view u_s0, quarters rotated (`rotate_quarters`), one call
       through `model.forward_features` and a 4-way linear head (Glorot-normal, bias): L_rot.
    2. Guess: p = softmax(model(u_w)) (no gradient); p̃ = DA(p) with p_model / p_data read before
       this step's update; q = sharpen(p̃, T). All K + 1 unlabeled views get the target q.
    3. Pre-mixup loss L_Û1: soft cross-entropy of q on model(u_s0) (own call).
    4. MixUp of the pool [x (one-hot), u_w, u_s0..u_s(K−1) (q)], (K + 2)·B items, one permutation,
       per-example λ' = max(λ, 1 − λ); K + 2 interleaved calls; L_X soft cross-entropy on the mixed
       labeled part, L_U on the (K + 1)·B mixed unlabeled items.
    5. loss = L_X + r·λ_Û1·L_Û1 + r·λ_U·L_U + λ_r·L_rot, r = min(1, step / rampup_steps).
    Only the last interleaved call updates BatchNorm running statistics. After the optimizer
    step (`on_step_end`) p_model appends the batch mean of the *un-aligned* p and p_data moves
    towards this batch's one-hot labels. CTAugment feedback from probe images is the trainer's.

    `redux` picks how the targets are guessed (`remixmatch_no_cta.py` `guess_label`): '1st' (the
    default, `cta_remixmatch.py`) as above; 'swap' (the default of `remixmatch_no_cta.py` and
    `ablation/ab_remixmatch.py`) and 'mean' predict on all K + 1 unlabeled views, each its own
    training-mode call (u_s0's is the pre-mixup call, the others without gradient), and view i
    learns the aligned, sharpened prediction on view i + 1 (cyclically: u_s(K−1) learns from
    u_w) with 'swap', on the mean of all K + 1 predictions with 'mean'. L_Û1 then takes the
    target of u_w (with 'swap' that is u_s0's own prediction), and p_model appends the mean of
    all K + 1 un-aligned predictions, as the code's `p_model.update(guess.p_model)` does.

    Ablations of the paper's Table (runs/ssl/ablation.sh): `k` ∈ {1, 2, 4, 8, 16};
    `lambda_rot=0` (no rotation: its call is skipped); `lambda_u1=0` (no pre-mixup loss: the
    u_s0 guess call is skipped); `distribution_alignment=False`; `unlabeled_loss="l2"` (MixMatch's
    squared error, run with `lambda_u=75`); `strong_augmentation=False` with `redux="swap"` or
    "mean" (every view weak: ab_remixmatch.py); `guess_view="strong"` ("no weak augmentation":
    the guess view is strongly augmented too, ab_cta_remixmatch_noweak.py) or
    `guess_view="none"` (unaugmented guess view, the STL-10 'd.x.d' setting).

    Args:
        model: the classifier (must provide `forward_features` and `num_features`).
        info: data/run facts.
        k: K, strong views per unlabeled image (8; 1 for 40 labels, 4 for STL-10).
        temperature: T, sharpening temperature.
        beta: β of the MixUp Beta distribution.
        lambda_u: λ_U (`w_match`), weight of the mixed unlabeled loss (ramped).
        lambda_u1: λ_Û1 (`w_kl`), weight of the pre-mixup loss (ramped).
        lambda_rot: λ_r (`w_rot`), weight of the rotation loss (not ramped; 2 for CIFAR-10@40,
            3 for SVHN@40).
        rampup_steps: linear warm-up of λ_U and λ_Û1 (16,384; 131,072 for CIFAR-10@40).
        distribution_alignment: use DA (`use_dm`).
        alignment_window: batches in the p_model window (`dbuf`, 128).
        alignment_target: "labels_ema": p_data is the EMA (0.999) of one-hot labeled labels, as the
            code; "labeled_counts": the labeled set's class histogram (a data set `p_labeled`).
        p_data: a fixed target distribution given by the user, C non-negative weights
            (normalised), the code's `--p_unlabeled` (libml `data.py`, read by `PData`); it
            replaces `alignment_target`, as `p_unlabeled` takes precedence over `p_labeled`.
        unlabeled_loss: "xe" soft cross-entropy (`use_xe`) or "l2" squared error over classes.
        strong_augmentation: False replaces every strong view (labeled ones too) by a weak one.
        guess_view: augmentation of the view the label is guessed from.
        redux: "1st", "swap" or "mean", the code's label-guess modes (see above).
    """

    optim_defaults: ClassVar[dict[str, Any]] = MIXMATCH_ADAM
    step_hyperparameters: ClassVar[tuple[str, ...]] = ("rampup_steps",)
    augment_defaults: ClassVar[dict[str, Any]] = {
        # the remixmatch repo's segment sampling (docs/algorithms.md#ctaugment-variants)
        "cta_sampling": "remixmatch",
        "cta_rescale": "remixmatch",  # ... and its no-op rescale
    }

    def __init__(
        self,
        model: nn.Module,
        info: TaskInfo,
        k: int = 8,
        temperature: float = 0.5,
        beta: float = 0.75,
        lambda_u: float = 1.5,
        lambda_u1: float = 0.5,
        lambda_rot: float = 0.5,
        rampup_steps: int = 16384,
        distribution_alignment: bool = True,
        alignment_window: int = 128,
        alignment_target: Literal["labels_ema", "labeled_counts"] = "labels_ema",
        p_data: list[float] | None = None,
        unlabeled_loss: Literal["xe", "l2"] = "xe",
        strong_augmentation: bool = True,
        guess_view: Literal["weak", "none", "strong"] = "weak",
        redux: Literal["1st", "swap", "mean"] = "1st",
    ) -> None:
        super().__init__(model, info)
        check_mixup_settings(k, temperature, beta, rampup_steps)
        self.k, self.temperature, self.beta = k, temperature, beta
        self.lambda_u, self.lambda_u1, self.lambda_rot = lambda_u, lambda_u1, lambda_rot
        self.rampup_steps = rampup_steps
        self.distribution_alignment = distribution_alignment
        self.unlabeled_loss = unlabeled_loss
        self.redux = redux
        prior = info.labeled_class_counts if alignment_target == "labeled_counts" else None
        if p_data is not None:
            prior = given_distribution(p_data, info.num_classes)
        self.alignment = DistributionAlignment(info.num_classes, alignment_window, prior=prior)
        self.rotation_head = _glorot_linear(model.num_features, 4)
        strong = "strong" if strong_augmentation else "weak"
        self.views = {"x": strong, "u_w": guess_view, **{f"u_s{i}": strong for i in range(k)}}
        self.mu = 1

    def forward(self, batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        x, y, u_w = batch["x"], batch["y"], batch["u_w"]
        u_s = [batch[f"u_s{i}"] for i in range(self.k)]
        zero = x.new_zeros((), dtype=torch.float32)

        loss_rot = self.rotation_loss(u_s[0]) if self.lambda_rot > 0 else zero

        # Label guesses (no gradient, no BN update) and the pre-mixup loss L_Û1 on u_s0.
        guess_views = (
            self.guess_from_weak_view if self.redux == "1st" else self.guess_from_every_view
        )
        targets_views, probs_guessed, loss_u1 = guess_views(u_w, u_s)
        probs_u_w = probs_guessed[: len(u_w)]

        # MixUp over [x, u_w, u_s0..u_s(K-1)]; K + 2 interleaved calls, BN statistics from the last.
        targets_x = F.one_hot(y, self.num_classes).float()
        logits, targets = forward.mix_and_forward(
            self.model, [x, u_w, *u_s], [targets_x, *targets_views], self.beta, -1
        )
        n = len(x)
        loss_x = losses.soft_cross_entropy(logits[:n], targets[:n]).mean()
        unlabeled = (
            losses.soft_cross_entropy if self.unlabeled_loss == "xe" else losses.probability_mse
        )
        loss_u = unlabeled(logits[n:], targets[n:]).mean()

        return {
            "loss": self.total_loss(loss_x, loss_u1, loss_u, loss_rot, step),
            "loss_x": loss_x.detach(),
            "loss_u": loss_u.detach(),
            "loss_u1": loss_u1.detach(),
            "loss_rot": loss_rot.detach(),
            **pseudo.monitors(probs_u_w, targets_views[0].argmax(dim=-1), None, batch.get("u_y")),
            # p_model's entry: the mean of the guessed predictions (u_w alone with '1st')
            "unlabeled_distribution": probs_guessed.mean(dim=0),
        }

    def guess(self, probs: Tensor) -> Tensor:
        """Sharpen(DA(probs)): the label guess of `guess_label` from un-aligned predictions."""
        aligned = self.alignment(probs) if self.distribution_alignment else probs
        return pseudo.sharpen(aligned, self.temperature)

    def guess_from_weak_view(
        self, u_w: Tensor, u_s: list[Tensor]
    ) -> tuple[list[Tensor], Tensor, Tensor]:
        """Redux '1st': every view learns the guess on u_w.

        Returns:
            (K + 1 targets (B, C); the un-aligned u_w predictions (B, C); L_Û1, whose u_s0 call
            is skipped when λ_Û1 = 0).
        """
        with torch.no_grad(), bn.frozen_running_stats(self.model):
            probs_u_w = self.model(u_w).float().softmax(dim=-1)
        targets_u = self.guess(probs_u_w)
        loss_u1 = u_w.new_zeros((), dtype=torch.float32)
        if self.lambda_u1 > 0:
            with bn.frozen_running_stats(self.model):
                logits_u_s0 = self.model(u_s[0]).float()
            loss_u1 = losses.soft_cross_entropy(logits_u_s0, targets_u).mean()
        return [targets_u] * (self.k + 1), probs_u_w, loss_u1

    def guess_from_every_view(
        self, u_w: Tensor, u_s: list[Tensor]
    ) -> tuple[list[Tensor], Tensor, Tensor]:
        """Redux 'swap' / 'mean': targets of the K + 1 views from predictions on all of them.

        Returns:
            (K + 1 targets (B, C), in pool order u_w, u_s0, ...; the (K + 1)·B un-aligned
            predictions the code pushes into p_model; L_Û1).
        """
        with bn.frozen_running_stats(self.model):
            with torch.no_grad():
                probs_u_w = self.model(u_w).float().softmax(dim=-1)
            with torch.set_grad_enabled(torch.is_grad_enabled() and self.lambda_u1 > 0):
                logits_u_s0 = self.model(u_s[0]).float()
            with torch.no_grad():
                rest = [self.model(view).float().softmax(dim=-1) for view in u_s[1:]]
        probs = [probs_u_w, logits_u_s0.detach().softmax(dim=-1), *rest]
        if self.redux == "swap":  # view i learns from view i + 1 (mod K + 1)
            targets = [self.guess(p) for p in probs[1:] + probs[:1]]
        else:  # "mean"
            targets = [self.guess(torch.stack(probs).mean(dim=0))] * len(probs)
        loss_u1 = u_w.new_zeros((), dtype=torch.float32)
        if self.lambda_u1 > 0:
            loss_u1 = losses.soft_cross_entropy(logits_u_s0, targets[0]).mean()
        return targets, torch.cat(probs), loss_u1

    def rotation_loss(self, images: Tensor) -> Tensor:
        """L_rot: cross-entropy of the rotation head on `rotate_quarters(images)` (own call)."""
        if images.shape[-1] != images.shape[-2]:
            raise UserError(
                f"ReMixMatch's rotation loss needs square images, got {tuple(images.shape[-2:])}; "
                "resize them (data.image_size) or turn it off with --set algorithm.lambda_rot=0"
            )
        rotated, labels = rotate_quarters(images)
        with bn.frozen_running_stats(self.model):
            logits_rot = self.rotation_head(self.model.forward_features(rotated)).float()
        return F.cross_entropy(logits_rot, labels)

    def total_loss(
        self, loss_x: Tensor, loss_u1: Tensor, loss_u: Tensor, loss_rot: Tensor, step: int
    ) -> Tensor:
        """L_X + r·λ_Û1·L_Û1 + r·λ_U·L_U + λ_r·L_rot with the linear ramp r.

        docs/algorithms.md#numeric-checks R5.
        """
        ramp = linear_rampup(step, self.rampup_steps)
        return (
            loss_x
            + ramp * self.lambda_u1 * loss_u1
            + ramp * self.lambda_u * loss_u
            + self.lambda_rot * loss_rot
        )

    @torch.no_grad()
    def on_step_end(self, batch: dict[str, Tensor], out: dict[str, Tensor], step: int) -> None:
        """The code's post-step ops: p_model ← un-aligned weak batch mean; p_data ← labels."""
        self.alignment.update(out["unlabeled_distribution"], batch["y"])


def given_distribution(weights: Sequence[float], num_classes: int) -> list[float]:
    """A user's `p_data`, checked: C non-negative numbers, not all zero (normalised later).

    Raises:
        UserError: if the length or the values are wrong.
    """
    values = list(weights)
    if (
        len(values) != num_classes
        or not all(isinstance(v, (int, float)) and v >= 0 for v in values)
        or sum(values) <= 0
    ):
        raise UserError(
            f"algorithm.p_data must be {num_classes} non-negative class weights, not all zero "
            f"(e.g. the unlabeled class frequencies), got {weights!r}"
        )
    return [float(v) for v in values]


def _glorot_linear(in_features: int, out_features: int) -> nn.Linear:
    """tf.layers.dense with glorot_normal_initializer (truncated at 2σ, σ corrected) and bias 0."""
    layer = nn.Linear(in_features, out_features)
    std = math.sqrt(2.0 / (in_features + out_features)) / 0.87962566103423978
    nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std)
    nn.init.zeros_(layer.bias)
    return layer
