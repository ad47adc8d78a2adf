"""timm networks as semisup classifiers: `model.name=timm:<architecture>`.

Any architecture of timm (huggingface/pytorch-image-models) is built with its classifier sized to
the data's classes and wrapped in `TimmClassifier`, which gives it semisup's model contract:
`forward_features(x)` returns the POOLED features (N, D) (timm's own `forward_features` returns
the feature map; the wrapper applies timm's `forward_head(..., pre_logits=True)`, i.e. the
model's global pooling and any pre-logits layers), `forward_head(features)` the logits, and
`num_features` is D. SimMatch's and CoMatch's projection heads and ReMixMatch's rotation head
read these features as they read a WideResNet's.

The input normalisation (mean, std) and the preferred image size come from the architecture's
pretrained configuration (timm's `pretrained_cfg`: `mean`, `std`, `input_size`), so the network
sees its images as it did in pretraining.

timm is an optional dependency (`pip install 'semisup[timm]'`, README "Pretrained networks"); it
is imported only when a timm model is built.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

from torch import Tensor, nn

from semisup.errors import UserError
from semisup.models.inputs import Normalization

PREFIX = "timm:"
INSTALL_HINT = (
    "pip install 'semisup[timm]' into an environment with torch==2.14.1 and torchvision==0.29.1 "
    "(README, 'Pretrained networks')"
)


def require_timm() -> ModuleType:
    """The timm package, or a UserError saying how to install it."""
    try:
        return importlib.import_module("timm")
    except ImportError as e:
        raise UserError(f"timm models need the timm package ({e}): {INSTALL_HINT}") from e


def check_architecture(architecture: str) -> ModuleType:
    """timm, after checking that it knows `architecture` (else a UserError with near names)."""
    timm = require_timm()
    if not timm.is_model(architecture):
        near = timm.list_models(f"*{architecture[:6]}*")[:8]
        hint = f"; similar names: {', '.join(near)}" if near else ""
        raise UserError(
            f"timm has no architecture '{architecture}'{hint} (timm.list_models() lists them all)"
        )
    return timm


def pretrained_config(architecture: str) -> dict[str, Any]:
    """The pretrained configuration (mean, std, ...) of the architecture's default weights."""
    timm = check_architecture(architecture)
    cfg = timm.models.get_pretrained_cfg(architecture)
    return cfg.to_dict() if cfg is not None else {}


def normalization_for(cfg: dict[str, Any], in_channels: int) -> Normalization:
    """The `Normalization` of a pretrained configuration, for `in_channels` input channels.

    Grey images (one channel) take the mean of the configuration's per-channel statistics.
    """
    mean = tuple(float(v) for v in cfg.get("mean", (0.5, 0.5, 0.5)))
    std = tuple(float(v) for v in cfg.get("std", (0.5, 0.5, 0.5)))
    if len(mean) != in_channels:
        mean, std = (sum(mean) / len(mean),) * in_channels, (sum(std) / len(std),) * in_channels
    return Normalization(mean, std)


def preferred_image_size(architecture: str, timm_kwargs: dict[str, Any] | None) -> int:
    """The image side the network expects: `timm_kwargs["img_size"]`, else its pretrained size."""
    given = (timm_kwargs or {}).get("img_size")
    if given is not None:
        return int(given if isinstance(given, int) else given[-1])
    return int(pretrained_config(architecture).get("input_size", (3, 224, 224))[-1])


