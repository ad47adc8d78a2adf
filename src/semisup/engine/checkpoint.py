"""One checkpoint dict, written atomically, read with clear errors; the RNG states it holds."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from semisup.errors import UserError
from semisup.files import write_atomic

FORMAT_VERSION = 1


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Writes `state` to `path` without ever leaving a partial file there.

    The bytes go to a uniquely named temporary file in the same directory, are synced, then
    renamed over `path` (`semisup.files.write_atomic`). If anything fails (a full disk, which
    torch reports as a RuntimeError), the previous checkpoint at `path` is untouched and the
    error is one UserError line.
    """
    write_atomic(
        path,
        lambda handle: torch.save({"format": FORMAT_VERSION, **state}, handle),
        "Free some disk space and resume with --resume, or choose another --out",
    )


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Reads a checkpoint written by `save_checkpoint`, or raises a UserError saying why not."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # torch raises many types for damaged files
        raise UserError(
            f"checkpoint {path} is corrupt or unreadable ({type(e).__name__}: {e}); "
            "delete it to start over, or resume from an older checkpoint"
        ) from e
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise UserError(
            f"checkpoint {path} is not a semisup checkpoint of format {FORMAT_VERSION} "
            f"(found {found!r})"
        )
    return state


def rng_state(augment_generator: torch.Generator) -> dict[str, Any]:
    """Every random number generator a step draws from: Python, NumPy, torch, CUDA, augmentation."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "augment": augment_generator.get_state(),
    }


def restore_rng(state: dict[str, Any], augment_generator: torch.Generator) -> None:
    """Restores an `rng_state()`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    augment_generator.set_state(state["augment"])


def restore_rank_rng(
    states: list[dict[str, Any]], rank: int, world_size: int, generator: torch.Generator
) -> None:
    """Restores this rank's entry of a checkpoint's per-rank `rng_state()` list.

    Raises:
        UserError: when the checkpoint was written by another number of processes.
    """
    if len(states) != world_size:
        raise UserError(
            f"the checkpoint was written by {len(states)} process(es) and this run has "
            f"{world_size}; resume with --nproc_per_node={len(states)} to continue exactly"
        )
    restore_rng(states[rank], generator)


def save_checkpoints(state: dict[str, Any], run_dir: Path, step: int, keep: int) -> None:
    """RUN_DIR/checkpoint.pt, and with `keep` > 1 numbered copies, the newest `keep` − 1 kept."""
    save_checkpoint(state, run_dir / "checkpoint.pt")
    if keep > 1:
        save_checkpoint(state, run_dir / f"checkpoint-{step:08d}.pt")
        numbered = sorted(run_dir.glob("checkpoint-*.pt"))
        for old in numbered[: -(keep - 1)]:
            old.unlink()
