"""The model registry and factory, and the `model.*` config section."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from semisup.config import resolve_kwargs
from semisup.models import timm_backbone
from semisup.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")

# The `model.name` of a run whose network was passed as a module (`semisup.train(model=...)`):
# its config cannot rebuild it, so `semisup.load` takes the module (`load(run, model=...)`).
CUSTOM_MODEL = "custom"

# `model.*` keys of every model that are not arguments of its factory: name → (type, default).
# `pretrained`: the weights to start from (a file, a run directory or "hf-hub:ORG/NAME"; see
# `semisup.pretrained`).
COMMON_KEYS: dict[str, tuple[Any, Any]] = {"pretrained": (str | None, None)}
LIBRARY_ARGUMENTS = ("num_classes", "in_channels")


def build_model(name: str, num_classes: int, in_channels: int, **kwargs: object) -> nn.Module:
    """Builds a registered model.

    Args:
        name: a registered model name (see `MODELS.names()`) or `timm:<architecture>`.
        num_classes: number of output logits.
        in_channels: 1 for grey images, 3 for RGB.
        **kwargs: model-specific options (e.g. `bn_momentum`).
    """
    return MODELS.get(name)(num_classes=num_classes, in_channels=in_channels, **kwargs)


def resolve_model_section(section: dict[str, Any]) -> dict[str, Any]:
    """The `model.*` section type-checked against the model's factory, defaults filled in."""
    factory = MODELS.get(section["name"])
    return resolve_kwargs(factory, section, "model", LIBRARY_ARGUMENTS, COMMON_KEYS)


def build_model_from_section(
    section: dict[str, Any], num_classes: int, in_channels: int
) -> nn.Module:
    """The (untrained) model a resolved `model.*` section describes."""
    kwargs = {k: v for k, v in section.items() if k != "name" and k not in COMMON_KEYS}
    return build_model(section["name"], num_classes, in_channels, **kwargs)


def preferred_image_size(section: dict[str, Any]) -> int | None:
    """The image side a model of the `model.*` section expects, if it has one.

    A timm model's pretrained input size (or its `timm_kwargs["img_size"]`); None for the
    others, which take any size.
    """
    name = str(section.get("name", ""))
    if not name.startswith(timm_backbone.PREFIX):
        return None
    architecture = name[len(timm_backbone.PREFIX) :]
    return timm_backbone.preferred_image_size(architecture, section.get("timm_kwargs"))


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
