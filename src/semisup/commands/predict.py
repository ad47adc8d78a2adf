"""`semisup predict RUN_DIR IMAGES...`: classify image files with a run's EMA model.

Prints one record per image as JSON (default: a list of {"file", "class", "class_index",
"probability"}, plus "probabilities" {class name: probability} with --all-probs) or CSV
(`--format csv`: the same columns, then "probability_<class>" ones). A file that cannot be read
or decoded gets an `error: FILE: why` line on stderr; the others are still classified, and the
exit status is then 1.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from semisup.data.folder.scan import IMAGE_EXTENSIONS
from semisup.errors import UserError
from semisup.inference import Predictions, TrainedModel, load, read_image_file

_GLOB_CHARS = frozenset("*?[")


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Registers `semisup predict` on the `semisup` subcommand parser."""
    parser = commands.add_parser(
        "predict",
        help="classify image files with a run's EMA model (JSON or CSV)",
        description="Classifies images with the EMA model of a run, prepared like its training "
        "images (grey or RGB, centred square resized to the run's image size). Prints JSON or "
        "CSV on stdout and one `error: FILE: why` line on stderr per unusable file (exit 1).",
    )
    parser.add_argument("run_dir", help="a run directory (the --out of `semisup train`)")
    parser.add_argument(
        "images",
        nargs="+",
        help="image files, directories (their image files, recursively) or quoted glob patterns",
    )
    parser.add_argument("--format", choices=("json", "csv"), default="json")
    parser.add_argument(
        "--all-probs", action="store_true", help="also print the probability of every class"
    )
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--batch-size", type=int, default=256, help="images per forward pass")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Classifies the images; returns 1 when some file could not be classified, else 0."""
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    model = load(args.run_dir, args.device)
    files, failures = find_image_files(args.images)
    for message in failures:
        print(f"error: {message}", file=sys.stderr)
    records: list[dict[str, Any]] = []
    for chunk in _chunks(files, args.batch_size):
        good, arrays = [], []
        for path in chunk:
            try:
                arrays.append(read_image_file(path, model.image_shape[1], model.image_shape[0]))
                good.append(path)
            except UserError as e:
                failures.append(str(e))
                print(f"error: {e}", file=sys.stderr)
        if good:
            predictions = model.predict(torch.from_numpy(np.stack(arrays)), args.batch_size)
            records += prediction_records(good, predictions, model, args.all_probs)
    write_records(records, args.format, model.class_names if args.all_probs else None)
    return 1 if failures else 0


def find_image_files(arguments: Sequence[str]) -> tuple[list[Path], list[str]]:
    """The files the arguments name, and an error message for each argument that names none.

    A directory gives its image files (by extension, recursively, hidden ones left out); a
    pattern that is not an existing path is expanded like a shell glob (`**` recurses); any
    other argument is taken as a file, and a missing one is reported when it is read.
    """
    files: list[Path] = []
    errors: list[str] = []
    for argument in arguments:
        path = Path(argument)
        if path.exists() or not _GLOB_CHARS & set(argument):
            matches = [path]
        else:
            matches = [Path(m) for m in sorted(glob.glob(argument, recursive=True))]
            if not matches:
                errors.append(f"{argument}: no file matches this pattern")
        for match in matches:
            if not match.is_dir():
                files.append(match)
                continue
            found = _image_files_under(match)
            if not found:
                extensions = ", ".join(sorted(IMAGE_EXTENSIONS))
                errors.append(f"{match}: the directory holds no image files ({extensions})")
            files += found
    return files, errors


def _image_files_under(directory: Path) -> list[Path]:
    found = []
    for root, subdirs, names in os.walk(directory):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        found += [
            Path(root) / name
            for name in sorted(names)
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
        ]
    return found


def _chunks(items: list[Path], size: int) -> Iterator[list[Path]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def prediction_records(
    files: Sequence[Path], predictions: Predictions, model: TrainedModel, all_probs: bool
) -> list[dict[str, Any]]:
    """One output record per file (the JSON objects; CSV rows flatten "probabilities")."""
    records = []
    confidences = predictions.confidences.tolist()
    for i, path in enumerate(files):
        record: dict[str, Any] = {
            "file": str(path),
            "class": predictions.classes[i],
            "class_index": int(predictions.class_indices[i]),
            "probability": confidences[i],
        }
        if all_probs:
            values = predictions.probabilities[i].tolist()
            record["probabilities"] = dict(zip(model.class_names, values, strict=True))
        records.append(record)
    return records


def write_records(
    records: list[dict[str, Any]], output_format: str, class_names: Sequence[str] | None
) -> None:
    """Prints the records to stdout as a JSON list or as CSV with a header row.

    Args:
        records: from `prediction_records`.
        output_format: "json" or "csv".
        class_names: the columns of the per-class probabilities (CSV with --all-probs), or None.
    """
    if output_format == "json":
        print(json.dumps(records, indent=2))
        return
    columns = ["file", "class", "class_index", "probability"]
    columns += [f"probability_{name}" for name in class_names or ()]
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow([printable(c) for c in columns])
    for record in records:
        row = [printable(record[key]) for key in columns[:4]]
        writer.writerow(row + list(record.get("probabilities", {}).values()))


def printable(value: Any) -> Any:
    """A file or class name whose bytes are not UTF-8 with U+FFFD for them (others unchanged).

    File names of any bytes reach Python as str with surrogates, which a UTF-8 stdout refuses.
    """
    if not isinstance(value, str):
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