class TimmClassifier(nn.Module):
    """A timm network with semisup's contract (see the module docstring).

    Args:
        architecture: a timm model name (`timm.list_models()`).
        num_classes: size of the classifier.
        in_channels: 1 for grey images, 3 for RGB.
        timm_kwargs: further keyword arguments of `timm.create_model` (e.g. `img_size`,
            `patch_size`, `drop_path_rate`).
        normalization: the input normalisation; None: the architecture's pretrained mean/std.
    """

    def __init__(
        self,
        architecture: str,
        num_classes: int,
        in_channels: int = 3,
        timm_kwargs: dict[str, Any] | None = None,
        normalization: Normalization | None = None,
    ) -> None:
        super().__init__()
        timm = check_architecture(architecture)
        try:
            self.net = timm.create_model(
                architecture,
                pretrained=False,
                num_classes=num_classes,
                in_chans=in_channels,
                **(timm_kwargs or {}),
            )
        except TypeError as e:
            raise UserError(
                f"timm cannot build {architecture} with model.timm_kwargs={timm_kwargs}: {e}"
            ) from e
        self.architecture, self.in_channels = architecture, in_channels
        self.num_features = int(getattr(self.net, "head_hidden_size", 0) or self.net.num_features)
        self.input_normalization = normalization or normalization_for(
            self.net.pretrained_cfg, in_channels
        )

    @property
    def head(self) -> nn.Module:
        """The classifier layer, features (N, D) → logits (N, K)."""
        return self.net.get_classifier()

    def forward_features(self, x: Tensor) -> Tensor:
        """Pooled features (N, num_features): timm's feature map through its pooling."""
        return self.net.forward_head(self.net.forward_features(x), pre_logits=True)

    def forward_head(self, features: Tensor) -> Tensor:
        return self.head(features)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def layer_ids(self) -> dict[str, int]:
        """Depth of each parameter for layer-wise learning-rate decay (timm's group matcher).

        The stem is 0, each block one more, the final norm goes with the last block and the
        classifier is the deepest (as USB's `param_groups_layer_decay`,
        microsoft/Semi-supervised-learning `semilearn/nets/utils.py`).
        """
        from timm.models import group_parameters

        matcher = self.net.group_matcher(coarse=False)
        ids = group_parameters(self.net, matcher, reverse=True)
        return {f"net.{name}": int(layer) for name, layer in ids.items()}

    def no_weight_decay(self) -> set[str]:
        """Parameters timm keeps out of weight decay (a ViT's position embedding, class token)."""
        names = self.net.no_weight_decay() if hasattr(self.net, "no_weight_decay") else set()
        return {f"net.{name}" for name in names}

    def adapt_state_dict(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """A timm-format state dict made to fit this network by timm's own filter, if any.

        The architecture's `checkpoint_filter_fn` (timm's conversion of original checkpoints:
        a ViT's position embedding resampled to this image size, a resized patch embedding)
        is applied when its module has one.
        """
        module = sys.modules.get(type(self.net).__module__)
        filter_fn = getattr(module, "checkpoint_filter_fn", None)
        return filter_fn(state, self.net) if filter_fn is not None else state

    def hub_state_dict(self, hub_id: str) -> tuple[dict[str, Tensor], Normalization]:
        """Weights and normalisation of a Hugging Face hub model, through timm's own loader.

        timm reads the hub's `config.json` and weights with `huggingface_hub`, which answers
        from its local cache when offline (`HF_HUB_OFFLINE=1`).

        Args:
            hub_id: "hf-hub:ORGANISATION/NAME".

        Raises:
            UserError: when the hub model cannot be loaded or is another architecture.
        """
        timm = require_timm()
        try:
            source = timm.create_model(hub_id, pretrained=True, in_chans=self.in_channels)
        except Exception as e:  # hub, network and file errors come in many types
            raise UserError(
                f"cannot load {hub_id} through timm ({type(e).__name__}: {e}); offline, the "
                "model must be in the Hugging Face cache ($HF_HOME, $HF_HUB_CACHE)"
            ) from e
        found = source.pretrained_cfg.get("architecture")
        if found != self.architecture:
            raise UserError(
                f"{hub_id} holds a {found} network, not {self.architecture}: set "
                f"model.name=timm:{found}"
            )
        return source.state_dict(), normalization_for(source.pretrained_cfg, self.in_channels)


def timm_factory(architecture: str) -> Callable[..., TimmClassifier]:
    """The model factory of `timm:<architecture>` (registered as a name prefix)."""

    def build(
        num_classes: int,
        in_channels: int = 3,
        timm_kwargs: dict[str, Any] | None = None,
        input_mean: list[float] | None = None,
        input_std: list[float] | None = None,
    ) -> TimmClassifier:
        if (input_mean is None) != (input_std is None):
            raise UserError("set both model.input_mean and model.input_std, or neither")
        normalization = None
        if input_mean is not None and input_std is not None:
            try:
                normalization = Normalization(tuple(input_mean), tuple(input_std))
            except ValueError as e:
                raise UserError(f"model.input_mean/input_std: {e}") from e
        return TimmClassifier(architecture, num_classes, in_channels, timm_kwargs, normalization)

    build.__doc__ = (
        f"timm's {architecture}, classifier sized to the classes; input_mean/input_std default "
        "to its pretrained configuration's"
    )
    return build
