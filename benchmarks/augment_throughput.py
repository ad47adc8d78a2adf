"""Throughput of the batched strong augmentation against a per-image Pillow pipeline (issue 3).

Two measurements, both in a single process:

1. **Batched vs Pillow** (`--part throughput`). For N images (default 64, 448, 960) of 32x32
   RGB (real CIFAR-10 training images from the shared JPEG zip when it is there, else random
   uint8), FixMatch's strong view is built
   (a) batched, by the trainer's own code path: `experiment.build_views` with FixMatch's
       augment defaults, then `ViewMaker.make("strong_cutout", ...)` on a uint8 (N, 3, H, W)
       tensor on `--device`: weak flip + reflect shift, the strong policy, the cutout; and
   (b) per image with Pillow, replaying exactly the flips, shifts, ops, magnitudes and cutout
       centres the batched call draws from the same seed: uint8 tensor -> HWC array ->
       `Image.fromarray`, `ImageOps.mirror`, reflect pad (`np.pad`, as torchvision's
       RandomCrop does for PIL images) and crop, the Pillow ops of google-research/fixmatch
       `libml/ctaugment.py`, the cutout as a grey `paste`, `np.asarray` back into one array and
       a uint8 (N, 3, H, W) tensor (moved to `--device` when that is not the CPU).
   Strong policies: "ctaugment" (depth 2, a fresh augmenter: every bin rate 1; then the full
   cutout) and "randaugment" (FixMatch's RA: 2 ops, each applied with probability 0.5, then a
   16 px cutout). Before timing, each N checks that (b) reproduces (a) bit for bit, so both
   sides do the same work. The Pillow side gets its random draws precomputed outside its timer
   (the batched side draws its own inside), which favours Pillow slightly.
   Repetitions alternate the two sides (swapping which goes first every repetition), each
   repetition draws a new policy (the same for both sides); medians are reported: images/s of
   each side, the ratio of the median times and the median of the per-repetition time ratios.

2. **Augmentation share of a FixMatch step** (`--part share`). A real `Trainer` built by
   `experiment.build_trainer` (FixMatch, labeled batch 64, mu = 7: 64 labeled weak + 448
   unlabeled weak + 448 unlabeled strong = 960 images per step; WRN-28-2 by default, "cnn" as
   an option; channels-last fp32 on a CPU, the engine's defaults) on an in-memory data set of the
   same images. Each timed `trainer.train_step()` is split with wrappers around the trainer's
   own methods: batch gathering, the views (`BatchSource.make_batch`: weak, strong, cutout and
   the uint8 -> float model input), and, for CTAugment, the feedback callback, itself split into
   the EMA model's forward on the 64 probes, the rate update and the rest (weak + probe views). The
   rest of the step is forward, backward, SGD, EMA. The share is the views' median time over
   the step's median time; "all augmentation" adds the probe views and the rate update.

Run on a CPU with glibc's malloc told not to return memory to the system between steps
(measurably faster for the large batches here)::

    GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736 \\
        python benchmarks/augment_throughput.py --threads 1 --reps 7

With more than one thread on a CPU shared with other jobs, OpenMP's default spin-waiting made
the batched side 10-16x slower here; `OMP_WAIT_POLICY=PASSIVE` avoids that (see the results).
`--device cuda` runs the batched side and the training step on a GPU (the Pillow side stays on
the CPU and its output is copied to the GPU). Results: benchmarks/augment_throughput.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter, ImageOps
from torch import Tensor

from semisup.algorithms.fixmatch import FixMatch
from semisup.augment import CTAugment, RandAugment, ViewMaker, WeakAugment
from semisup.augment.policy import Policy
from semisup.config import build_config
from semisup.data import DATASETS, ImageDataset
from semisup.experiment import build_trainer, build_views, resolve_augment

CIFAR_ZIP = (
    Path(__file__).resolve().parents[2] / "shared/datasets/cifar10-jpeg/cifar10_jpeg_q75.zip"
)
STRONG = ("ctaugment", "randaugment")
BENCH_DATASET = "bench_augment32"
RESCALE_FILTERS = (
    Image.Resampling.LANCZOS,
    Image.Resampling.BICUBIC,
    Image.Resampling.BILINEAR,
    Image.Resampling.BOX,
    Image.Resampling.HAMMING,
    Image.Resampling.NEAREST,
)
CUTOUT_GREY = (127, 127, 127)


# ================================================================== images


def load_images(count: int, zip_path: Path | None, seed: int = 0) -> tuple[Tensor, Tensor, str]:
    """`count` shuffled 32x32 RGB uint8 images (N, 3, 32, 32), their labels and their source.

    CIFAR-10 training JPEGs spread evenly over the classes when the zip exists, else random.
    """
    if zip_path is not None and zip_path.is_file():
        with zipfile.ZipFile(zip_path) as archive:
            names = sorted(
                n for n in archive.namelist() if n.startswith("train/") and n[-4:] == ".jpg"
            )
            picked = names[:: max(1, len(names) // count)][:count]
            classes = sorted({name.split("/")[1] for name in picked})
            arrays = [
                np.asarray(Image.open(io.BytesIO(archive.read(name))).convert("RGB"))
                for name in picked
            ]
            labels = [classes.index(name.split("/")[1]) for name in picked]
        images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
        targets, source = torch.tensor(labels), f"CIFAR-10 train JPEGs ({zip_path.name})"
    else:
        generator = torch.Generator().manual_seed(seed)
        images = torch.randint(0, 256, (count, 3, 32, 32), generator=generator, dtype=torch.uint8)
        targets, source = torch.arange(count) % 10, "random uint8"
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    return images[order], targets[order], source


# ================================================================== the batched side


def view_maker(strong: str) -> ViewMaker:
    """FixMatch's view maker, built by the trainer's own `build_views` (CIFAR: flips on)."""
    cfg = build_config(None, {"augment.strong": strong})
    resolve_augment(cfg, FixMatch, hflip=True)
    maker, _ = build_views(cfg, {"weak", "strong_cutout"})
    return maker


def batched_strong(maker: ViewMaker, images: Tensor, seed: int) -> Tensor:
    """FixMatch's strong view of a batch, exactly as the trainer makes it."""
    generator = torch.Generator(images.device).manual_seed(seed)
    return maker.make("strong_cutout", images, generator)


