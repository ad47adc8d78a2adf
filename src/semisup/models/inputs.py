"""The model input step: uint8 images to the float range the network was trained on.

By default the Google code's scaling to [−1, 1]. A network that was pretrained on other inputs
(a timm model: ImageNet mean and std) declares its own per-channel `Normalization` as its
`input_normalization` attribute; training, evaluation, inference and export read it from the
model through `input_normalization(model)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class Normalization:
    """Per-channel statistics of images scaled to [0, 1]: the network sees (x/255 − mean) / std.

    Attributes:
        mean: one value per input channel.
        std: one value per input channel, all positive.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std) or not self.mean:
            raise ValueError(f"mean {self.mean} and std {self.std} need one value per channel")
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std}")

    def apply(self, images: Tensor) -> Tensor:
        """uint8 (N, C, H, W) → float (N, C, H, W); C must equal the number of statistics."""
        if images.shape[1] != len(self.mean):
            raise ValueError(
                f"images have {images.shape[1]} channels, the normalization {len(self.mean)}"
            )
        mean = torch.tensor(self.mean, device=images.device).view(-1, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(-1, 1, 1)
        return images.float().div_(255.0).sub_(mean).div_(std)


def input_normalization(model: nn.Module) -> Normalization | None:
    """The `Normalization` a model declares, or None for the default [−1, 1] scaling."""
    normalization = getattr(model, "input_normalization", None)
    return normalization if isinstance(normalization, Normalization) else None


def to_model_input(
    images: Tensor, channels_last: bool = False, normalization: Normalization | None = None
) -> Tensor:
    """Scales uint8 images to the network's input.

    Without a normalization, to [−1, 1] as the Google code does (`x · 2/255 − 1`, no
    whitening); with one, to (x/255 − mean) / std per channel.

    Args:
        images: uint8 (N, C, H, W).
        channels_last: return the tensor in channels-last memory format (faster convolutions on
            some devices); values are identical.
        normalization: the model's `input_normalization` (None: [−1, 1]).
    """
    if normalization is None:
        x = images.float().mul_(2.0 / 255.0).sub_(1.0)
    else:
        x = normalization.apply(images)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x
