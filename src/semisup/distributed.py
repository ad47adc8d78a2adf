"""Distributed data parallel (DDP) helpers; every function is a no-op in a single process.

`torchrun --nproc_per_node=N -m semisup train ...` sets RANK / WORLD_SIZE / LOCAL_RANK; the CLI
then calls `init_from_env()`. Algorithms and the augmenter call `all_gather_cat` /
`all_reduce_mean` on statistics that must be global (distribution alignment, memory banks,
CTAugment updates), so every rank keeps identical state.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Whether this process writes files and logs (rank 0)."""
    return rank() == 0


def init_from_env() -> torch.device | None:
    """Joins the process group described by torchrun's environment variables.

    Returns:
        The device this rank trains on (cuda:LOCAL_RANK with NCCL, else the CPU with gloo), or
        None when the process was not started by torchrun (WORLD_SIZE unset or 1).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_distributed():
        return None
    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl")
        return torch.device("cuda", local_rank)
    dist.init_process_group("gloo")
    return torch.device("cpu")


def shutdown(together: bool) -> None:
    """Leaves the process group, if any.

    Args:
        together: first wait until every rank gets here (a barrier). After a run that ended
            well, rank 0 still writes summary.json and the report while the others are done;
            leaving together keeps a rank from closing its gloo connections under a peer that
            still holds them (one rank once aborted at exit with "terminate called without an
            active exception"). False after an error, when the others may never arrive.
    """
    if dist.is_available() and dist.is_initialized():
        if together:
            dist.barrier()
        dist.destroy_process_group()


def all_gather_cat(tensor: Tensor) -> Tensor:
    """Concatenates equally shaped tensors of all ranks along dim 0, in rank order."""
    if not is_distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def all_reduce_mean(tensor: Tensor) -> Tensor:
    """The mean of `tensor` over ranks (a new tensor)."""
    if not is_distributed():
        return tensor
    total = tensor.detach().clone()
    dist.all_reduce(total)
    return total / world_size()


def all_true(flag: bool) -> bool:
    """Whether `flag` holds on every rank (one tiny all-reduce)."""
    if not is_distributed():
        return flag
    value = torch.tensor([0 if flag else 1], dtype=torch.int64)
    if dist.get_backend() == "nccl":
        value = value.cuda()
    dist.all_reduce(value)
    return int(value) == 0


def any_true(flag: bool) -> bool:
    """Whether `flag` holds on at least one rank."""
    return not all_true(not flag)


def wrap(module: torch.nn.Module, device: torch.device, find_unused: bool) -> torch.nn.Module:
    """`module` in DistributedDataParallel when several processes train, else itself."""
    if not is_distributed():
        return module
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(
        module, device_ids=device_ids, find_unused_parameters=find_unused
    )


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj` (picklable), in rank order."""
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any) -> Any:
    """Rank 0's `obj` on every rank."""
    if not is_distributed():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Copies rank 0's buffers (e.g. BatchNorm running statistics) to every rank, in place.

    DDP does this at the start of each forward; the trainer also does it before evaluating and
    checkpointing, so every rank evaluates and saves the same model.
    """
    if is_distributed():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)
