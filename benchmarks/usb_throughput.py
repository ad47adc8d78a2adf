"""Training-step throughput of semisup against USB (semilearn 0.3.2), side by side.

One training iteration is timed end to end in each library, as its own loop runs it: fetch the
labeled and unlabeled batches (USB: DataLoader workers applying PIL transforms; semisup:
batched on-device augmentation from uint8 tensors), forward, backward, optimizer step, EMA and
the per-step hooks. Both use WRN-28-2, labeled batch 64, each algorithm's μ (FixMatch 7,
ReMixMatch 1), RandAugment as the strong augmentation (USB's only one; semisup's
`augment.strong=randaugment`), ReMixMatch with K=2 strong views (USB's version), the same
random 32x32 images (CIFAR-sized; image content does not change the cost), and
torch.set_num_threads(--threads) in the training process. semisup's worker starts as the
`semisup` command does (`import semisup` before torch: OpenMP's passive wait; glibc's allocator
tuned); USB's runs with the process defaults.

On a CPU (`--device cpu`, the default; `--device cuda` runs both on one GPU, not yet tried),
USB needs patches, applied at run time by its worker without touching USB's files:
`Tensor.cuda` (to a no-op), `torch.cuda.synchronize` and `torch.cuda.Event` (USB's timer hook),
and `torchvision.datasets.CIFAR10` (to the in-memory images, instead of a download).

Usage (the driver runs with the project's Python; benchmarks/README.md has the setup):
    python benchmarks/usb_throughput.py --usb-python /tmp/usb-venv/bin/python \
        --algorithms fixmatch remixmatch --rounds 2 --warmup 2 --steps 5 --threads 2

The driver alternates child processes (semisup, USB, semisup, USB, ...; the first one swaps
each round) and prints each run's median step time, then per algorithm the median over runs
and the ratio semisup steps/s ÷ USB steps/s.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import json
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np

NUM_IMAGES, NUM_CLASSES, NUM_LABELS, BATCH = 4000, 10, 250, 64
MU = {"fixmatch": 7, "remixmatch": 1}


def synthetic_images(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(N, 32, 32, 3) uint8 images and (N,) labels, the same in both processes."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (NUM_IMAGES, 32, 32, 3), dtype=np.uint8)
    return images, np.arange(NUM_IMAGES) % NUM_CLASSES


def time_steps(step, warmup: int, steps: int, device: str) -> list[float]:
    """Seconds of each of `steps` calls of `step()` after `warmup` untimed ones."""
    import torch

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    return times


def semisup_worker(algorithm: str, warmup: int, steps: int, device: str) -> list[float]:
    import torch

    from semisup.config import build_config
    from semisup.data import DATASETS, ImageDataset
    from semisup.experiment import build_trainer

    images, labels = synthetic_images()

    def load(data_dir: object) -> ImageDataset:
        x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
        names = tuple(str(c) for c in range(NUM_CLASSES))
        return ImageDataset(x, torch.from_numpy(labels), None, None, names, hflip=True)

    if "bench_random32" not in DATASETS:
        DATASETS.register("bench_random32")(load)
    keys = {
        "algorithm.name": algorithm,
        "model.name": "wrn28_2",
        "data.name": "bench_random32",
        "data.num_labels": NUM_LABELS,
        "train.batch_size": BATCH,
        "train.steps": 1_048_576,
        "train.eval_every": 1_048_576,
        "train.device": device,
        "train.progress": False,
        "train.tensorboard": False,
        "augment.strong": "randaugment",
    }
    if algorithm == "remixmatch":
        keys["algorithm.k"] = 2
    trainer = build_trainer(build_config(None, keys), None)
    assert trainer.algorithm.mu == MU[algorithm]

    def step() -> None:
        trainer.train_step()
        trainer.step += 1

    return time_steps(step, warmup, steps, device)


def usb_worker(algorithm: str, warmup: int, steps: int, device: str) -> list[float]:
    import torch

    # PyPI has only the CUDA build of torchvision 0.28 (the match of torch 2.13); with the CPU
    # torch its C extension does not load, and its import then fails registering fake kernels
    # for these two ops. Declaring them (USB never calls them) lets torchvision import.
    torch.library.define("torchvision::nms", "(Tensor dets, Tensor scores, float iou) -> Tensor")
    torch.library.define("torchvision::qnms", "(Tensor dets, Tensor scores, float iou) -> Tensor")
    import torchvision

    # semilearn imports torchaudio for its audio data sets; no torchaudio build matches torch
    # 2.13 on PyPI, and the image path never calls it: an empty module stands in.
    stub = types.ModuleType("torchaudio")
    stub.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
    sys.modules["torchaudio"] = stub
    images, labels = synthetic_images()

    class InMemoryCIFAR10:
        def __init__(self, *args: object, **kwargs: object) -> None:
            self.data, self.targets = images, labels.tolist()

    class NoEvent:  # USB's TimerHook records CUDA events
        def __init__(self, *args: object, **kwargs: object) -> None: ...

        def record(self) -> None: ...

        def elapsed_time(self, other: object) -> float:
            return 0.0

    on_gpu = device.startswith("cuda")
    if not on_gpu:
        torch.Tensor.cuda = lambda self, *args, **kwargs: self  # USB's CPU guard: no-op moves
        torch.cuda.synchronize = lambda *args, **kwargs: None
        torch.cuda.Event = NoEvent
    torchvision.datasets.CIFAR10 = InMemoryCIFAR10

    from semilearn import get_algorithm, get_config, get_net_builder
    from semilearn.algorithms import name2alg

    config = {
        "algorithm": algorithm,
        "net": "wrn_28_2",
        "dataset": "cifar10",
        "num_classes": NUM_CLASSES,
        "num_labels": NUM_LABELS,
        "batch_size": BATCH,
        "uratio": MU[algorithm],
        "ulb_loss_ratio": 1.5 if algorithm == "remixmatch" else 1.0,
        "num_workers": 1,  # USB's classic-CV configs (the unlabeled loader gets 2)
        "epoch": 1,
        # USB's sampler materialises num_train_iter × batch indices: keep it to the timed steps
        "num_train_iter": 1000,
        "num_eval_iter": 10_000,
        "num_log_iter": 10_000,
        "save_dir": "/tmp/usb_throughput",
        "data_dir": "/tmp/usb_throughput/data",
        "ema_m": 0.999,
        "amp": False,
        "use_cat": True,
        "distributed": False,  # set by USB's train.py from world_size
        "gpu": 0 if on_gpu else None,
    }
    for argument in name2alg[algorithm].get_argument():  # the algorithm's own defaults
        config.setdefault(argument.name.lstrip("-"), argument.default)
    args = get_config(config)
    usb = get_algorithm(args, get_net_builder("wrn_28_2", False), None, None)
    if on_gpu:  # as USB's train.py (send_model_cuda) on one GPU
        usb.model, usb.ema_model = usb.model.cuda(0), usb.ema_model.cuda(0)
    usb.model.train()
    usb.call_hook("before_run")
    batches = zip(usb.loader_dict["train_lb"], usb.loader_dict["train_ulb"], strict=False)

    def step() -> None:  # the body of USB's AlgorithmBase.train loop
        data_lb, data_ulb = next(batches)
        usb.call_hook("before_train_step")
        usb.out_dict, usb.log_dict = usb.train_step(**usb.process_batch(**data_lb, **data_ulb))
        usb.call_hook("after_train_step")
        usb.it += 1

    return time_steps(step, warmup, steps, device)


def worker(impl: str, algorithm: str, warmup: int, steps: int, threads: int, device: str) -> None:
    if impl == "semisup":  # as the `semisup` command starts: before torch loads
        import semisup  # noqa: F401  (OpenMP's passive wait)
        from semisup.commands.process import tune_allocator

        tune_allocator()
    import torch

    torch.set_num_threads(threads)
    run = semisup_worker if impl == "semisup" else usb_worker
    times = run(algorithm, warmup, steps, device)
    print(json.dumps({"impl": impl, "algorithm": algorithm, "step_seconds": times}))


def drive(args: argparse.Namespace) -> None:
    pythons = {"semisup": sys.executable, "usb": args.usb_python}
    results: dict[tuple[str, str], list[float]] = {}
    for round_index in range(args.rounds):
        order = ["semisup", "usb"] if round_index % 2 == 0 else ["usb", "semisup"]
        for algorithm in args.algorithms:
            for impl in order:
                command = [
                    pythons[impl],
                    str(Path(__file__).resolve()),
                    "--worker",
                    impl,
                    "--algorithm",
                    algorithm,
                    "--warmup",
                    str(args.warmup),
                    "--steps",
                    str(args.steps),
                    "--threads",
                    str(args.threads),
                    "--device",
                    args.device,
                ]
                done = subprocess.run(command, capture_output=True, text=True)
                lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
                if done.returncode != 0 or not lines:
                    print(f"{impl} {algorithm} failed:\n{done.stderr[-3000:]}", flush=True)
                    continue
                times = json.loads(lines[-1])["step_seconds"]
                median = statistics.median(times)
                results.setdefault((impl, algorithm), []).append(median)
                spread = f"{min(times):.2f}-{max(times):.2f}"
                print(
                    f"round {round_index + 1} {impl:8s} {algorithm:10s} median {median:.2f} "
                    f"s/step (range {spread}, {len(times)} steps)",
                    flush=True,
                )
    print("\nalgorithm   semisup s/step   USB s/step   ratio (semisup steps/s ÷ USB steps/s)")
    for algorithm in args.algorithms:
        ours = results.get(("semisup", algorithm))
        theirs = results.get(("usb", algorithm))
        if not ours or not theirs:
            print(f"{algorithm:10s}  missing runs")
            continue
        a, b = statistics.median(ours), statistics.median(theirs)
        print(f"{algorithm:10s}  {a:14.2f}   {b:10.2f}   {b / a:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--usb-python", default="/tmp/usb-venv/bin/python")
    parser.add_argument("--algorithms", nargs="+", default=["fixmatch", "remixmatch"])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (not yet run on a GPU)")
    parser.add_argument("--worker", choices=["semisup", "usb"], help=argparse.SUPPRESS)
    parser.add_argument("--algorithm", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.algorithm, args.warmup, args.steps, args.threads, args.device)
    else:
        drive(args)


if __name__ == "__main__":
    main()
