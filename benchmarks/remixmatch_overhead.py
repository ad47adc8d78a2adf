"""ReMixMatch's step-time overhead over the bare network running the same calls (issue 4).

Measures side by side, in one process and alternating repetitions:
    (a) a full ReMixMatch training step: algorithm forward (rotation, guess, pre-mixup and K + 2
        interleaved calls, MixUp, DA, losses) + backward + Adam step + decoupled decay + the
        post-step DA update, on precomputed views;
    (b) the bare model running the same 1 + 2 + (K + 2) forward calls of B images with the same
        gradient modes (the weak guess call without gradient) and one backward of a trivial loss;
    (c) the optimizer step alone (Adam + decoupled decay), which (a) includes and (b) does not.
Prints the median times, the ratios a / b and a / (b + c), and the median of the per-repetition
ratios a / b (robust to load drifting during the run), for wall time and for process CPU time
(robust to other processes sharing the cores). Then, as a low-noise estimate of the algorithm's
own work, times (d): the same ReMixMatch step around a network of negligible cost (global
average pooling + a linear layer), and prints d / b.

Usage (WRN-28-2, 32x32, B = 64, K = 8 by default):
    python benchmarks/remixmatch_overhead.py [--reps 5] [--threads N] [--device cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from semisup.algorithms.base import TaskInfo
from semisup.algorithms.presets import MIXMATCH_ADAM
from semisup.algorithms.remixmatch import ReMixMatch
from semisup.config import OptimConfig
from semisup.engine.optim import build_optimizer, decay_kernels
from semisup.models import build_model

STEP = 20_000  # past the ramp: every loss term is active
SETTINGS = OptimConfig(**MIXMATCH_ADAM)


class PooledLinear(nn.Module):
    """A network of negligible cost: global average pooling, then a linear classifier."""

    def __init__(self, channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        self.num_features = channels
        self.fc = nn.Linear(channels, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.forward_features(x))


def make_batch(
    k: int, batch: int, size: int, device: torch.device, channels_last: bool
) -> dict[str, Tensor]:
    """Random views in [-1, 1] (as the trainer's `to_model_input` makes them) and labels."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def view() -> Tensor:
        images = torch.rand(batch, 3, size, size, device=device) * 2 - 1
        return images.contiguous(memory_format=fmt)

    views = {"x": view(), "u_w": view(), **{f"u_s{i}": view() for i in range(k)}}
    return {**views, "y": torch.randint(0, 10, (batch,), device=device)}


def remixmatch_step(
    model: nn.Module, k: int, device: torch.device, channels_last: bool
) -> tuple[Callable[[dict[str, Tensor]], None], torch.optim.Optimizer]:
    """A function running one full ReMixMatch training step on a batch, and its optimizer."""
    info = TaskInfo(10, 250, (25,) * 10, 2**20)
    algorithm = ReMixMatch(model, info, k=k).to(device).train()
    if channels_last:
        algorithm.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(algorithm, SETTINGS)

    def step(batch: dict[str, Tensor]) -> None:
        optimizer.zero_grad(set_to_none=True)
        out = algorithm(batch, STEP)
        out["loss"].backward()
        optimizer.step()
        decay_kernels(optimizer, SETTINGS, SETTINGS.lr)
        algorithm.on_step_end(batch, out, STEP)

    return step, optimizer


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--model", default="wrn28_2")
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions of each")
    parser.add_argument("--warmup", type=int, default=1, help="untimed repetitions of each")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-channels-last", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    channels_last = not args.no_channels_last
    torch.manual_seed(0)

    model = build_model(args.model, num_classes=10, in_channels=3)
    full_step, optimizer = remixmatch_step(model, args.k, device, channels_last)
    cheap_step, _ = remixmatch_step(PooledLinear().to(device), args.k, device, channels_last)
    batch = make_batch(args.k, args.batch, args.size, device, channels_last)

    def optimizer_step() -> None:
        optimizer.step()
        decay_kernels(optimizer, SETTINGS, SETTINGS.lr)

    def bare_calls() -> None:
        optimizer.zero_grad(set_to_none=True)
        u_s = [batch[f"u_s{i}"] for i in range(args.k)]
        outputs = [model.forward_features(u_s[0])]  # the rotation call (on an unrotated view)
        with torch.no_grad():
            model(batch["u_w"])  # the guess call
        outputs.append(model(u_s[0]))  # the pre-mixup call
        pool = torch.cat([batch["x"], batch["u_w"], *u_s])
        outputs += [model(chunk) for chunk in pool.split(args.batch)]  # the K + 2 mixup calls
        sum(o.float().mean() for o in outputs).backward()

    def timed(fn: Callable[[], None]) -> tuple[float, float]:
        """(wall seconds, CPU seconds of this process) of one call."""
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - wall, time.process_time() - cpu

    for _ in range(args.warmup):
        full_step(batch)
        bare_calls()
        cheap_step(batch)
    times: dict[str, list[tuple[float, float]]] = {"a": [], "b": [], "c": [], "d": []}
    for rep in range(args.reps):
        order = [("a", lambda: full_step(batch)), ("b", bare_calls)]
        for key, fn in order if rep % 2 == 0 else order[::-1]:
            times[key].append(timed(fn))
        times["c"].append(timed(optimizer_step))
        for _ in range(5):
            times["d"].append(timed(lambda: cheap_step(batch)))
        (a_wall, a_cpu), (b_wall, b_cpu) = times["a"][-1], times["b"][-1]
        print(
            f"rep {rep + 1}: a {a_wall:.3f} s (CPU {a_cpu:.3f} s), "
            f"b {b_wall:.3f} s (CPU {b_cpu:.3f} s)",
            flush=True,
        )

    calls = 1 + 2 + args.k + 2
    print(
        f"{args.model}, {args.size}x{args.size}, B={args.batch}, K={args.k}, {calls} calls, "
        f"{device}, threads={torch.get_num_threads()}, channels_last={channels_last}, "
        f"{args.reps} reps (medians)"
    )
    # Process CPU time is robust to other processes sharing the cores; on a GPU only the wall
    # time means anything.
    for i, clock in enumerate(("wall", "CPU")):
        a, b, c, d = (statistics.median(t[i] for t in times[key]) for key in "abcd")
        paired = sorted(ta[i] / tb[i] for ta, tb in zip(times["a"], times["b"], strict=True))
        print(f"[{clock}] (a) ReMixMatch step (fwd + bwd + Adam + decay): {a:.3f} s")
        print(f"[{clock}] (b) bare model, same calls, fwd + bwd:          {b:.3f} s")
        print(f"[{clock}] (c) Adam + decoupled decay alone:               {c:.4f} s")
        print(f"[{clock}] a / b = {a / b:.3f}   a / (b + c) = {a / (b + c):.3f}")
        print(
            f"[{clock}] a / b per repetition: median {statistics.median(paired):.3f} "
            f"(min {paired[0]:.3f}, max {paired[-1]:.3f})"
        )
        print(f"[{clock}] (d) the step around a negligible network: {d:.4f} s = {d / b:.2%} of b")


if __name__ == "__main__":
    main()
