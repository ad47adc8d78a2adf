"""OpenMP's wait policy and glibc's allocator, side by side: training steps/s and page faults.

Runs the same short `semisup train` four times per round, alternating the variants: OpenMP
threads passive (the CLI's default) or active (OpenMP's default), and glibc's malloc tuned (the
CLI's default) or left alone (SEMISUP_TUNE_MALLOC=0). Reports the median steps/s, the minor page
faults and the peak resident memory of each variant's runs.

    python benchmarks/process_settings.py --data-dir /tmp/practical/cifar10-4x10-seed1 \
        --rounds 2 -- --steps 12 --set model.name=wrn28_2 train.batch_size=64
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {
    "passive + tuned malloc (default)": {"OMP_WAIT_POLICY": "PASSIVE"},
    "passive + glibc default": {"OMP_WAIT_POLICY": "PASSIVE", "SEMISUP_TUNE_MALLOC": "0"},
    "active + tuned malloc": {"OMP_WAIT_POLICY": "ACTIVE"},
    "active + glibc default": {"OMP_WAIT_POLICY": "ACTIVE", "SEMISUP_TUNE_MALLOC": "0"},
}


def run(env: dict[str, str], data_dir: str, extra: list[str]) -> dict[str, float]:
    """One training run in a child process: steps/s, its page faults and peak memory."""
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "semisup", "train", "--dataset", "folder"]
        command += ["--data-dir", data_dir, "--out", f"{out}/run", "--no-report", *extra]
        command += ["--set", "train.progress=false", "train.tensorboard=false"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        subprocess.run(command, env={**os.environ, **env}, check=True, capture_output=True)
        wall = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        summary = json.loads((Path(out) / "run" / "summary.json").read_text())
    return {
        "steps_per_second": summary["steps"] / summary["wall_seconds"],
        "minor_faults": after.ru_minflt - before.ru_minflt,
        "peak_rss_gb": summary["peak_memory_gb"],
        "wall": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="a folder data set")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("train_args", nargs="*", help="arguments of semisup train (after --)")
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    for round_index in range(args.rounds):
        order = list(VARIANTS) if round_index % 2 == 0 else list(reversed(VARIANTS))
        for name in order:
            results[name].append(run(VARIANTS[name], args.data_dir, args.train_args))
            print(name, results[name][-1], flush=True)
    base = statistics.median(r["steps_per_second"] for r in results[list(VARIANTS)[-1]])
    print("| variant | steps/s (runs) | ratio | minor page faults | peak RSS GB |")
    print("|---|---|---|---|---|")
    for name, runs in results.items():
        speed = statistics.median(r["steps_per_second"] for r in runs)
        speeds = ", ".join(f"{r['steps_per_second']:.3f}" for r in runs)
        faults = statistics.median(r["minor_faults"] for r in runs)
        rss = max(r["peak_rss_gb"] for r in runs)
        print(
            f"| {name} | {speed:.3f} ({speeds}) | {speed / base:.2f}x | {faults:,.0f} | {rss:.1f} |"
        )


if __name__ == "__main__":
    main()
