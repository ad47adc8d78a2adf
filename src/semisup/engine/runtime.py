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

    @property
    def precision(self) -> str:
        """The precision by name: fp32, bf16 or fp16."""
        names = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
        return names[self.autocast_dtype]

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


# CPU feature flags of native bf16 arithmetic: AVX-512 BF16 and AMX (x86), the Arm bf16 extension.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where it does not exist)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16() -> bool:
    """Whether the CPU computes in bf16 natively (elsewhere bf16 autocast is 1.5-3.4x slower)."""
    return bool(cpu_flags() & NATIVE_BF16_FLAGS)


def resolve_runtime(train: TrainConfig, device: torch.device) -> Runtime:
    """Decides the "auto" precision and memory format of `train.*` for `device`.

    Here auto precision is bf16 autocast on CUDA GPUs that support it and fp32 elsewhere;
    `semisup.planning` first replaces "auto" by a measurement on CPUs with native bf16.
    Channels-last is on by default, which made the small CNN 1.5x faster on a CPU
    (benchmarks/README.md has the measurements behind these choices).
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
