"""The `folder` data set: a user's own images in a directory or a .zip file.

Layouts (see `scan`): `labeled/<class>/*` with optional `unlabeled/**` and `test/<class>/*`
(every training image is labeled), or `train/<class>/*` with `test/<class>/*` (the SSL split picks
the labeled subset). Class ids follow the sorted class folder names. Images are decoded once
(see `decode` for the conversion and resizing rules), each written to the cache (see
`cache`) as soon as it is decoded, and the data set's image tensors are memory-mapped views
of the cache file: memory does not grow with the number of images. Files that cannot be decoded
are skipped and listed in `skipped_files`.
"""

from __future__ import annotations

import functools
import logging
import numbers
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from semisup.data.base import DATASETS, ImageDataset
from semisup.data.folder.cache import (
    CacheContent,
    ImageRows,
    cache_candidates,
    open_cache,
    read_cache,
    start_cache,
)
from semisup.data.folder.decode import Probe, decode_image, iter_jobs, probe_image
from semisup.data.folder.scan import FolderLayout, FolderSource, find_layout, open_source
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
    """Loads a folder of images (a directory or a .zip of one), memory-mapped from its cache.

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
        content = read_cache(path)
        if content is not None:
            dataset = _to_dataset(content, layout, source)
            logger.info("loaded %d images from cache %s", len(content.images), path)
            _warn_skipped(dataset.skipped_files, "")
            return dataset
    try:
        with start_cache(candidates) as writer:
            built = _decode_folder(source, layout, image_size, grayscale, writer.allocate)
            written = writer.commit(
                built.count, built.targets, built.counts, built.class_names, built.skipped
            )
            content = open_cache(written)  # maps the images before a scratch cache is deleted
    except OSError as error:  # writing an image into the cache (the files are read apart)
        raise UserError(
            f"cannot write the image cache ({error.strerror or error}); free some disk space "
            "or set cache_dir to another folder"
        ) from error
    if writer.keep:
        logger.info("cached the decoded images in %s", written)
    return _to_dataset(content, layout, source)


def _to_dataset(content: CacheContent, layout: FolderLayout, source: FolderSource) -> ImageDataset:
    """The data set whose image tensors are views of the cache's (memory-mapped) images.

    The training and unlabeled images are adjacent views of one tensor, so `build_ssl_data`
    joins them into the training pool without copying.
    """
    images, targets = torch.from_numpy(content.images), torch.from_numpy(content.targets)
    train, unlabeled, _ = content.counts
    pool = train + unlabeled
    return ImageDataset(
        train_images=images[:train],
        train_targets=targets[:train],
        test_images=images[pool:] if layout.has_test else None,
        test_targets=targets[pool:] if layout.has_test else None,
        class_names=content.class_names,
        hflip=True,
        unlabeled_images=images[train:pool] if unlabeled else None,
        all_labeled=layout.kind == "labeled",
        skipped_files=tuple(source.display(rel) for rel in content.skipped),
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


def choose_size(probes: list[Probe]) -> int:
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


class _Images:
    """The (N, C, S, S) image file the images are decoded into, from `allocate`.

    Small images decoded while their headers are read (see `probe_image`) are stored at once,
    into a file shaped like the first of them that fits the given options: when the loader
    then picks that shape (all images square and of one size, the usual case), they are not
    read again; otherwise that file is replaced and they are decoded again.
    """

    def __init__(self, count: int, allocate: Callable[[tuple[int, ...]], ImageRows]) -> None:
        self.count, self.allocate = count, allocate
        self.rows: ImageRows | None = None
        self.done: set[int] = set()

    def put_early(
        self, index: int, image: np.ndarray, size: int | None, channels: int | None
    ) -> None:
        """Stores an image decoded at its own size and channel count, if it may fit.

        `size` and `channels` are the given options (None: not yet known).
        """
        if self.rows is None:
            own_channels, own_size = image.shape[:2]
            if (channels or own_channels) != own_channels or (size or own_size) != own_size:
                return
            self.rows = self.allocate((self.count, *image.shape))
        if image.shape == self.rows.shape[1:]:
            self.rows[index] = image
            self.done.add(index)

    def shaped(self, shape: tuple[int, int, int]) -> ImageRows:
        """The file for images of `shape`, keeping the early images if they have it."""
        if self.rows is None or self.rows.shape[1:] != shape:
            self.done.clear()
            self.rows = self.allocate((self.count, *shape))
        return self.rows


def _size_and_channels(
    source: FolderSource,
    members: list[str],
    failed: dict[int, str],
    images: _Images,
    image_size: int | None,
    grayscale: bool | None,
) -> tuple[int, int]:
    """The given image size and channel count, or ones chosen from the image headers.

    Files whose header cannot be read are added to `failed`; small images that reading the
    header already decoded (see `probe_image`) are offered to `images`.
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
            images.put_early(outcome.index, array, image_size, channels)
    if not probes:
        raise UserError(
            f"none of the {len(members)} image files in {source.display('')} could be decoded "
            f"(first error: {next(iter(failed.values()), 'none')}); check the files"
        )
    if channels is None:
        channels = 1 if all(p.grey for p in probes) else 3
        if channels == 1:
            logger.info("all images are greyscale: loading 1 channel (grayscale=false for 3)")
    return image_size or choose_size(probes), channels


class _Decoded(NamedTuple):
    """What `_decode_folder` found, besides the images it wrote (see `CacheWriter.commit`)."""

    count: int
    targets: np.ndarray
    counts: tuple[int, int, int]
    class_names: tuple[str, ...]
    skipped: list[str]


def _decode_folder(
    source: FolderSource,
    layout: FolderLayout,
    image_size: int | None,
    grayscale: bool | None,
    allocate: Callable[[tuple[int, ...]], ImageRows],
) -> _Decoded:
    """Decodes every image of the layout into the file from `allocate`, in the cache's order.

    The images are written one by one as results stream in (never all held in memory); the
    decodable ones end up at the front: training, then unlabeled, then test images.
    """
    rels = [r for r, _ in layout.train] + layout.unlabeled + [r for r, _ in layout.test]
    labels = np.array(
        [c for _, c in layout.train] + [-1] * len(layout.unlabeled) + [c for _, c in layout.test],
        np.int64,
    )
    member_of = {f.rel: f.member for f in source.files}
    members = [member_of[r] for r in rels]
    failed: dict[int, str] = {}
    target = _Images(len(rels), allocate)
    size, channels = _size_and_channels(source, members, failed, target, image_size, grayscale)
    images = target.shaped((channels, size, size))
    todo = [i for i in range(len(rels)) if i not in failed and i not in target.done]
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
    bounds = np.cumsum([len(layout.train), len(layout.unlabeled)])
    split_of = np.searchsorted(bounds, np.array(kept, np.int64), side="right")  # 0, 1, 2
    n_train, n_unlabeled, n_test = (int(n) for n in np.bincount(split_of, minlength=3))
    _check_classes(source, layout, layout.kind, layout.train, labels[:n_train])
    _check_classes(source, layout, "test", layout.test, labels[n_train + n_unlabeled :])
    if layout.has_unlabeled and n_unlabeled == 0:
        logger.warning("%s holds no decodable images", source.display("unlabeled"))
    counts = (n_train, n_unlabeled, n_test)
    return _Decoded(len(kept), labels, counts, layout.class_names, skipped)


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