# ================================================================== the Pillow side


@dataclass(frozen=True)
class Plan:
    """Every random choice of one strong-view call, per image, as Python lists.

    Attributes:
        dx, dy, flip: the weak shift (pixels) and mirror of each image.
        ops: (N, D) op names applied in order.
        levels: (N, D, 2) the ops' levels v (CTAugment's mapping of v to the Pillow argument).
        centres: (N, D) cutout centres (x, y) for steps whose op is cutout, else None.
        final_centres: the centres of the cutout appended after the policy, or None when the
            policy ends with its own (RandAugment).
    """

    dx: list[int]
    dy: list[int]
    flip: list[bool]
    ops: list[list[str]]
    levels: list[list[list[float]]]
    centres: list[list[tuple[int, int] | None]]
    final_centres: list[tuple[int, int]] | None


def sample_plan(
    maker: ViewMaker, n: int, height: int, width: int, seed: int, device: torch.device
) -> Plan:
    """The draws `ViewMaker.make("strong_cutout")` makes for n images from `seed`, in its order.

    Weak shifts and flips (`WeakAugment`), the policy (`sample_policy`), the centres of each
    cutout step of the policy (`apply_policy` runs each op once per step and only cutout draws)
    and, for CTAugment, the centres of the final cutout (`full_cutout`).
    """
    generator = torch.Generator(device).manual_seed(seed)
    weak, strong = maker.weak, maker.strong
    if not isinstance(weak, WeakAugment):
        raise TypeError(f"no Pillow replay for the weak transform {type(weak).__name__}")
    dx, dy, flip = weak.sample(n, height, width, generator, device)
    policy: Policy
    if isinstance(strong, CTAugment):
        policy = strong.sample_policy(n, generator)
    elif isinstance(strong, RandAugment):
        policy = strong.sample_policy(n, height, width, generator)
    else:
        raise TypeError(f"no Pillow replay for the strong policy {type(strong).__name__}")
    names = list(strong.op_table)
    ops = policy.ops.to(device)
    centres: list[list[tuple[int, int] | None]] = [[None] * policy.depth for _ in range(n)]
    for step in range(policy.depth):
        where = (ops[:, step] == names.index("cutout")).nonzero().squeeze(1)
        if len(where) == 0:
            continue
        cx = torch.randint(0, width, (len(where),), generator=generator, device=device)
        cy = torch.randint(0, height, (len(where),), generator=generator, device=device)
        for i, x, y in zip(where.tolist(), cx.tolist(), cy.tolist(), strict=True):
            centres[i][step] = (x, y)
    final = None
    if not maker.strong_has_cutout:
        cx = torch.randint(0, width, (n,), generator=generator, device=device)
        cy = torch.randint(0, height, (n,), generator=generator, device=device)
        final = list(zip(cx.tolist(), cy.tolist(), strict=True))
    return Plan(
        dx=dx.tolist(),
        dy=dy.tolist(),
        flip=flip.tolist(),
        ops=[[names[k] for k in row] for row in policy.ops.tolist()],
        levels=policy.levels.tolist(),
        centres=centres,
        final_centres=final,
    )


