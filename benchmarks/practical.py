"""The practitioner table: `semisup train --time T` on image folders, as a user would run it.

Builds layout-A folders (labeled/<class>/, unlabeled/, test/<class>/) from the CIFAR-10 JPEG zip
beside the project, one per (labels per class, seed): the seed picks the labeled images and the
unlabeled ones. Then trains every (algorithm, folder, budget) cell with the practical defaults
(no --steps, no config: the run sizes itself to the budget), one cell at a time, and writes a
Markdown table of test accuracy (the EMA model at the run's end) with the planned steps and the
model the run chose.

    python benchmarks/practical.py --zip ../shared/datasets/cifar10-jpeg/cifar10_jpeg_q75.zip \
        --work /tmp/practical --labels 4 25 --seeds 1 2 --times 10m 30m \
        --algorithms supervised fixmatch simmatch --out benchmarks/results/practical

`--shapes` instead builds the synthetic 330-image folder of issue 13 (3 classes of 32x32
shapes, 5 labeled images per class) with `make_shapes`; `--shapes-layout B` puts the same
images in layout B (train/<class>/, test/<class>/) and the runs draw their 15 labeled images
with `--num-labels 15` and the seed, as the issue's command did.
`--posed` turns and stretches every shape (a folder where 15 labels show few of the poses).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CIFAR_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


def make_cifar_folder(
    zip_path: Path, root: Path, labels: int, unlabeled: int, test: int, seed: int
) -> Path:
    """Layout A from the zip: `labels` labeled images per class, `unlabeled` others, `test`."""
    folder = root / f"cifar10-{labels}x10-seed{seed}"
    done = root / f"{folder.name}.done"
    if done.exists():
        return folder
    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
        train = [n for n in names if n.startswith("train/") and n.endswith(".jpg")]
        tests = [n for n in names if n.startswith("test/") and n.endswith(".jpg")]
        by_class = {c: [n for n in train if n.split("/")[1] == c] for c in CIFAR_CLASSES}
        picks = {c: rng.permutation(len(files)) for c, files in by_class.items()}
        labeled = {c: [by_class[c][i] for i in picks[c][:labels]] for c in CIFAR_CLASSES}
        rest = [by_class[c][i] for c in CIFAR_CLASSES for i in picks[c][labels:]]
        pool = [rest[i] for i in rng.permutation(len(rest))[:unlabeled]]
        per_class = test // len(CIFAR_CLASSES)
        held_out = [
            name
            for c in CIFAR_CLASSES
            for name in [t for t in tests if t.split("/")[1] == c][:per_class]
        ]
        for name in (n for files in labeled.values() for n in files):
            _extract(archive, name, folder / "labeled" / name.split("/")[1])
        for name in pool:
            _extract(archive, name, folder / "unlabeled", prefix=name.split("/")[1])
        for name in held_out:
            _extract(archive, name, folder / "test" / name.split("/")[1])
    done.write_text("")
    return folder


def _extract(archive: zipfile.ZipFile, name: str, target: Path, prefix: str = "") -> None:
    target.mkdir(parents=True, exist_ok=True)
    base = name.rsplit("/", 1)[1]
    (target / (f"{prefix}-{base}" if prefix else base)).write_bytes(archive.read(name))


def make_shapes(root: Path, seed: int = 0, layout: str = "A", posed: bool = False) -> Path:
    """330 32x32 images of circles, squares and triangles; 5 labeled per class, 60 test.

    Layout A: labeled/<class>/, unlabeled/, test/<class>/. Layout B: the same images, the
    labeled and unlabeled ones of each class together in train/<class>/. `posed`: each shape
    also turned by 0-360 degrees and stretched (ellipses, rectangles, thin triangles), so that
    15 labeled images show few of the poses the test images take.
    """
    name = f"shapes-seed{seed}" if layout == "A" else f"shapes-b-seed{seed}"
    folder = root / (name.replace("shapes", "shapes-posed") if posed else name)
    done = root / f"{folder.name}.done"
    if done.exists():
        return folder
    rng = np.random.default_rng(seed)
    shapes = ("circle", "square", "triangle")
    counts = {"labeled": 5, "unlabeled": 85, "test": 20}  # per class: 3 x 110 = 330 images
    for split, count in counts.items():
        for shape in shapes:
            for i in range(count):
                if layout == "B":
                    target = folder / ("test" if split == "test" else "train") / shape
                else:
                    target = folder / split if split == "unlabeled" else folder / split / shape
                target.mkdir(parents=True, exist_ok=True)
                name = f"{shape}-{i:03d}.png" if layout == "A" else f"{split}-{shape}-{i:03d}.png"
                (_draw_posed if posed else _draw)(shape, rng).save(target / name)
    done.write_text("")
    return folder


def _canvas(rng: np.random.Generator) -> tuple[Image.Image, tuple[int, ...]]:
    """A 32x32 image of a random dark background, and a random light colour to draw with."""
    background = tuple(int(v) for v in rng.integers(0, 120, 3))
    color = tuple(int(v) for v in rng.integers(130, 256, 3))
    return Image.new("RGB", (32, 32), background), color


def _draw(shape: str, rng: np.random.Generator) -> Image.Image:
    image, color = _canvas(rng)
    draw = ImageDraw.Draw(image)
    size, (x, y) = rng.uniform(8, 14), rng.uniform(10, 22, 2)
    box = (x - size, y - size, x + size, y + size)
    if shape == "circle":
        draw.ellipse(box, fill=color)
    elif shape == "square":
        draw.rectangle(box, fill=color)
    else:
        draw.polygon([(x, y - size), (x - size, y + size), (x + size, y + size)], fill=color)
    return _add_noise(image, rng)


def _draw_posed(shape: str, rng: np.random.Generator) -> Image.Image:
    """A shape turned by 0-360 degrees and stretched to 45-100 % along one axis."""
    image, color = _canvas(rng)
    size, (x, y) = rng.uniform(8, 13), rng.uniform(12, 20, 2)
    angle, stretch = rng.uniform(0, 2 * np.pi), rng.uniform(0.45, 1.0)
    if shape == "circle":
        turns = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        outline = np.stack([np.cos(turns), np.sin(turns)], axis=1)
    elif shape == "square":
        outline = np.array([(-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0)])
    else:
        outline = np.array([(0.0, -1.0), (-1.0, 1.0), (1.0, 1.0)])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = (outline * (size, size * stretch)) @ rotation.T + (x, y)
    ImageDraw.Draw(image).polygon([tuple(p) for p in points], fill=color)
    return _add_noise(image, rng)


def _add_noise(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Gaussian pixel noise of standard deviation 12 (of 255)."""
    noise = rng.normal(0, 12, (32, 32, 3))
    pixels = np.clip(np.asarray(image, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def train(
    folder: Path,
    algorithm: str,
    budget: str,
    seed: int,
    out: Path,
    num_labels: int | None = None,
    overrides: tuple[str, ...] = (),
) -> dict:
    """One cell: `semisup train` on the folder with the practical defaults (and `overrides`)."""
    if (out / "summary.json").exists():
        return json.loads((out / "summary.json").read_text())
    command = [sys.executable, "-m", "semisup", "train", "--dataset", "folder"]
    command += ["--data-dir", str(folder), "--algorithm", algorithm, "--seed", str(seed)]
    command += ["--time", budget, "--out", str(out), "--no-report"]
    command += ["--num-labels", str(num_labels)] if num_labels else []
    command += ["--set", "train.progress=false", *overrides]
    started = time.monotonic()
    log = out.parent / f"{out.name}.log"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, check=True)
    summary = json.loads((out / "summary.json").read_text())
    summary["command_seconds"] = round(time.monotonic() - started, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _steps(summary: dict) -> str:
    """The cell's steps; "supervised + algorithm" after a supervised phase."""
    phase = summary.get("supervised_phase")
    return f"{phase['steps']} + {summary['steps']}" if phase else str(summary["steps"])


def table(rows: list[dict]) -> str:
    """Markdown: one row per (folder, budget, algorithm), accuracy per seed."""
    lines = [
        "| data | budget | algorithm | test accuracy % (seeds) | steps (seeds) | model | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    keys = sorted({(r["data"], r["budget"], r["algorithm"]) for r in rows}, key=str)
    for data, budget, algorithm in keys:
        key = (data, budget, algorithm)
        cells = sorted(
            (r for r in rows if (r["data"], r["budget"], r["algorithm"]) == key),
            key=lambda r: r["seed"],
        )
        accuracy = ", ".join(f"{100 * c['test_accuracy']:.1f}" for c in cells)
        steps = ", ".join(_steps(c) for c in cells)
        wall = ", ".join(f"{c['command_seconds']:.0f}" for c in cells)
        model = cells[0]["model"]
        lines.append(
            f"| {data} | {budget} | {algorithm} | {accuracy} | {steps} | {model} | {wall} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zip", type=Path, help="the CIFAR-10 JPEG zip")
    parser.add_argument("--shapes", action="store_true", help="the synthetic shapes folder")
    parser.add_argument("--shapes-layout", choices=["A", "B"], default="A")
    parser.add_argument("--posed", action="store_true", help="shapes turned and stretched")
    parser.add_argument("--work", type=Path, required=True, help="where folders and runs go")
    parser.add_argument("--labels", type=int, nargs="+", default=[4, 25])
    parser.add_argument("--unlabeled", type=int, default=10000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--times", nargs="+", default=["10m"])
    parser.add_argument("--algorithms", nargs="+", default=["supervised", "fixmatch"])
    parser.add_argument("--out", type=Path, help="copy each cell's summary.json here")
    parser.add_argument("--build-only", action="store_true", help="make the folders, train none")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="overrides")
    args = parser.parse_args()
    overrides = tuple(args.set)
    rows = []
    for seed in args.seeds:
        folders = (
            [make_shapes(args.work, seed, args.shapes_layout, args.posed)]
            if args.shapes
            else [
                make_cifar_folder(args.zip, args.work, n, args.unlabeled, args.test, seed)
                for n in args.labels
            ]
        )
        for folder in folders:
            if args.build_only:
                print(folder)
                continue
            for budget in args.times:
                for algorithm in args.algorithms:
                    run = args.work / "runs" / folder.name / budget / algorithm
                    layout_b = args.shapes and args.shapes_layout == "B"
                    num_labels = 15 if layout_b else None
                    summary = train(folder, algorithm, budget, seed, run, num_labels, overrides)
                    config = (run / "config.yaml").read_text()
                    model = summary["model"]
                    label = model["name"] + (f" w{model['width']}" if "width" in model else "")
                    row = {
                        "data": folder.name.rsplit("-seed", 1)[0],
                        "budget": budget,
                        "algorithm": algorithm,
                        "seed": seed,
                        **summary,
                        "model": label,  # the summary's model section, shortened
                    }
                    rows.append(row)
                    if args.out:
                        target = args.out / folder.name / budget / algorithm
                        target.mkdir(parents=True, exist_ok=True)
                        (target / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
                        (target / "config.yaml").write_text(config)
                        phase = run / "supervised-first" / "summary.json"
                        if phase.exists():
                            (target / phase.parent.name).mkdir(exist_ok=True)
                            (target / phase.parent.name / phase.name).write_text(phase.read_text())
                    accuracy = 100 * summary["test_accuracy"]
                    print(f"{folder.name} {budget} {algorithm}: {accuracy:.1f}%", flush=True)
    if rows:
        print(table(rows))


if __name__ == "__main__":
    main()
