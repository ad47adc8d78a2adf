"""Peak memory of a `folder` data set: the memory-mapped cache against the whole array in RAM.

For each size N (default 10k, 100k and 1M images of 32x32 RGB) the script builds a practitioner
folder (`labeled/` 10 classes x 25 images, `test/` 10 x 10, the rest in `unlabeled/`) and measures,
each in a fresh child process:

- build: `load_folder` decoding every PNG into the cache (the data set's first load);
- train: loading the data set from its cache, then `train.steps` FixMatch steps of the small CNN
  on the CPU through the project's own experiment/trainer API (the SSL split, samplers, batch
  gathering and augmentation all run as in `semisup train`).

Both run twice: with this checkout ("mmap", the memory-mapped cache) and with the code of
OLD_COMMIT ("in RAM", the last version whose cache was one .npz file loaded whole), extracted with
`git archive`. Writing and decoding a million PNGs does not fit the time budget of two CPU cores,
so for N >= --direct-from the unlabeled files are empty placeholders (only the folder scan and
the cache key see them), each cache is written directly in its format with random pixels (the
new one through `CacheWriter`, streamed; the old one with the old `write_cache`), and only the
train measurement runs.

Each child reports VmHWM (the peak resident set: private memory plus mapped file pages) and the
peaks of RssAnon (private memory) and RssFile (file pages mapped in, here mostly the page cache
of `images.npy`) sampled every 20 ms. Mapped file pages are shared with the kernel's page cache
and dropped under memory pressure; private memory is what a data set costs for real.

Usage (about 13 minutes on 2 busy cores, ~7 GB of disk for the 1M case):
    OMP_NUM_THREADS=1 python benchmarks/folder_memory.py
    OMP_NUM_THREADS=1 python benchmarks/folder_memory.py --sizes 10000 --steps 5  # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OLD_COMMIT = "0a5159deb76ce0381039ab1bb0f037ea6993cf28"  # the last whole-array .npz cache
LABELED_PER_CLASS, TEST_PER_CLASS, CLASSES = 25, 10, 10
FILES_PER_DIR = 10_000


# ---------------------------------------------------------------- child side: measurements


class Sampler:
    """Samples RssAnon and RssFile of this process every 20 ms (the kernel keeps no peak)."""

    def __init__(self) -> None:
        self.peak = {"RssAnon": 0, "RssFile": 0}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            time.sleep(0.02)

    def sample(self) -> None:
        for key, value in status().items():
            if key in self.peak:
                self.peak[key] = max(self.peak[key], value)

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.sample()


def status() -> dict[str, int]:
    """VmHWM, VmRSS, RssAnon and RssFile of this process in MiB."""
    values = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                values[key] = int(value.split()[0]) // 1024
    return values


def train_settings(root: Path, steps: int) -> dict[str, Any]:
    return {
        "data.name": "folder",
        "data.dir": str(root),
        "model.name": "cnn",
        "algorithm.name": "fixmatch",
        "algorithm.mu": 7,
        "train.device": "cpu",
        "train.steps": steps,
        "train.batch_size": 16,
        "train.progress": False,
        "train.tensorboard": False,
    }


def child(mode: str, root: Path, steps: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    from semisup.data.folder.dataset import load_folder

    result: dict[str, Any] = {"baseline_mb": status()["VmRSS"]}
    start = time.perf_counter()
    with Sampler() as sampler:
        if mode == "build":
            data = load_folder(root)
            result["images"] = len(data.train_images) + len(data.unlabeled_images)
        elif mode == "train":
            from semisup.config import build_config
            from semisup.experiment import build_trainer

            config = build_config(None, train_settings(root, steps))
            trainer = build_trainer(config, None)
            result["load_s"] = time.perf_counter() - start
            result["pool"] = list(trainer.batches.images.shape)
            for _ in range(steps):
                trainer.train_step()
        elif mode == "write":
            write_new_cache(root)
        elif mode == "write-old":
            write_old_cache(root)
        else:
            raise ValueError(mode)
    result["seconds"] = time.perf_counter() - start
    result["vmhwm_mb"] = status()["VmHWM"]
    result["anon_peak_mb"] = sampler.peak["RssAnon"]
    result["file_peak_mb"] = sampler.peak["RssFile"]
    result["workers_max_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
    return result


def _layout(root: Path) -> tuple[Any, Any, list[Path]]:
    from semisup.data.folder.cache import cache_candidates
    from semisup.data.folder.scan import find_layout, open_source

    source = open_source(root)
    layout = find_layout(source)
    options = {"image_size": None, "grayscale": None}
    return source, layout, cache_candidates(source, layout.kind, options, None)


def write_new_cache(root: Path) -> None:
    """The mmap cache of `root` with random pixels, written row by row through `CacheWriter`."""
    from semisup.data.folder.cache import start_cache

    _, layout, candidates = _layout(root)
    counts = (len(layout.train), len(layout.unlabeled), len(layout.test))
    total = sum(counts)
    rng = np.random.default_rng(0)
    targets = np.array(
        [c for _, c in layout.train] + [-1] * counts[1] + [c for _, c in layout.test], np.int64
    )
    with start_cache(candidates) as writer:
        rows = writer.allocate((total, 3, 32, 32))
        for first in range(0, total, 4096):
            chunk = rng.integers(0, 256, (min(4096, total - first), 3, 32, 32), np.uint8)
            for offset, image in enumerate(chunk):
                rows[first + offset] = image
        writer.commit(total, targets, counts, layout.class_names, [])  # type: ignore[arg-type]


def write_old_cache(root: Path) -> None:
    """The old .npz cache of `root` (run with OLD_COMMIT's code), from the new cache's pixels."""
    from semisup.data.folder.cache import write_cache

    _, layout, candidates = _layout(root)
    new_cache = next((root / ".semisup-cache").glob("[!.]*/images.npy"))
    images = np.load(new_cache, mmap_mode="r")
    n_train, n_test = len(layout.train), len(layout.test)
    labels = [c for _, c in layout.train + layout.test]
    written = write_cache(
        candidates,
        {
            "train_images": images[:n_train],
            "train_targets": np.array(labels[:n_train], np.int64),
            "test_images": images[len(images) - n_test :],
            "test_targets": np.array(labels[n_train:], np.int64),
            "unlabeled_images": images[n_train : len(images) - n_test],
            "class_names": np.array(layout.class_names, dtype=str),
            "skipped": np.array([], dtype=str),
        },
    )
    assert written is not None


# ---------------------------------------------------------------- parent side: the folders


def make_folder(root: Path, total: int, placeholders: bool) -> None:
    """Labeled and test PNGs; `total` images in all, the unlabeled ones empty if `placeholders`."""
    from PIL import Image

    rng = np.random.default_rng(total)

    def png(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)).save(path, compress_level=1)

    for c in range(CLASSES):
        for i in range(LABELED_PER_CLASS):
            png(root / "labeled" / f"c{c}" / f"{i:05d}.png")
        for i in range(TEST_PER_CLASS):
            png(root / "test" / f"c{c}" / f"{i:05d}.png")
    for i in range(total - CLASSES * (LABELED_PER_CLASS + TEST_PER_CLASS)):
        path = root / "unlabeled" / f"d{i // FILES_PER_DIR:03d}" / f"{i:07d}.png"
        if i % FILES_PER_DIR == 0:
            path.parent.mkdir(parents=True)
        if placeholders:
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
        else:
            png(path)


def run_child(mode: str, root: Path, steps: int, old_src: Path | None) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if old_src is not None:
        env["PYTHONPATH"] = str(old_src)
    command = [sys.executable, __file__, "--child", mode, "--root", str(root)]
    done = subprocess.run(
        [*command, "--steps", str(steps)], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        sys.exit(f"{mode} child failed:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    label = "in RAM" if old_src is not None else "mmap"
    print(f"  {mode:9s} {label:6s} {json.dumps(result)}", flush=True)
    return result


def extract_old_code(work: Path) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", OLD_COMMIT, "src/semisup"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(work)], input=archive, check=True)
    return work / "src"


def human(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1000}k"


def mb(value: float) -> str:
    return f"{value:,.0f} MB"


def report(rows: list[dict[str, Any]], steps: int) -> str:
    lines = [
        f"Load from the cache + {steps} FixMatch steps (small CNN, batch 16 + 7x16 unlabeled, "
        "CPU, 1 thread); peak RSS is VmHWM, private is the peak RssAnon, mapped is the peak "
        "RssFile (file pages of the cache mapped in):",
        "",
        "| images | image array | in RAM (old): peak RSS | mmap: peak RSS | mmap: private | "
        "mmap: mapped | mmap: load s | mmap: s/step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        old, new = row["train_old"], row["train_new"]
        step_s = (new["seconds"] - new["load_s"]) / steps
        lines.append(
            f"| {human(row['n'])} | {mb(row['array_mb'])} | {mb(old['vmhwm_mb'])} | "
            f"{mb(new['vmhwm_mb'])} | {mb(new['anon_peak_mb'])} | {mb(new['file_peak_mb'])} | "
            f"{new['load_s']:.1f} | {step_s:.2f} |"
        )
    lines += [
        "",
        "Building the cache (decoding every PNG; two decoding worker processes):",
        "",
        "| images | in RAM (old): peak RSS | mmap: peak RSS | mmap: private | workers: peak RSS "
        "| old s | mmap s |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        old, new = row.get("build_old"), row.get("build_new")
        if old is None or new is None:
            write = row["write_new"]
            lines.append(
                f"| {human(row['n'])} | - | {mb(write['vmhwm_mb'])} (written directly) | "
                f"{mb(write['anon_peak_mb'])} | - | - | {write['seconds']:.0f} |"
            )
            continue
        lines.append(
            f"| {human(row['n'])} | {mb(old['vmhwm_mb'])} | {mb(new['vmhwm_mb'])} | "
            f"{mb(new['anon_peak_mb'])} | {mb(new['workers_max_mb'])} | {old['seconds']:.0f} | "
            f"{new['seconds']:.0f} |"
        )
    baseline = rows[0]["train_new"]["baseline_mb"]
    lines += ["", f"(Python + torch + semisup imported: {mb(baseline)} resident before loading.)"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--direct-from", type=int, default=1_000_000)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--work", type=Path, default=None, help="default: a new temporary folder")
    parser.add_argument("--keep", action="store_true", help="keep the folders and caches")
    parser.add_argument("--child", choices=["build", "train", "write", "write-old"])
    parser.add_argument("--root", type=Path)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.root, args.steps)))
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="semisup-folder-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["SEMISUP_CACHE_DIR"] = str(work / "cache")  # only used if a folder is read-only
    rows = []
    try:
        old_src = extract_old_code(work)
        for n in args.sizes:
            root = work / f"n{n}"
            direct = n >= args.direct_from
            start = time.perf_counter()
            make_folder(root, n, placeholders=direct)
            print(f"{human(n)}: folder written in {time.perf_counter() - start:.0f} s", flush=True)
            row: dict[str, Any] = {"n": n, "array_mb": n * 3 * 32 * 32 / 2**20}
            if direct:
                row["write_new"] = run_child("write", root, args.steps, None)
                run_child("write-old", root, args.steps, old_src)
            else:  # the new build prunes the old .npz (same slot): old first
                row["build_old"] = run_child("build", root, args.steps, old_src)
                row["train_old"] = run_child("train", root, args.steps, old_src)
                row["build_new"] = run_child("build", root, args.steps, None)
            if direct:
                row["train_old"] = run_child("train", root, args.steps, old_src)
            row["train_new"] = run_child("train", root, args.steps, None)
            rows.append(row)
            if not args.keep:
                shutil.rmtree(root)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(report(rows, args.steps))


if __name__ == "__main__":
    main()