PilOp = Callable[[Image.Image, float, float], Image.Image]


def _enhance(kind: Callable[[Image.Image], Any]) -> PilOp:
    return lambda image, v, m: kind(image).enhance(0.1 + 1.9 * v)


def _affine(coefficients: Callable[[Image.Image, float], tuple[float, ...]]) -> PilOp:
    return lambda image, v, m: image.transform(
        image.size, Image.Transform.AFFINE, coefficients(image, v)
    )


def _rescale(image: Image.Image, v: float, m: float) -> Image.Image:
    width, height = image.size
    scale = 0.25 * v
    box = (scale * width, scale * height, width * (1 - scale), height * (1 - scale))
    return image.crop(box).resize(image.size, RESCALE_FILTERS[int(m * 5.99)])


# CTAugment's ops on one Pillow image, as google-research/fixmatch `libml/ctaugment.py` applies
# them (translate: the paper's, a fraction of the side); cutout is `cutout` below.
PIL_OPS: dict[str, PilOp] = {
    "autocontrast": lambda image, v, m: Image.blend(image, ImageOps.autocontrast(image), v),
    "blur": lambda image, v, m: Image.blend(image, image.filter(ImageFilter.BLUR), v),
    "brightness": _enhance(ImageEnhance.Brightness),
    "color": _enhance(ImageEnhance.Color),
    "contrast": _enhance(ImageEnhance.Contrast),
    "equalize": lambda image, v, m: Image.blend(image, ImageOps.equalize(image), v),
    "identity": lambda image, v, m: image,
    "invert": lambda image, v, m: Image.blend(image, ImageOps.invert(image), v),
    "posterize": lambda image, v, m: ImageOps.posterize(image, 1 + int(v * 7.999)),
    "rescale": _rescale,
    "rotate": lambda image, v, m: image.rotate(round((2 * v - 1) * 45)),
    "sharpness": _enhance(ImageEnhance.Sharpness),
    "shear_x": _affine(lambda image, v: (1, (2 * v - 1) * 0.3, 0, 0, 1, 0)),
    "shear_y": _affine(lambda image, v: (1, 0, 0, (2 * v - 1) * 0.3, 1, 0)),
    "smooth": lambda image, v, m: Image.blend(image, image.filter(ImageFilter.SMOOTH), v),
    "solarize": lambda image, v, m: ImageOps.solarize(image, int(v * 255.999)),
    "translate_x": _affine(lambda image, v: (1, 0, (2 * v - 1) * 0.3 * image.size[0], 0, 1, 0)),
    "translate_y": _affine(lambda image, v: (1, 0, 0, 0, 1, (2 * v - 1) * 0.3 * image.size[1])),
}


