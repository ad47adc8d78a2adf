"""Projection heads that map pooled backbone features to unit-length embeddings.

SimMatch and CoMatch compare images through a low-dimensional, L2-normalised embedding computed
by a small MLP on top of the classifier's pooled features (the SimCLR recipe).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class ProjectionHead(nn.Sequential):
    """Linear(D, D) → activation → Linear(D, out_dim) → L2 normalisation.

    Items 0 and 2 are the two linear layers (indexable like any `nn.Sequential`).

    Args:
        in_dim: D, the backbone's feature size (`model.num_features`).
        out_dim: embedding size (128 in SimMatch, 64 in CoMatch's CIFAR code).
        negative_slope: slope of the hidden LeakyReLU; 0 gives a ReLU (SimMatch), 0.1 is the
            CoMatch code's (`WideResNet.py`, `relu_mlp`).

    Example:
        >>> head = ProjectionHead(model.num_features, 64, negative_slope=0.1)
        >>> z = head(model.forward_features(x))  # (N, 64), unit rows
    """

    def __init__(self, in_dim: int, out_dim: int, negative_slope: float = 0.0) -> None:
        activation = nn.ReLU() if negative_slope == 0 else nn.LeakyReLU(negative_slope)
        super().__init__(nn.Linear(in_dim, in_dim), activation, nn.Linear(in_dim, out_dim))

    def forward(self, features: Tensor) -> Tensor:
        """(N, D) features → (N, out_dim) unit-length embeddings."""
        return F.normalize(super().forward(features), dim=-1)
