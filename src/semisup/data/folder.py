"""The `folder` data set: a user's own images in a directory or a .zip file.

Layouts (see `folder_scan`): `labeled/<class>/*` with optional `unlabeled/**` and `test/<class>/*`
(every training image is labeled), or `train/<class>/*` with `test/<class>/*` (the SSL split picks
the labeled subset). Class ids follow the sorted class folder names. Images are decoded once
(see `folder_decode` for the conversion and resizing rules) and cached as one .npz file (see
`folder_cache`); files that cannot be decoded are skipped and listed in `skipped_files`.
"""

from __future__ import annotations

import functools
import logging
import numbers
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from semisup.data.base import DATASETS, ImageDataset
from semisup.data.folder_cache import cache_candidates, read_cache, write_cache
from semisup.data.folder_decode import Probe, decode_image, iter_jobs, probe_image
from semisup.data.folder_scan import FolderLayout, FolderSource, find_layout, open_source
from semisup.errors import UserError

logger = logging.getLogger("semisup.data")

MAX_DEFAULT_IMAGE_SIZE = 256  # the automatic image size never exceeds this (memory)
_SHOWN_SKIPPED = 5


@DATASETS.register("folder")
def load_folder(
    data_dir: str | Path,
    *,
    image_size: int | None = None,
    cache_dir: str | Path | None = None,
    grayscale: bool | None = None,
) -> ImageDataset:
    """Loads a folder of images (a directory or a .zip of one) into memory.

    Args:
        data_dir: the directory or .zip file, holding `labeled/` or `train/` at its top or
            under one top-level folder.
        image_size: side S of the square uint8 (N, C, S, S) images. None keeps the size when all
            images are square and equal, else uses the most common shorter side; at most
            MAX_DEFAULT_IMAGE_SIZE.
        cache_dir: where to cache the decoded images when `data_dir` is a zip or not writable
            (default `$SEMISUP_CACHE_DIR`, else `~/.cache/semisup/folders`). A writable
            directory keeps its cache in `<data_dir>/.semisup-cache/`.
        grayscale: True for 1 channel, False for RGB, None for 1 channel only when every image
            is greyscale.

    Returns:
        The data set; `all_labeled` is True for the `labeled/` layout, `hflip` is True.

    Raises:
        UserError: when the folder is missing, has neither layout, has an empty class folder,
            a test class that is not a training class, or no decodable image.
    """
    if image_size is not None:
        if isinstance(image_size, bool) or not isinstance(image_size, numbers.Integral):
            raise UserError(f"image_size must be a positive integer or unset, got {image_size!r}")
        image_size = int(image_size)
        if image_size < 1:
            raise UserError(f"image_size must be a positive integer or unset, got {image_size}")
    if grayscale is not None and not isinstance(grayscale, bool):
        raise UserError(f"grayscale must be true, false or unset, got {grayscale!r}")
    source = open_source(data_dir)
    layout = find_layout(source)
    options: dict[str, object] = {"image_size": image_size, "grayscale": grayscale}
    candidates = cache_candidates(
        source, layout.kind, options, Path(cache_dir) if cache_dir is not None else None
    )
    for path in candidates:
        arrays = read_cache(path)
        if arrays is not None:
            dataset = _to_dataset(arrays, layout, source)
            logger.info("loaded %d images from cache %s", _count(dataset), path)
            _warn_skipped(dataset.skipped_files, "")
            return dataset
    arrays = _decode_folder(source, layout, image_size, grayscale)
    written = write_cache(candidates, arrays)
    if written is not None:
        logger.info("cached the decoded images in %s", written)
    return _to_dataset(arrays, layout, source)


def _count(dataset: ImageDataset) -> int:
    splits = (dataset.train_images, dataset.test_images, dataset.unlabeled_images)
    return sum(len(s) for s in splits if s is not None)


def _to_dataset(arrays: dict, layout: FolderLayout, source: FolderSource) -> ImageDataset:
    def tensor(name: str) -> torch.Tensor | None:
        return torch.from_numpy(arrays[name]) if arrays.get(name) is not None else None

    return ImageDataset(
        train_images=torch.from_numpy(arrays["train_images"]),
        train_targets=torch.from_numpy(arrays["train_targets"]),
        test_images=tensor("test_images"),
        test_targets=tensor("test_targets"),
        class_names=layout.class_names,
        hflip=True,
        unlabeled_images=tensor("unlabeled_images"),
        all_labeled=layout.kind == "labeled",
        skipped_files=tuple(source.display(str(rel)) for rel in arrays["skipped"]),
    )


def _warn_skipped(skipped: tuple[str, ...], reason: str) -> None:
    if not skipped:
        return
    shown = ", ".join(skipped[:_SHOWN_SKIPPED]) + (", ..." if len(skipped) > _SHOWN_SKIPPED else "")
    logger.warning(
        "skipped %d image file(s) that could not be decoded%s: %s (listed in skipped_files)",
        len(skipped),
        f" (first error: {reason})" if reason else "",
        shown,
    )