def cutout(image: Image.Image, v: float, centre: tuple[int, int]) -> Image.Image:
    """CTAugment's cutout: a grey square of side 2 * (s // 2), s = 1 + int(v * side * 0.499).

    The reference sets the pixels one by one; one `paste` of a colour does the same, faster.
    """
    width, height = image.size
    half = (1 + int(v * min(width, height) * 0.499)) // 2
    x, y = centre
    box = (max(0, x - half), max(0, y - half), min(width, x + half), min(height, y + half))
    if box[0] < box[2] and box[1] < box[3]:
        image.paste(CUTOUT_GREY, box)
    return image


def pil_strong(images: Tensor, plan: Plan, device: torch.device) -> Tensor:
    """The plan's strong views of uint8 (N, 3, H, W) CPU images, image by image with Pillow."""
    arrays = np.ascontiguousarray(images.permute(0, 2, 3, 1).numpy())
    out = np.empty_like(arrays)
    height, width = arrays.shape[1:3]
    pad_y, pad_x = height // 8, width // 8  # WeakAugment's 12.5 %
    for i in range(len(arrays)):
        image = Image.fromarray(arrays[i])
        if plan.flip[i]:
            image = ImageOps.mirror(image)
        padded = np.pad(np.asarray(image), ((pad_y, pad_y), (pad_x, pad_x), (0, 0)), "reflect")
        left, top = pad_x + plan.dx[i], pad_y + plan.dy[i]
        image = Image.fromarray(padded).crop((left, top, left + width, top + height))
        for name, (v, m), centre in zip(plan.ops[i], plan.levels[i], plan.centres[i], strict=True):
            if name == "cutout":
                assert centre is not None
                image = cutout(image, v, centre)
            else:
                image = PIL_OPS[name](image, v, m)
        if plan.final_centres is not None:
            image = cutout(image, 1.0, plan.final_centres[i])
        out[i] = np.asarray(image)
    result = torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()
    return result if device.type == "cpu" else result.to(device)


# ================================================================== part 1


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of one call, synchronising the GPU around it."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def check_replay(maker: ViewMaker, images: Tensor, seed: int, device: torch.device) -> int:
    """Pixels where the Pillow replay differs from the batched view (0: the same work)."""
    batched = batched_strong(maker, images.to(device), seed).cpu()
    n, _, h, w = images.shape
    replay = pil_strong(images, sample_plan(maker, n, h, w, seed, device), torch.device("cpu"))
    return int((batched != replay).sum())


