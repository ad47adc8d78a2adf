"""Training-step throughput of the models, with and without bf16 autocast and channels-last.

Times forward + backward + SGD step on random data, side by side in one process: the variants
of each model alternate, so load changes on the machine hit them alike. Prints a Markdown table.
`--compile` adds `torch.compile` of the fp32 + channels_last model as a fifth variant and prints
the seconds its first step took (the compilation a run would pay once).

    python benchmarks/model_speed.py [--reps 5] [--threads 2] [--device cuda] [--compile]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from semisup.models import build_model

CASES = [  # (model, channels, side, batch): a FixMatch step's 960 images, WRN also at 192
    ("cnn", 1, 8, 960),
    ("cnn", 1, 28, 960),
    ("wrn28_2", 3, 32, 192),
]
VARIANTS = [
    ("fp32", False, False),
    ("fp32 + channels_last", False, True),
    ("bf16", True, False),
    ("bf16 + channels_last", True, True),
]


def make_step(
    name: str,
    channels: int,
    side: int,
    batch: int,
    bf16: bool,
    channels_last: bool,
    device: torch.device,
    compiled: bool = False,
):
    torch.manual_seed(0)
    model = build_model(name, num_classes=10, in_channels=channels).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9, nesterov=True)
    x = torch.randn(batch, channels, side, side, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    forward = torch.compile(model) if compiled else model

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(forward(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return step


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--compile", action="store_true", help="add torch.compile (fp32 + CL)")
    parser.add_argument("--models", nargs="+", help="only these models (cnn, wrn28_2)")
    args = parser.parse_args()
    variants = VARIANTS + (
        [("fp32 + channels_last + compile", False, True)] if args.compile else []
    )
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {device}, {args.threads} threads")
    print("| model | input | batch | " + " | ".join(v[0] for v in variants) + " |")
    print("|---|---|---|" + "---|" * len(variants))
    notes = []
    for name, channels, side, batch in CASES:
        if args.models and name not in args.models:
            continue
        steps = [
            make_step(name, channels, side, batch, bf16, cl, device, compiled=i == len(VARIANTS))
            for i, (_, bf16, cl) in enumerate(variants)
        ]
        for i, step in enumerate(steps):  # warm-up (the compiled variant compiles here)
            start = time.perf_counter()
            step()
            if i == len(VARIANTS):
                notes.append(
                    f"{name} {batch}x{channels}x{side}x{side}: first compiled step "
                    f"{time.perf_counter() - start:.1f} s"
                )
        times: list[list[float]] = [[] for _ in steps]
        for _ in range(args.reps):
            for i, step in enumerate(steps):
                start = time.perf_counter()
                step()
                times[i].append(time.perf_counter() - start)
        rates = [batch / statistics.median(t) for t in times]
        cells = [f"{r:,.0f} img/s ({r / rates[0]:.2f}x)" for r in rates]
        print(f"| {name} | {channels}x{side}x{side} | {batch} | " + " | ".join(cells) + " |")
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
