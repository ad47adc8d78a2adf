"""The algorithm registry."""

from __future__ import annotations

from semisup.algorithms.base import Algorithm
from semisup.registry import Registry

ALGORITHMS: Registry[type[Algorithm]] = Registry("algorithm")