def throughput(args: argparse.Namespace, images: Tensor, device: torch.device) -> list[dict]:
    """Median images/s of both sides for every policy, thread count and N."""
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for strong in args.strong:
            maker = view_maker(strong)
            for n in args.sizes:
                cpu_images = images[:n].contiguous()
                dev_images = cpu_images.to(device)
                _, _, h, w = cpu_images.shape
                mismatches = check_replay(maker, cpu_images, 12345 + n, device)  # also a warmup
                for _ in range(args.warmup):
                    batched_strong(maker, dev_images, 0)
                    pil_strong(cpu_images, sample_plan(maker, n, h, w, 0, device), device)
                batched_s: list[float] = []
                pil_s: list[float] = []
                for rep in range(args.reps):
                    seed = 1000 * rep + n
                    plan = sample_plan(maker, n, h, w, seed, device)
                    sides = [
                        (batched_s, lambda: batched_strong(maker, dev_images, seed)),  # noqa: B023
                        (pil_s, lambda: pil_strong(cpu_images, plan, device)),  # noqa: B023
                    ]
                    for times, fn in sides if rep % 2 == 0 else sides[::-1]:
                        times.append(timed(fn, device))
                b, p = statistics.median(batched_s), statistics.median(pil_s)
                paired = statistics.median(q / t for q, t in zip(pil_s, batched_s, strict=True))
                row = {
                    "strong": strong,
                    "threads": threads,
                    "n": n,
                    "batched_ms": 1e3 * b,
                    "pil_ms": 1e3 * p,
                    "batched_img_s": n / b,
                    "pil_img_s": n / p,
                    "ratio": p / b,
                    "paired_ratio": paired,
                    "mismatched_pixels": mismatches,
                    "batched_runs_ms": [round(1e3 * t, 2) for t in batched_s],
                    "pil_runs_ms": [round(1e3 * t, 2) for t in pil_s],
                }
                rows.append(row)
                print(
                    f"{strong:<12} threads={threads} N={n:<4} batched {row['batched_img_s']:9.0f}"
                    f" img/s ({row['batched_ms']:8.1f} ms)  Pillow {row['pil_img_s']:7.0f} img/s"
                    f" ({row['pil_ms']:8.1f} ms)  ratio {row['ratio']:5.2f}x (paired "
                    f"{paired:5.2f}x)  replay mismatches {mismatches}",
                    flush=True,
                )
    return rows


# ================================================================== part 2


def register_dataset(images: Tensor, targets: Tensor) -> None:
    """Registers the in-memory images as the data set the trainer loads (once)."""
    if BENCH_DATASET in DATASETS:
        return

    @DATASETS.register(BENCH_DATASET)
    def load(data_dir: object) -> ImageDataset:
        names = tuple(str(c) for c in range(int(targets.max()) + 1))
        return ImageDataset(images, targets, None, None, names, hflip=True)


