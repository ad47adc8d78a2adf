"""SimMatch (Zheng et al., CVPR 2022, https://arxiv.org/abs/2203.06915).

FixMatch-style semantic pseudo-labels plus instance similarities to a memory bank of labeled
embeddings; "unfolding" and "aggregation" let the two kinds of pseudo-label refine each other.
Two variants of the official code (docs/algorithms.md#simmatch):

* `simmatch` (CIFAR code, mirrored by USB): the online model produces every teacher signal, the
  bank is smoothed with momentum 0.7 and normalised per feature dimension across the batch
  (`bank_normalization="code"`), DA queue of 32, τ = 0.95, λ_in = 1.
* `simmatch_imagenet` (KyleZheng1997/simmatch): an EMA teacher (0.999) encodes the weak views and
  the labeled images, the bank is overwritten, DA queue of 256, τ = 0.7, λ_u = 10, λ_in = 5, μ = 5,
  5 warm-up epochs then a half cosine, weight decay 1e-4 on all parameters.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semisup.algorithms.base import Algorithm, TaskInfo
from semisup.algorithms.registry import ALGORITHMS
from semisup.math import losses, pseudo
from semisup.modules import alignment
from semisup.modules.heads import ProjectionHead
from semisup.modules.memory import BankNormalization, LabeledMemoryBank


def unfold(similarities: Tensor, probs: Tensor, bank_labels: Tensor) -> Tensor:
    """Instance pseudo-labels calibrated by the class prediction, eq. (7)-(8).

    q̂_i ∝ q_i · p[label_i]: each bank item's similarity is scaled by the predicted probability
    of that item's class, then renormalised over the K items.

    Args:
        similarities: (N, K) softmax similarities q^w to the bank items.
        probs: (N, C) class pseudo-labels p^w.
        bank_labels: (K,) class of each bank item.
    """
    scaled = similarities * probs[:, bank_labels]
    return scaled / scaled.sum(dim=1, keepdim=True)


def aggregate(similarities: Tensor, bank_labels: Tensor, num_classes: int) -> Tensor:
    """Class distribution of the instance similarities, eq. (9): a_c = Σ_{i: label_i = c} q_i."""
    index = bank_labels.expand(len(similarities), -1)
    zeros = similarities.new_zeros(len(similarities), num_classes)
    return zeros.scatter_add(1, index, similarities)


@ALGORITHMS.register("simmatch")
class SimMatch(Algorithm):
    """SimMatch (Zheng et al., CVPR 2022), eq. (1)-(12); the CIFAR code's defaults.

    Per step: L_s = CE(y, p^l); with p^w = DA(softmax(weak logits)) and bank similarities
    q^w = softmax(z^w·Q_f / t), the pseudo-label is p̂ = α p^w + (1 − α) aggregate(q^w) and
    the instance target q̂ = unfold(q^w, p^w); L_u = mean_μB 1[max p̂ ≥ τ] H(p̂, p^s) (soft
    target) and L_in = mean_μB H(q̂, q^s). Before `start_steps` (the code's first epoch) p̂ = p^w
    and L_in = 0. Gradients flow only through the labeled and strong views: the weak view and
    the bank are targets. After the optimizer step the bank takes the labeled embeddings of
    this step's forward (online model, or the teacher; passed as
    `out["state"]["bank_embeddings"]`) at the labeled indices `x_idx`, and the DA queue takes
    this step's un-aligned batch mean (`out["unlabeled_distribution"]`); `forward` already
    divides by the queue as it will be after that write, as the code does. Bank, queue and
    teacher are buffers/submodules, so checkpoints hold them.

    Args:
        model: the classifier (needs `forward_features`, `forward_head`, `num_features`).
        info: data/run facts (`num_labeled` sizes the bank).
        threshold: τ for the pseudo-label mask (≥).
        lambda_u: λ_u, weight of L_u.
        lambda_in: λ_in, weight of L_in.
        mu: μ, unlabeled images per labeled image.
        temperature: t of the similarity softmax (0.1).
        alpha: α, weight of p^w in p̂ (the code's `c_smooth`, 0.9).
        proj_dim: size of the L2-normalised embedding (128).
        bank_momentum: m of eq. (12) (0.7 CIFAR; 0 overwrites, ImageNet).
        bank_normalization: how the bank write normalises (`memory.momentum_update`). "code"
            (default, the CIFAR code and USB `update_bank`): F.normalize of the (D, n) slice
            with dim=1, each feature dimension across the n written items, so bank vectors
            have norm about 1.4 at D = 128, n = 64 and similarities are sharper (an effective
            temperature near 0.07). "paper": each embedding to unit norm, as the paper's
            cosine similarity and the ImageNet code's (unit, overwritten) embeddings.
        da_length: DA queue length in batches (32 CIFAR, 256 ImageNet).
        start_steps: steps before the instance loss and label propagation start (1,024: the
            first "epoch" of the code); shorten for short runs.
        teacher: "online" (CIFAR: the trained model gives the weak-view signals and bank
            embeddings) or "ema" (ImageNet: an EMA copy of model and head, eq. (11), does).
        teacher_momentum: EMA momentum of the "ema" teacher (0.999; parameters only).
    """

    # The projection head gets no gradient before `start_steps` (no instance loss yet).
    ddp_find_unused_parameters: ClassVar[bool] = True

    step_hyperparameters: ClassVar[tuple[str, ...]] = ("start_steps",)

    def __init__(
        self,
        model: nn.Module,
        info: TaskInfo,
        threshold: float = 0.95,
        lambda_u: float = 1.0,
        lambda_in: float = 1.0,
        mu: int = 7,
        temperature: float = 0.1,
        alpha: float = 0.9,
        proj_dim: int = 128,
        bank_momentum: float = 0.7,
        bank_normalization: BankNormalization = "code",
        da_length: int = 32,
        start_steps: int = 1024,
        teacher: Literal["online", "ema"] = "online",
        teacher_momentum: float = 0.999,
    ) -> None:
        super().__init__(model, info)
        self.threshold, self.lambda_u, self.lambda_in = threshold, lambda_u, lambda_in
        self.mu, self.temperature, self.alpha = mu, temperature, alpha
        self.bank_momentum, self.start_steps = bank_momentum, start_steps
        self.teacher_momentum = teacher_momentum
        self.views = {"x": "weak", "u_w": "weak", "u_s": "strong"}
        self.head = ProjectionHead(model.num_features, proj_dim)
        self.bank = LabeledMemoryBank(info.num_labeled, proj_dim, normalization=bank_normalization)
        self.da_queue = alignment.WindowMean(info.num_classes, da_length, fill=0.0)
        self.teacher: nn.ModuleDict | None = None
        if teacher == "ema":
            self.teacher = copy.deepcopy(nn.ModuleDict({"model": model, "head": self.head}))
            self.teacher.requires_grad_(False)

    def encode(self, x: Tensor, teacher: bool = False) -> tuple[Tensor, Tensor]:
        """Logits (N, C) and unit embeddings (N, proj_dim) of the student or the teacher."""
        model, head = self.model, self.head
        if teacher and self.teacher is not None:
            model, head = self.teacher["model"], self.teacher["head"]
        features = model.forward_features(x)
        return model.forward_head(features), head(features)

    def forward(self, batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        x, u_w, u_s = batch["x"], batch["u_w"], batch["u_s"]
        if self.teacher is None:  # CIFAR: one forward of the online model over all views
            logits, z = self.encode(torch.cat([x, u_w, u_s]))
            logits_x, logits_u_w, logits_u_s = logits.split([len(x), len(u_w), len(u_s)])
            z_x, z_u_w, z_u_s = z.split([len(x), len(u_w), len(u_s)])
        else:  # ImageNet: student on (x, u_s), EMA teacher on (x, u_w)
            logits, z = self.encode(torch.cat([x, u_s]))
            logits_x, logits_u_s = logits.split([len(x), len(u_s)])
            z_u_s = z[len(x) :]
            with torch.no_grad():
                t_logits, t_z = self.encode(torch.cat([x, u_w]), teacher=True)
            logits_u_w, (z_x, z_u_w) = t_logits[len(x) :], t_z.split([len(x), len(u_w)])

        # Supervised cross-entropy, eq. (1).
        loss_x = F.cross_entropy(logits_x, batch["y"])

        # Semantic pseudo-labels p^w with distribution alignment, eq. (2).
        probs_u_w = logits_u_w.detach().float().softmax(dim=-1)
        probs_aligned = alignment.align_with_queue(probs_u_w, self.da_queue.history)

        # Label propagation through the labeled bank, eq. (3), (7)-(10).
        bank, bank_labels = self.bank.embeddings, self.bank.labels
        started = step >= self.start_steps
        targets_u = probs_aligned
        if started:
            similarities = (z_u_w.detach().float() @ bank.T / self.temperature).softmax(dim=-1)
            targets_in = unfold(similarities, probs_aligned, bank_labels)
            agg = aggregate(similarities, bank_labels, self.num_classes)
            targets_u = self.alpha * probs_aligned + (1 - self.alpha) * agg

        # Semantic consistency with soft targets, mean over all μB, eq. (2).
        mask = pseudo.confidence_mask(targets_u, self.threshold)
        loss_u = (losses.soft_cross_entropy(logits_u_s, targets_u) * mask).mean()

        # Instance consistency of the strong view with q̂, eq. (4)-(5).
        loss_in = logits_x.new_zeros((), dtype=torch.float32)
        if started:
            loss_in = losses.soft_cross_entropy(
                z_u_s.float() @ bank.T / self.temperature, targets_in
            )
            loss_in = loss_in.mean()

        return {
            "loss": loss_x + self.lambda_u * loss_u + self.lambda_in * loss_in,
            "loss_x": loss_x.detach(),
            "loss_u": loss_u.detach(),
            "loss_in": loss_in.detach(),
            **pseudo.monitors(probs_u_w, targets_u.argmax(dim=-1), mask, batch.get("u_y")),
            "state": {"bank_embeddings": z_x.detach()},
        }

    @torch.no_grad()
    def on_step_end(self, batch: dict[str, Tensor], out: dict[str, Tensor], step: int) -> None:
        """Bank write (eq. (12) or overwrite), DA queue push, EMA teacher step (eq. (11))."""
        embeddings = out["state"]["bank_embeddings"]
        self.bank.update(batch["x_idx"], embeddings, batch["y"], self.bank_momentum)
        self.da_queue.update(out["unlabeled_distribution"])
        if self.teacher is not None:
            student = nn.ModuleDict({"model": self.model, "head": self.head})
            teacher_params = list(self.teacher.parameters())
            student_params = [p.detach() for p in student.parameters()]
            torch._foreach_lerp_(teacher_params, student_params, 1.0 - self.teacher_momentum)


@ALGORITHMS.register("simmatch_imagenet")
class SimMatchImageNet(SimMatch):
    """SimMatch (Zheng et al., CVPR 2022) with the ImageNet code's settings (EMA teacher).

    Only the defaults differ from `simmatch` (script/train.sh: τ 0.7, λ_u 10, λ_in 5, μ 5,
    DA 256). The optimizer follows `simmatch.py`: SGD 0.03 Nesterov with weight decay 1e-4 on
    every parameter (`model.parameters()`, biases and BatchNorm included), and the rate of
    `--cos --warmup-epoch 5 --epochs 400` (`optim.schedule=warmup_cosine`: linear warm-up over
    5 of 400 epochs, then ½(1 + cos) to 0, once per epoch; an epoch is train.steps / 400 steps).
    The code evaluates the student; the trainer evaluates its EMA of the student, which is this
    teacher's twin.
    """

    optim_defaults: ClassVar[dict[str, Any]] = {
        **Algorithm.optim_defaults,
        "weight_decay": 1e-4,
        "decay_all_parameters": True,
        "schedule": "warmup_cosine",
        "warmup_epochs": 5,
        "schedule_epochs": 400,
    }

    def __init__(
        self,
        model: nn.Module,
        info: TaskInfo,
        threshold: float = 0.7,
        lambda_u: float = 10.0,
        lambda_in: float = 5.0,
        mu: int = 5,
        temperature: float = 0.1,
        alpha: float = 0.9,
        proj_dim: int = 128,
        bank_momentum: float = 0.0,
        bank_normalization: BankNormalization = "paper",
        da_length: int = 256,
        start_steps: int = 1024,
        teacher: Literal["online", "ema"] = "ema",
        teacher_momentum: float = 0.999,
    ) -> None:
        super().__init__(
            model,
            info,
            threshold=threshold,
            lambda_u=lambda_u,
            lambda_in=lambda_in,
            mu=mu,
            temperature=temperature,
            alpha=alpha,
            proj_dim=proj_dim,
            bank_momentum=bank_momentum,
            bank_normalization=bank_normalization,
            da_length=da_length,
            start_steps=start_steps,
            teacher=teacher,
            teacher_momentum=teacher_momentum,
        )
