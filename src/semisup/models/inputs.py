"""The model input step: uint8 images to the float range the network was trained on."""

from __future__ import annotations

import torch
from torch import Tensor


def to_model_input(images: Tensor, channels_last: bool = False) -> Tensor:
    """Scales uint8 images to [−1, 1] as the Google code does (`x · 2/255 − 1`, no whitening).

    Args:
        images: uint8 (N, C, H, W).
        channels_last: return the tensor in channels-last memory format (faster convolutions on
            some devices); values are identical.
    """
    x = images.float().mul_(2.0 / 255.0).sub_(1.0)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x
