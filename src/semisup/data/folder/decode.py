"""Decoding a folder's image files with Pillow, in parallel for large folders.

Conversion rules (applied to every image, whatever its format):

- EXIF orientation is applied, and only the first frame of animated/multi-page files is read.
- Transparent images (RGBA, LA, palette or RGB/L with a transparent colour) are composited on a
  **white** background, as browsers and file viewers show them.
- 16-bit and 32-bit integer greyscale is scaled to 8 bits (value / 257); float images in [0, 1]
  are scaled by 255, others clipped to [0, 255].
- Colour images become RGB; grey ones become 'L' (ITU-R 601 luma when forced to grey). Palette
  images count as colour when the loader picks the channel count.
- Resizing: the centred square of side min(H, W) is resized to S x S with Pillow's BICUBIC filter
  (with antialiasing; the same as resizing the shorter side to S then centre-cropping, without
  rounding the crop to whole pixels). Large JPEGs are first decoded at a reduced scale
  (Pillow's `draft`), never below S.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import re
import sys
import warnings
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageFile, ImageOps
from tqdm import tqdm

GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_ORIENTATION_TAG = 0x0112
POOL_MIN_FILES = 2000  # fewer files are decoded in this process, without a progress bar
_CHUNK = 256
EARLY_DECODE_MAX_SIDE = 64  # square images up to this side are decoded while probed
_BUFFER_REPR = re.compile(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>")


class Probe(NamedTuple):
    """What the header of an image tells: its displayed size and whether it is greyscale."""

    width: int
    height: int
    grey: bool


class Outcome(NamedTuple):
    """The result of one job: the value, or None and why the file could not be read."""

    index: int
    value: object
    error: str


class _Reader:
    """Reads file bytes from a directory or a zip file (one open handle per process)."""

    def __init__(self, path: Path, is_zip: bool) -> None:
        self.path = path
        self.archive = zipfile.ZipFile(path) if is_zip else None

    def read(self, member: str) -> bytes:
        if self.archive is not None:
            return self.archive.read(member)
        return (self.path / member).read_bytes()

    def close(self) -> None:
        if self.archive is not None:
            self.archive.close()


_reader: _Reader | None = None  # the reader of a pool worker


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # broken EXIF: show the image as stored
        return 1


def _to_eight_bit_grey(img: Image.Image) -> Image.Image:
    array = np.asarray(img)
    if img.mode == "F":
        values = array.astype(np.float64)
        values = values * 255.0 if np.nanmax(values, initial=0.0) <= 1.0 else values
    else:
        values = np.clip(array.astype(np.float64), 0, 65535) / 257.0
    return Image.fromarray(np.clip(np.rint(np.nan_to_num(values)), 0, 255).astype(np.uint8))


def _convert(img: Image.Image, channels: int) -> Image.Image:
    """Converts any Pillow mode to 'RGB' (channels=3) or 'L' (channels=1)."""
    if img.mode.startswith("I") or img.mode == "F":
        img = _to_eight_bit_grey(img)
    transparent = img.mode in _ALPHA_MODES or (
        img.mode in ("P", "L", "RGB") and "transparency" in img.info
    )
    if transparent:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    target = "L" if channels == 1 else "RGB"
    return img if img.mode == target else img.convert(target)


def _square(img: Image.Image, size: int) -> Image.Image:
    width, height = img.size
    if (width, height) == (size, size):
        return img
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    box = (left, top, left + side, top + side)
    return img.resize((size, size), Image.Resampling.BICUBIC, box=box)


def _decode_opened(img: Image.Image, size: int, channels: int) -> np.ndarray:
    if img.format == "JPEG" and min(img.size) >= 2 * size:
        img.draft(None, (size, size))
    img.load()
    if _orientation(img) != 1:
        img = ImageOps.exif_transpose(img)
    array = np.asarray(_square(_convert(img, channels), size), dtype=np.uint8)
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return np.ascontiguousarray(array)


def decode_image(data: bytes, size: int, channels: int) -> np.ndarray:
    """Decodes one image file to a uint8 (channels, size, size) array.

    Raises:
        Exception: whatever Pillow raises on a corrupt, truncated or unsupported file.
    """
    with Image.open(io.BytesIO(data)) as img:
        return _decode_opened(img, size, channels)


def probe_image(data: bytes) -> tuple[Probe, np.ndarray | None]:
    """Reads the header of an image: its size after EXIF rotation and whether it is grey.

    A small square image (side at most EARLY_DECODE_MAX_SIDE) is decoded at once, at its own
    size with its own channel count (1 if grey, else 3), exactly as `decode_image` would: when
    that is the size and channel count the loader picks, the file is not read a second time.

    Raises:
        Exception: whatever Pillow raises on a corrupt, truncated or unsupported file.
    """
    with Image.open(io.BytesIO(data)) as img:
        width, height = img.size
        if _orientation(img) in (5, 6, 7, 8):
            width, height = height, width
        probe = Probe(width, height, img.mode in GREY_MODES)
        if width == height <= EARLY_DECODE_MAX_SIDE:
            return probe, _decode_opened(img, width, 1 if probe.grey else 3)
    return probe, None


def _run_one(job: tuple[int, str], work: Callable[[bytes], object], reader: _Reader) -> Outcome:
    index, member = job
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module="PIL")
            return Outcome(index, work(reader.read(member)), "")
    except Exception as error:  # any decoder failure means "not a usable image"
        # Pillow names the in-memory buffer it read from; name the file instead
        message = _BUFFER_REPR.sub(lambda _: repr(member), str(error))
        return Outcome(index, None, f"{type(error).__name__}: {message}")


def _init_worker(path: Path, is_zip: bool) -> None:
    global _reader
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    _reader = _Reader(path, is_zip)


def _worker(task: tuple[Callable[[bytes], object], list[tuple[int, str]]]) -> list[Outcome]:
    work, jobs = task
    assert _reader is not None
    return [_run_one(job, work, _reader) for job in jobs]


@contextmanager
def _strict_truncation() -> Iterator[None]:
    """Keeps Pillow raising on truncated files even if the caller allowed them globally."""
    before = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = before


def _num_workers(num_jobs: int) -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cpus or 1, num_jobs // _CHUNK))


def _pool_context() -> multiprocessing.context.BaseContext:
    # fork starts fast and, unlike spawn, never re-runs a user's unguarded main script.
    if sys.platform.startswith("linux"):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context()


def iter_jobs(
    path: Path,
    is_zip: bool,
    members: Sequence[str],
    work: Callable[[bytes], object],
    desc: str,
) -> Iterator[Outcome]:
    """Applies `work` to the bytes of every member, in a process pool for large folders.

    Results stream in member order, so the caller can store each one as it arrives.

    Args:
        path: the directory or zip file.
        is_zip: whether `path` is a zip file.
        members: file paths relative to the directory, or zip member names.
        work: a picklable function of the file bytes (a module-level function or a partial).
        desc: the progress bar's label.

    Yields:
        One Outcome per member, in order; a failed file has value None and an error message.
    """
    jobs = list(enumerate(members))
    large = len(jobs) >= POOL_MIN_FILES
    workers = _num_workers(len(jobs)) if large else 1
    with (
        _strict_truncation(),
        tqdm(total=len(jobs), desc=desc, unit="img", file=sys.stderr, disable=not large) as bar,
    ):
        pool = None
        if workers > 1:
            try:
                pool = _pool_context().Pool(workers, _init_worker, (path, is_zip))
            except (AssertionError, OSError):  # e.g. inside a daemonic process: go serial
                pool = None
        if pool is not None:
            chunks = ((work, jobs[i : i + _CHUNK]) for i in range(0, len(jobs), _CHUNK))
            with pool:
                for outcomes in pool.imap(_worker, chunks):
                    yield from outcomes
                    bar.update(len(outcomes))
            return
        reader = _Reader(path, is_zip)
        try:
            for job in jobs:
                yield _run_one(job, work, reader)
                bar.update(1)
        finally:
            reader.close()