def _choose_size(probes: list[Probe]) -> int:
    """The side of equal square images, else the most common shorter side (capped)."""
    sizes = Counter((p.height, p.width) for p in probes)
    (height, width), *others = sizes
    if not others and height == width:
        size = height
    else:
        shorter = Counter(min(p.height, p.width) for p in probes)
        size = max(shorter, key=lambda side: (shorter[side], -side))
        logger.info(
            "the images are not all square and of one size (%d sizes, e.g. %dx%d); using %dx%d "
            "(the most common shorter side, then a centre crop); set image_size to choose",
            len(sizes),
            height,
            width,
            size,
            size,
        )
    if size > MAX_DEFAULT_IMAGE_SIZE:
        logger.warning(
            "the images are large (%dx%d); resizing them to %dx%d to keep memory in check; set "
            "image_size to choose another size",
            size,
            size,
            MAX_DEFAULT_IMAGE_SIZE,
            MAX_DEFAULT_IMAGE_SIZE,
        )
        size = MAX_DEFAULT_IMAGE_SIZE
    return size


def _size_and_channels(
    source: FolderSource,
    members: list[str],
    failed: dict[int, str],
    decoded: dict[int, np.ndarray],
    image_size: int | None,
    grayscale: bool | None,
) -> tuple[int, int]:
    """The given image size and channel count, or ones chosen from the image headers.

    Files whose header cannot be read are added to `failed`; small images that reading the
    header already decoded (see `probe_image`) are added to `decoded`.
    """
    channels = None if grayscale is None else (1 if grayscale else 3)
    if image_size is not None and channels is not None:
        return image_size, channels
    probes: list[Probe] = []
    for outcome in iter_jobs(
        source.path, source.is_zip, members, probe_image, "reading image headers"
    ):
        if outcome.value is None:
            failed[outcome.index] = outcome.error
            continue
        probe, array = outcome.value  # type: ignore[misc]
        probes.append(probe)
        if array is not None:
            decoded[outcome.index] = array
    if not probes:
        raise UserError(
            f"none of the {len(members)} image files in {source.display('')} could be decoded "
            f"(first error: {next(iter(failed.values()), 'none')}); check the files"
        )
    if channels is None:
        channels = 1 if all(p.grey for p in probes) else 3
        if channels == 1:
            logger.info("all images are greyscale: loading 1 channel (grayscale=false for 3)")
    return image_size or _choose_size(probes), channels


def _decode_folder(
    source: FolderSource, layout: FolderLayout, image_size: int | None, grayscale: bool | None
) -> dict[str, np.ndarray | None]:
    """Decodes every image of the layout; returns the arrays that the cache stores."""
    rels = [r for r, _ in layout.train] + [r for r, _ in layout.test] + layout.unlabeled
    labels = np.array(
        [c for _, c in layout.train + layout.test] + [-1] * len(layout.unlabeled), np.int64
    )
    member_of = {f.rel: f.member for f in source.files}
    members = [member_of[r] for r in rels]
    failed: dict[int, str] = {}
    decoded: dict[int, np.ndarray] = {}
    size, channels = _size_and_channels(source, members, failed, decoded, image_size, grayscale)
    # One buffer, filled as results stream in, so memory holds the images twice at most for
    # the small ones decoded with the headers.
    images = np.empty((len(rels), channels, size, size), np.uint8)
    done: set[int] = set()
    for index, array in decoded.items():
        if array.shape == images.shape[1:]:
            images[index] = array
            done.add(index)
    decoded.clear()
    todo = [i for i in range(len(rels)) if i not in failed and i not in done]
    work = functools.partial(decode_image, size=size, channels=channels)
    todo_members = [members[i] for i in todo]
    for outcome in iter_jobs(source.path, source.is_zip, todo_members, work, "decoding images"):
        if outcome.value is None:
            failed[todo[outcome.index]] = outcome.error
        else:
            images[todo[outcome.index]] = outcome.value
    skipped = [rels[i] for i in sorted(failed)]
    _warn_skipped(tuple(source.display(r) for r in skipped), failed[min(failed)] if failed else "")
    kept = [i for i in range(len(rels)) if i not in failed]
    if failed:  # move the decoded images to the front, in order
        for new, old in enumerate(kept[min(failed) :], start=min(failed)):
            images[new] = images[old]
    labels = labels[kept]
    n_train = sum(1 for i in kept if i < len(layout.train))
    n_test = sum(1 for i in kept if len(layout.train) <= i < len(layout.train) + len(layout.test))
    splits = np.cumsum([0, n_train, n_test, len(kept) - n_train - n_test])
    train, test, unlabeled = (images[a:b] for a, b in zip(splits[:-1], splits[1:], strict=True))
    train_targets, test_targets = labels[: splits[1]], labels[splits[1] : splits[2]]
    _check_classes(source, layout, layout.kind, layout.train, train_targets)
    _check_classes(source, layout, "test", layout.test, test_targets)
    if layout.has_unlabeled and len(unlabeled) == 0:
        logger.warning("%s holds no decodable images", source.display("unlabeled"))
    return {
        "train_images": train,
        "train_targets": train_targets,
        "test_images": test if layout.has_test else None,
        "test_targets": test_targets if layout.has_test else None,
        "unlabeled_images": unlabeled if len(unlabeled) else None,
        "class_names": np.array(layout.class_names, dtype=str),
        "skipped": np.array(skipped, dtype=str),
    }


def _check_classes(
    source: FolderSource,
    layout: FolderLayout,
    split: str,
    files: list[tuple[str, int]],
    targets: np.ndarray,
) -> None:
    """Raises when every image of a class folder of `split` was skipped."""
    for class_id in sorted({c for _, c in files} - set(targets.tolist())):
        folder = source.display(f"{split}/{layout.class_names[class_id]}")
        raise UserError(
            f"class folder {folder} holds no decodable images (every file was corrupt or in an "
            "unsupported format); replace the files or remove the folder"
        )
