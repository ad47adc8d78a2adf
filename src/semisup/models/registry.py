"""The model registry and factory."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from semisup.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")

# The `model.name` of a run whose network was passed as a module (`semisup.train(model=...)`):
# its config cannot rebuild it, so `semisup.load` takes the module (`load(run, model=...)`).
CUSTOM_MODEL = "custom"


def build_model(name: str, num_classes: int, in_channels: int, **kwargs: object) -> nn.Module:
    """Builds a registered model.

    Args:
        name: a registered model name (see `MODELS.names()`).
        num_classes: number of output logits.
        in_channels: 1 for grey images, 3 for RGB.
        **kwargs: model-specific options (e.g. `bn_momentum`).
    """
    return MODELS.get(name)(num_classes=num_classes, in_channels=in_channels, **kwargs)


def default_model_name(image_size: int) -> str:
    """The architecture the papers use for this image size.

    A small CNN below 32 px (MNIST, digits), WRN-28-2 for 32 px (CIFAR, SVHN), WRN-37-2
    (4 scales) above (STL-10).
    """
    if image_size < 32:
        return "cnn"
    if image_size <= 64:
        return "wrn28_2"
    return "wrn37_2"


def describe_custom_model(model: nn.Module) -> dict[str, str]:
    """The `model` config section of a run that trains `model` itself: its name and class."""
    cls = type(model)
    return {"name": CUSTOM_MODEL, "class": f"{cls.__module__}.{cls.__qualname__}"}
