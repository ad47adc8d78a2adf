"""Classifier networks.

Every model maps images to logits and also exposes
`forward_features(x) -> (N, num_features)` and `forward_head(features) -> logits`.
"""

from semisup.models import cnn, wideresnet  # noqa: F401  (registration)
from semisup.models.registry import (
    CUSTOM_MODEL,
    MODELS,
    build_model,
    default_model_name,
    describe_custom_model,
)

__all__ = ["CUSTOM_MODEL", "MODELS", "build_model", "default_model_name", "describe_custom_model"]
