"""Classifier networks.

Every model maps images to logits and also exposes `forward_features(x) -> (N, num_features)`
(pooled features), `forward_head(features) -> logits`, `num_features`, `head` (the classifier
layer) and `layer_ids()` (each parameter's depth, for layer-wise learning-rate decay). A model
that was pretrained on other inputs than [−1, 1] carries its `input_normalization`
(`models.inputs`). `timm:<architecture>` builds any timm network (`models.timm_backbone`).
"""

from semisup.models import cnn, wideresnet  # noqa: F401  (registration)
from semisup.models.registry import (
    CUSTOM_MODEL,
    MODELS,
    build_model,
    build_model_from_section,
    default_model_name,
    describe_custom_model,
    resolve_model_section,
)
from semisup.models.timm_backbone import PREFIX as TIMM_PREFIX
from semisup.models.timm_backbone import timm_factory

MODELS.register_prefix(TIMM_PREFIX, timm_factory)

__all__ = [
    "CUSTOM_MODEL",
    "MODELS",
    "build_model",
    "build_model_from_section",
    "default_model_name",
    "describe_custom_model",
    "resolve_model_section",
]