class Stopwatch:
    """Accumulates the wall time of wrapped calls under a name, per training step."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.current: dict[str, float] = {}

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            sync(self.device)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                sync(self.device)
                self.current[name] = self.current.get(name, 0.0) + time.perf_counter() - start

        return wrapped


def step_share(args: argparse.Namespace, model: str, strong: str, device: torch.device) -> dict:
    """Per-part median times of FixMatch training steps built by `build_trainer`."""
    keys = {
        "algorithm.name": "fixmatch",
        "model.name": model,
        "data.name": BENCH_DATASET,
        "data.num_labels": 250,
        "train.batch_size": 64,
        "train.steps": 1_048_576,
        "train.eval_every": 1_048_576,
        "train.device": str(device),
        "train.progress": False,
        "train.tensorboard": False,
        "augment.strong": strong,
    }
    trainer = build_trainer(build_config(None, keys), None)
    assert trainer.algorithm.mu == 7 and trainer.settings.batch_size == 64
    watch = Stopwatch(device)
    trainer.batches.next_raw = watch.wrap("gather", trainer.batches.next_raw)  # type: ignore[method-assign]
    trainer.batches.make_batch = watch.wrap("views", trainer.batches.make_batch)  # type: ignore[method-assign]
    for callback in trainer.callbacks:
        callback.on_step_end = watch.wrap("feedback", callback.on_step_end)  # type: ignore[method-assign]
        augmenter = getattr(callback, "augmenter", None)
        if isinstance(augmenter, CTAugment):
            augmenter.update = watch.wrap("cta_update", augmenter.update)  # type: ignore[method-assign]
    ema_forward = trainer.ema.module.forward
    trainer.ema.module.forward = watch.wrap("probe_forward", ema_forward)  # type: ignore[method-assign]

    records = []
    for index in range(args.warmup_steps + args.steps):
        watch.current = {}
        total = timed(trainer.train_step, device)
        trainer.step += 1
        parts = watch.current
        record = {"step": total, **parts}
        if "feedback" in parts:  # CTAugment: the probe views are the feedback's own work
            record["probe_views"] = (
                parts["feedback"] - parts.get("probe_forward", 0.0) - parts.get("cta_update", 0.0)
            )
        if index >= args.warmup_steps:
            records.append(record)
        print(
            f"  {model} {strong} step {index + 1}{' (warmup)' * (index < args.warmup_steps)}: "
            + ", ".join(f"{k} {1e3 * v:.1f} ms" for k, v in record.items()),
            flush=True,
        )

    def median(key: str) -> float:
        return 1e3 * statistics.median(r.get(key, 0.0) for r in records)

    step_ms, views_ms = median("step"), median("views")
    all_aug = [r["views"] + r.get("probe_views", 0.0) + r.get("cta_update", 0.0) for r in records]
    result = {
        "model": model,
        "strong": strong,
        "threads": torch.get_num_threads(),
        "steps": len(records),
        "step_ms": step_ms,
        "views_ms": views_ms,
        "probe_views_ms": median("probe_views"),
        "cta_update_ms": median("cta_update"),
        "probe_forward_ms": median("probe_forward"),
        "gather_ms": median("gather"),
        "views_share": views_ms / step_ms,
        "all_aug_ms": 1e3 * statistics.median(all_aug),
        "all_aug_share": statistics.median(all_aug) / statistics.median(r["step"] for r in records),
        "step_runs_ms": [round(1e3 * r["step"], 1) for r in records],
        "views_runs_ms": [round(1e3 * r["views"], 1) for r in records],
    }
    print(
        f"{model} {strong} threads={result['threads']}: step {step_ms:.0f} ms, views "
        f"{views_ms:.1f} ms ({100 * result['views_share']:.2f} %), all augmentation "
        f"{result['all_aug_ms']:.1f} ms ({100 * result['all_aug_share']:.2f} %)",
        flush=True,
    )
    return result


# ================================================================== main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=["throughput", "share", "both"], default="both")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 448, 960])
    parser.add_argument("--strong", nargs="+", choices=STRONG, default=list(STRONG))
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[1], help="torch threads, one run per value"
    )
    parser.add_argument("--reps", type=int, default=7, help="timed repetitions per side")
    parser.add_argument("--warmup", type=int, default=1, help="untimed repetitions per side")
    parser.add_argument("--models", nargs="+", default=["wrn28_2"], help="e.g. wrn28_2 cnn")
    parser.add_argument("--share-strong", nargs="+", choices=STRONG, default=["ctaugment"])
    parser.add_argument("--share-threads", type=int, default=None, help="default: --threads[0]")
    parser.add_argument("--warmup-steps", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="timed training steps")
    parser.add_argument("--images", type=Path, default=CIFAR_ZIP, help="CIFAR-10 JPEG zip")
    parser.add_argument("--random-images", action="store_true", help="random uint8 instead")
    parser.add_argument("--json", type=Path, default=None, help="write every result here")
    args = parser.parse_args()
    device = torch.device(args.device)

    count = max(2000, max(args.sizes))
    images, targets, source = load_images(count, None if args.random_images else args.images)
    print(
        f"torch {torch.__version__}, Pillow {Image.__version__}, device {device}, images: "
        f"{source}, GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '(unset)')}",
        flush=True,
    )
    results: dict[str, Any] = {"images": source, "device": str(device)}
    if args.part in ("throughput", "both"):
        results["throughput"] = throughput(args, images, device)
    if args.part in ("share", "both"):
        torch.set_num_threads(args.share_threads or args.threads[0])
        register_dataset(images, targets)
        results["share"] = [
            step_share(args, model, strong, device)
            for model in args.models
            for strong in args.share_strong
        ]
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
