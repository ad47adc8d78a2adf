"""Runs a tiny training in this process (or in each torchrun rank) and saves the final state.

Usage: [torchrun --nproc_per_node=N] ddp_worker.py OUT_DIR KEY=VALUE...
Each rank writes OUT_DIR/rank<r>.pt with its algorithm and EMA state and CTAugment rates.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from semisup import distributed
from semisup.config import build_config, parse_assignments
from semisup.experiment import build_trainer


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    device = distributed.init_from_env()
    overrides = parse_assignments(sys.argv[2:])
    if device is not None:
        overrides["train.device"] = str(device)
    trainer = build_trainer(build_config(None, overrides), out / "run")
    trainer.fit()
    rates = {c.name: c.state_dict() for c in trainer.callbacks}
    state = {
        "algorithm": trainer.algorithm.state_dict(),
        "ema": trainer.ema.state_dict(),
        "callbacks": rates,
        "history": trainer.history,
    }
    torch.save(state, out / f"rank{distributed.rank()}.pt")
    distributed.shutdown(together=True)


if __name__ == "__main__":
    main()
