"""CoMatch (Li, Xiong & Hoi, ICCV 2021, https://arxiv.org/abs/2011.11183).

Class probabilities and low-dimensional embeddings are learned jointly and regularise each
other: embeddings smooth the pseudo-labels through a memory bank of past weak views
("memory-smoothed pseudo-labelling"), and the pseudo-labels define a graph that the embeddings
of two strong views must reproduce ("graph-based contrastive learning"). Follows the CIFAR code,
salesforce/CoMatch `Train_CoMatch.py` (mirrored by USB `algorithms/comatch`):

- one forward call over concat(x, u_w, u_s0, u_s1); the projection head is the code's
  Linear-LeakyReLU(0.1)-Linear to 64 dimensions, L2-normalised;
- distribution alignment towards uniform with the mean of the last 32 batch means (the current
  batch included), then memory smoothing with α = 0.9 once the queue has filled (the code's
  `it > queue_batch`, i.e. more than K items pushed);
- memory bank (queue) of K = 2560 = 5·(1 + μ)·B entries: weak-view embeddings with their aligned
  (not smoothed) pseudo-labels, and labeled embeddings with one-hot labels;
- L_u = (1/μB) Σ 1[max q ≥ 0.95]·H(q, p(u_s0)) with the soft smoothed target q;
  L_c = contrastive loss of the u_s0/u_s1 embeddings against the pseudo-label graph
  (threshold 0.8, self-loops, temperature 0.2); L = L_x + λ_u L_u + λ_c L_c, λ_c = 1 (CIFAR-10);
- SGD 0.03 Nesterov with cosine decay, wd 5e-4, 512 epochs of 1024 steps (2^19 steps).

The two strong views are the code's (`datasets/cifar.py`): u_s0 is the weak view plus the
strong policy and a cutout (`trans_strong0`: RandAugment(2, 10) + cutout 16 px; here the
configured `augment.strong` policy, with its cutout); u_s1 is SimCLR's augmentation on the
stored image (`trans_strong1`: random resized crop of 20-100 % of the area, flip, colour
jitter 0.4/0.4/0.4/0.1 with probability 0.8, grey scale with probability 0.2), the "simclr"
view (`semisup.augment.simclr`, Pillow-exact). USB draws both views from its strong policy.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semisup import distributed
from semisup.algorithms.base import Algorithm, TaskInfo
from semisup.algorithms.registry import ALGORITHMS
from semisup.errors import UserError
from semisup.math import losses, pseudo
from semisup.modules import alignment
from semisup.modules.alignment import WindowMean
from semisup.modules.heads import ProjectionHead
from semisup.modules.memory import EmbeddingQueue

LOG_EPS = 1e-7  # the code's log(sim_probs + 1e-7)


def memory_smoothing(
    probs: Tensor,
    embeddings: Tensor,
    bank_embeddings: Tensor,
    bank_probs: Tensor,
    alpha: float,
    temperature: float,
) -> Tensor:
    """Memory-smoothed pseudo-labels q = α·p + (1 − α)·Σ_k a_k·q_k, a = softmax(z·Z_bankᵀ / t).

    Args:
        probs: (N, C) aligned weak-view predictions p.
        embeddings: (N, D) unit weak-view embeddings z.
        bank_embeddings: (K, D) stored embeddings.
        bank_probs: (K, C) stored class distributions (pseudo-labels or one-hot labels).
        alpha: α, weight of the model's own prediction (0.9).
        temperature: t of the similarity softmax (0.2).
    """
    affinity = (embeddings @ bank_embeddings.T / temperature).softmax(dim=-1)
    return alpha * probs + (1 - alpha) * affinity @ bank_probs


def pseudo_label_graph(probs: Tensor, threshold: float) -> Tensor:
    """Row-normalised pseudo-label graph: W_ij = q_i·q_j kept where ≥ T, with W_ii = 1.

    Args:
        probs: (N, C) pseudo-labels q.
        threshold: T, the smallest similarity that makes an edge (0.8).
    """
    graph = probs @ probs.T
    graph.fill_diagonal_(1.0)
    graph = graph * (graph >= threshold)
    return graph / graph.sum(dim=1, keepdim=True)


def graph_contrastive_loss(
    embeddings_a: Tensor, embeddings_b: Tensor, graph: Tensor, temperature: float
) -> Tensor:
    """Per-row cross-entropy between the graph and the embedding graph of two views, (N,).

    The embedding graph is softmax_j(z_a,i · z_b,j / t); the loss of row i is
    −Σ_j W_ij · log(that + 1e-7), as in the code.

    Args:
        embeddings_a: (N, D) unit embeddings of the first strong view.
        embeddings_b: (N, D) unit embeddings of the second strong view.
        graph: (N, N) row-normalised target graph (no gradient).
        temperature: t (0.2).
    """
    similarities = (embeddings_a @ embeddings_b.T / temperature).softmax(dim=-1)
    return -(graph * (similarities + LOG_EPS).log()).sum(dim=1)


@ALGORITHMS.register("comatch")
class CoMatch(Algorithm):
    """CoMatch (Li, Xiong & Hoi, ICCV 2021): memory-smoothed pseudo-labels, graph contrastive loss.

    Gradients flow through the labeled logits, the u_s0 logits and the embeddings of u_s0 and
    u_s1; the weak view, the queue and the graph are targets. After the optimizer step the queue
    takes this step's weak-view and labeled embeddings (gathered from every process) and the DA
    window this step's un-aligned batch mean; `forward` already divides by the window as it
    will be after that push, as the code does. Queue and window are buffers (checkpointed).

    Args:
        model: the classifier (needs `forward_features`, `forward_head`, `num_features`).
        info: data/run facts.
        threshold: τ, confidence of the smoothed pseudo-label above which L_u uses it (≥).
        lambda_u: λ_u, weight of L_u.
        lambda_c: λ_c, weight of the contrastive loss (1 for CIFAR-10).
        mu: μ, unlabeled images per labeled image.
        temperature: t of both the memory and the embedding similarities (0.2).
        contrast_threshold: T, the pseudo-label graph's edge threshold (0.8).
        alpha: α of memory smoothing (0.9).
        proj_dim: embedding size (64).
        queue_size: K, entries in the memory bank (2560 for B = 64, μ = 7).
        da_length: batches in the distribution-alignment window (32).
    """

    # The projection head gets no gradient when λ_c = 0.
    ddp_find_unused_parameters: ClassVar[bool] = True

    def __init__(
        self,
        model: nn.Module,
        info: TaskInfo,
        threshold: float = 0.95,
        lambda_u: float = 1.0,
        lambda_c: float = 1.0,
        mu: int = 7,
        temperature: float = 0.2,
        contrast_threshold: float = 0.8,
        alpha: float = 0.9,
        proj_dim: int = 64,
        queue_size: int = 2560,
        da_length: int = 32,
    ) -> None:
        super().__init__(model, info)
        if not 0.0 <= contrast_threshold <= 1.0:
            raise UserError(
                f"algorithm.contrast_threshold must be in [0, 1] (a similarity of two "
                f"distributions; 0.8 in the paper), got {contrast_threshold}"
            )
        self.threshold, self.lambda_u, self.lambda_c, self.mu = threshold, lambda_u, lambda_c, mu
        self.temperature = temperature
        self.contrast_threshold = contrast_threshold
        self.alpha = alpha
        self.views = {"x": "weak", "u_w": "weak", "u_s0": "strong_cutout", "u_s1": "simclr"}
        self.head = ProjectionHead(model.num_features, proj_dim, negative_slope=0.1)
        self.queue = EmbeddingQueue(queue_size, proj_dim, info.num_classes)
        self.da_queue = WindowMean(info.num_classes, da_length, fill=0.0)

    def forward(self, batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        x, u_w, u_s0, u_s1 = batch["x"], batch["u_w"], batch["u_s0"], batch["u_s1"]
        sizes = [len(x), len(u_w), len(u_s0), len(u_s1)]
        features = self.model.forward_features(torch.cat([x, u_w, u_s0, u_s1]))
        logits_x, logits_u_w, logits_u_s0, _ = self.model.forward_head(features).split(sizes)
        z_x, z_u_w, z_u_s0, z_u_s1 = self.head(features).float().split(sizes)

        loss_x = F.cross_entropy(logits_x, batch["y"])

        # Pseudo-labels: DA towards uniform, then memory smoothing once the queue is full.
        probs_u_w = logits_u_w.detach().float().softmax(dim=-1)
        probs_aligned = alignment.align_with_queue(probs_u_w, self.da_queue.history)
        targets_u = probs_aligned
        if int(self.queue.count) > self.queue.size:
            targets_u = memory_smoothing(
                probs_aligned,
                z_u_w.detach(),
                self.queue.embeddings,
                self.queue.probs,
                self.alpha,
                self.temperature,
            )

        # Soft-target consistency of the first strong view, mean over all μB images.
        mask = pseudo.confidence_mask(targets_u, self.threshold)
        loss_u = (losses.soft_cross_entropy(logits_u_s0, targets_u) * mask).mean()

        # The embedding graph of the two strong views follows the pseudo-label graph.
        graph = pseudo_label_graph(targets_u, self.contrast_threshold)
        loss_c = graph_contrastive_loss(z_u_s0, z_u_s1, graph, self.temperature).mean()

        one_hot = F.one_hot(batch["y"], self.num_classes).float()
        return {
            "loss": loss_x + self.lambda_u * loss_u + self.lambda_c * loss_c,
            "loss_x": loss_x.detach(),
            "loss_u": loss_u.detach(),
            "loss_c": loss_c.detach(),
            "graph_edges": (graph > 0).float().sum(dim=1).mean(),
            **pseudo.monitors(probs_u_w, targets_u.argmax(dim=-1), mask, batch.get("u_y")),
            "state": {
                "queue_embeddings": torch.cat([z_u_w, z_x]).detach(),
                "queue_probs": torch.cat([probs_aligned, one_hot]),
            },
        }

    @torch.no_grad()
    def on_step_end(self, batch: dict[str, Tensor], out: dict[str, Tensor], step: int) -> None:
        """Pushes this step's embeddings into the queue and its batch mean into the DA window."""
        state = out["state"]
        embeddings = distributed.all_gather_cat(state["queue_embeddings"])
        self.queue.push(embeddings, distributed.all_gather_cat(state["queue_probs"]))
        self.da_queue.update(distributed.all_reduce_mean(out["unlabeled_distribution"]))
