"""A small convolutional network for tiny grey images (8x8 digits, 28x28 MNIST) on a CPU."""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from semisup.models.registry import MODELS


def _conv_bn(in_ch: int, out_ch: int, stride: int, bn_momentum: float, norm: str) -> nn.Sequential:
    if norm == "none":
        return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, stride, padding=1), nn.LeakyReLU(0.1))
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, stride, padding=1, bias=False),
        nn.BatchNorm2d(out_ch, momentum=bn_momentum, eps=1e-3),
        nn.LeakyReLU(0.1),
    )


class SmallCNN(nn.Module):
    """A 6-layer CNN: three stages of two 3x3 conv-BN-LeakyReLU layers.

    Widths are `width`, 2·`width`, 4·`width`, with stride 2 at the start of stages 2 and 3,
    then global average pooling and a linear classifier.

    Same conventions as the WRN (LeakyReLU 0.1, BN eps 1e-3) so algorithms behave alike on both.
    BN momentum defaults to 0.01 rather than the WRN's 0.001: CPU-scale runs last thousands,
    not millions, of steps, and the EMA model evaluates with these running statistics.
    `norm="none"` drops BatchNorm, so each image's output depends on that image alone (what a
    distributed run on CPUs, which have no SyncBatchNorm, needs to equal a single-process run).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        width: int = 16,
        bn_momentum: float = 0.01,
        norm: Literal["batch", "none"] = "batch",
    ) -> None:
        super().__init__()
        widths = (width, 2 * width, 4 * width)
        layers: list[nn.Module] = []
        channels = in_channels
        for stage, out_ch in enumerate(widths):
            layers.append(_conv_bn(channels, out_ch, 1 if stage == 0 else 2, bn_momentum, norm))
            layers.append(_conv_bn(out_ch, out_ch, 1, bn_momentum, norm))
            channels = out_ch
        self.features = nn.Sequential(*layers)
        self.num_features = channels
        self.fc = nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=0.1, mode="fan_out", nonlinearity="leaky_relu")

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x).mean(dim=(2, 3))

    def forward_head(self, features: Tensor) -> Tensor:
        return self.fc(features)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    @property
    def head(self) -> nn.Linear:
        """The classifier layer."""
        return self.fc

    def layer_ids(self) -> dict[str, int]:
        """Depth of each parameter: conv layer i at i, the classifier deepest."""
        ids = {f"features.{n}": int(n.split(".")[0]) for n, _ in self.features.named_parameters()}
        ids.update({f"fc.{n}": len(self.features) for n, _ in self.fc.named_parameters()})
        return ids


@MODELS.register("cnn")
def cnn(
    num_classes: int,
    in_channels: int = 1,
    width: int = 16,
    bn_momentum: float = 0.01,
    norm: Literal["batch", "none"] = "batch",
) -> SmallCNN:
    """SmallCNN, widths 16/32/64 by default (73k parameters; width=32 gives 288k)."""
    return SmallCNN(num_classes, in_channels, width, bn_momentum, norm)
