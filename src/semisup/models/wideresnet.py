"""Wide ResNet as in the MixMatch/ReMixMatch/FixMatch code (libml/models.py `ResNet`).

Faithful details (docs/algorithms.md#wide-resnet): a 3x3 stem with 16 channels; `scales` stages
of `repeat=4` pre-activation residual blocks with `filters << scale` channels; the first block of
stage 0 shortcuts the *activated* input ("activate before residual"); 1x1 projection shortcuts
where the width changes; BatchNorm with TF momentum 0.999 and epsilon 1e-3 (PyTorch momentum 0.001,
eps 1e-3); LeakyReLU(0.1); convolutions with bias, initialised N(0, 1/(0.5·k²·out_channels)); a
Glorot-normal (truncated) dense classifier. Strided 3x3 convolutions pad like TF's 'same'
(0 before, 1 after), so the kernel centres on odd pixels as in the original.

WRN-28-2 = filters 32, scales 3; WRN-28-8 = filters 128; "WRN-37-2" (STL-10) = filters 32,
scales 4.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from semisup.models.registry import MODELS


def _conv(in_ch: int, out_ch: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    conv = nn.Conv2d(in_ch, out_ch, kernel, stride, padding=kernel // 2 if stride == 1 else 0)
    nn.init.normal_(conv.weight, std=1.0 / math.sqrt(0.5 * kernel * kernel * out_ch))
    nn.init.zeros_(conv.bias)
    return conv


class TFSamePadConv(nn.Module):
    """A strided 3x3 convolution padded like TF 'same': 0 rows/cols before, 1 after."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv = _conv(in_ch, out_ch, 3, stride)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


def _bn(channels: int, momentum: float) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=momentum, eps=1e-3)


class ResidualBlock(nn.Module):
    """BN → LReLU → conv3x3(stride) → BN → LReLU → conv3x3, plus a (projected) shortcut."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int,
        activate_before_residual: bool,
        bn_momentum: float,
    ) -> None:
        super().__init__()
        self.bn1 = _bn(in_ch, bn_momentum)
        self.conv1 = (
            _conv(in_ch, out_ch, 3) if stride == 1 else TFSamePadConv(in_ch, out_ch, stride)
        )
        self.bn2 = _bn(out_ch, bn_momentum)
        self.conv2 = _conv(out_ch, out_ch, 3)
        self.shortcut = _conv(in_ch, out_ch, 1, stride) if in_ch != out_ch else None
        self.activate_before_residual = activate_before_residual

    def forward(self, x0: Tensor) -> Tensor:
        x = F.leaky_relu(self.bn1(x0), 0.1)
        if self.activate_before_residual:
            x0 = x
        x = self.conv1(x)
        x = self.conv2(F.leaky_relu(self.bn2(x), 0.1))
        if self.shortcut is not None:
            x0 = self.shortcut(x0)
        return x0 + x


class WideResNet(nn.Module):
    """The libml ResNet classifier; see the module docstring."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        filters: int = 32,
        scales: int = 3,
        repeat: int = 4,
        bn_momentum: float = 0.001,
    ) -> None:
        super().__init__()
        self.stem = _conv(in_channels, 16, 3)
        blocks: list[nn.Module] = []
        channels = 16
        for scale in range(scales):
            width = filters << scale
            for i in range(repeat):
                stride = 2 if scale > 0 and i == 0 else 1
                blocks.append(
                    ResidualBlock(channels, width, stride, scale == 0 and i == 0, bn_momentum)
                )
                channels = width
        self.blocks = nn.Sequential(*blocks)
        self.bn = _bn(channels, bn_momentum)
        self.num_features = channels
        self.fc = nn.Linear(channels, num_classes)
        glorot_std = math.sqrt(2.0 / (channels + num_classes)) / 0.87962566103423978
        nn.init.trunc_normal_(self.fc.weight, std=glorot_std, a=-2 * glorot_std, b=2 * glorot_std)
        nn.init.zeros_(self.fc.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """Pooled embedding (N, num_features): the vector ReMixMatch's rotation head reads."""
        x = self.blocks(self.stem(x))
        return F.leaky_relu(self.bn(x), 0.1).mean(dim=(2, 3))

    def forward_head(self, features: Tensor) -> Tensor:
        return self.fc(features)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    @property
    def head(self) -> nn.Linear:
        """The classifier layer."""
        return self.fc

    def layer_ids(self) -> dict[str, int]:
        """Depth of each parameter, for layer-wise learning-rate decay.

        The stem is 0, block i is i + 1, the final BN goes with the last block and the
        classifier is the deepest.
        """
        last = len(self.blocks)
        ids = {f"stem.{n}": 0 for n, _ in self.stem.named_parameters()}
        ids.update(
            {f"blocks.{n}": int(n.split(".")[0]) + 1 for n, _ in self.blocks.named_parameters()}
        )
        ids.update({f"bn.{n}": last for n, _ in self.bn.named_parameters()})
        ids.update({f"fc.{n}": last + 1 for n, _ in self.fc.named_parameters()})
        return ids


@MODELS.register("wrn28_2")
def wrn28_2(num_classes: int, in_channels: int = 3, bn_momentum: float = 0.001) -> WideResNet:
    """WRN-28-2 (1.5M parameters), the CIFAR-10/SVHN network of all the papers."""
    return WideResNet(num_classes, in_channels, filters=32, scales=3, bn_momentum=bn_momentum)


@MODELS.register("wrn28_8")
def wrn28_8(num_classes: int, in_channels: int = 3, bn_momentum: float = 0.001) -> WideResNet:
    """WRN-28-8 (23M parameters), FixMatch's CIFAR-100 network."""
    return WideResNet(num_classes, in_channels, filters=128, scales=3, bn_momentum=bn_momentum)


@MODELS.register("wrn37_2")
def wrn37_2(num_classes: int, in_channels: int = 3, bn_momentum: float = 0.001) -> WideResNet:
    """WRN-37-2: WRN-28-2 with a fourth scale, the papers' STL-10 (96x96) network."""
    return WideResNet(num_classes, in_channels, filters=32, scales=4, bn_momentum=bn_momentum)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
