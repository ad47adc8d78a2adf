"""Where and how a run computes: the device, autocast precision and memory format."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch

from semisup.config import TrainConfig
from semisup.errors import UserError


@dataclass(frozen=True)
class Runtime:
    """The resolved hardware choices of a run (no "auto" left).

    Attributes:
        device: where the model and batches live.
        autocast_dtype: bf16/fp16 autocast, or None for full precision.
        channels_last: channels-last memory format for models and inputs.
    """

    device: torch.device
    autocast_dtype: torch.dtype | None
    channels_last: bool

    def autocast(self) -> AbstractContextManager[None]:
        """The autocast context of forward passes (a no-op in full precision)."""
        dtype = self.autocast_dtype
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)


def resolve_device(name: str) -> torch.device:
    """'auto' → CUDA when available, else CPU; a CUDA request without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise UserError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(
            f"device {name} was requested but no CUDA GPU is available; use --device cpu"
        )
    return device


def resolve_runtime(train: TrainConfig, device: torch.device) -> Runtime:
    """Decides the "auto" precision and memory format of `train.*` for `device`.

    auto precision is bf16 autocast on CUDA GPUs that support it and fp32 elsewhere (on CPUs
    without native bf16 it is 2.5x slower); channels-last is on by default, which made the small
    CNN 1.5x faster on a CPU (benchmarks/README.md has the measurements behind these choices).
    """
    precision = train.precision
    if precision == "auto":
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        precision = "bf16" if cuda_bf16 else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise UserError("train.precision=fp16 needs a CUDA GPU; use bf16 or fp32 on a CPU")
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    channels_last = True if train.channels_last is None else train.channels_last
    return Runtime(device=device, autocast_dtype=dtype, channels_last=channels_last)
