"""The decoded-image cache of an image folder: one directory of memory-mappable files per state.

A cache is a directory `<slot>-<key>/` holding

- `images.npy`: uint8 (N, C, S, S), the training images, then the extra unlabeled images, then
  the test images, so the training pool (training + unlabeled images) is one contiguous block;
- `targets.npy`: int64 (N,), the class ids (-1 for the unlabeled images);
- `meta.json`: the format version, the image count of each split, the class names and the
  skipped (undecodable) files.

It is written into a temporary directory beside it, each image written to `images.npy` as soon
as it is decoded (memory does not grow with the folder's size), synced to disk and then renamed
into place, so a cache directory is always complete: an interrupted build leaves at most a
hidden `.tmp-*` directory that is never read. A build holds a lock on a file in its temporary
directory (released by the kernel however the build ends); the next build into the same
folder deletes every temporary directory whose lock is free, so a killed build's files do not
stay on the disk. Loading maps `images.npy` copy-on-write
(`mmap_mode="c"`): batches read their images from the page cache, nothing is copied up front,
and writes to the tensors never reach the file.

The key hashes the folder's content (relative paths, sizes, mtimes or zip CRCs), the requested
options and the format version, so any change to the folder or the options misses the cache.
The slot hashes only the options (and, outside the folder, the folder's path): when a new cache
is written, older caches of the same slot are deleted, also those of an earlier format.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import numpy as np

from semisup.data.folder.scan import FolderSource
from semisup.errors import UserError

logger = logging.getLogger("semisup.data")

CACHE_FORMAT = 2  # bump whenever the decoding rules or the cache's content change
CACHE_SUBDIR = ".semisup-cache"
SPLITS = ("train", "unlabeled", "test")  # the order of the images in `images.npy`
_IMAGES, _TARGETS, _META = "images.npy", "targets.npy", "meta.json"
# Slots hash this constant, not CACHE_FORMAT, so that a cache of a newer format replaces the
# older ones (format 1, one .npz file per cache, hashed 1 here too).
_SLOT_SEED = 1
_DIGEST_SLICE = 10_000  # values per JSON text hashed: fast, and short texts
_TEMP_PREFIX, _TEMP_LOCK = ".tmp-", ".building"
_UNLOCKED_TEMP_AGE = 600  # seconds after which a temporary directory without a lock is stale


@dataclass(frozen=True)
class CacheContent:
    """What a cache holds.

    Attributes:
        images: uint8 (N, C, S, S), split by `counts` in the order of SPLITS; memory-mapped
            copy-on-write when read from a cache.
        targets: int64 (N,) class ids, -1 for the unlabeled images.
        counts: the number of images of each split, in the order of SPLITS.
        class_names: one per class id.
        skipped: the undecodable files, relative to the layout root.
    """

    images: np.ndarray
    targets: np.ndarray
    counts: tuple[int, int, int]
    class_names: tuple[str, ...]
    skipped: tuple[str, ...]


def default_cache_dir() -> Path:
    """`$SEMISUP_CACHE_DIR`, else `~/.cache/semisup/folders`."""
    env = os.environ.get("SEMISUP_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "semisup" / "folders"


def _digest(value: object) -> str:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _content_digest(values: list[object]) -> str:
    """SHA-256 of the values' JSON, a slice at a time (a fingerprint lists every file)."""
    hasher = hashlib.sha256()
    for start in range(0, len(values), _DIGEST_SLICE):
        part = values[start : start + _DIGEST_SLICE]
        text = json.dumps(part, separators=(",", ":"), ensure_ascii=False)
        hasher.update(text.encode("utf-8", "surrogatepass") + b"\n")
    return hasher.hexdigest()


def cache_candidates(
    source: FolderSource, layout_kind: str, options: dict[str, object], cache_dir: Path | None
) -> list[Path]:
    """Where the cache may be, in order: inside a directory, then the fallback folder."""
    content = _content_digest([CACHE_FORMAT, layout_kind, options, *source.fingerprint()])[:24]
    paths = []
    if not source.is_zip:
        slot = _digest([_SLOT_SEED, options])[:12]
        paths.append(source.path / CACHE_SUBDIR / f"{slot}-{content}")
    folder = cache_dir.expanduser() if cache_dir is not None else default_cache_dir()
    slot = _digest([_SLOT_SEED, options, str(source.path.resolve())])[:12]
    paths.append(folder / f"{slot}-{content}")
    return paths


def read_cache(path: Path) -> CacheContent | None:
    """The cache at `path`, None when there is none; an unreadable cache is deleted."""
    if not path.is_dir():
        return None
    try:
        return open_cache(path)
    except PermissionError as error:  # e.g. another user's cache: leave it alone
        logger.warning("cannot read cache %s (%s); decoding the images again", path, error)
        return None
    except Exception as error:  # whatever is wrong with the content, rebuilding fixes it
        logger.warning("deleting unreadable cache %s (%s); decoding the images again", path, error)
        _remove(path)
        return None


def open_cache(path: Path) -> CacheContent:
    """Maps the images of the cache at `path` (copy-on-write) and reads the rest.

    Raises:
        OSError: when a file is missing or unreadable.
        ValueError: when the content is inconsistent or of another format version.
    """
    meta = json.loads((path / _META).read_text(encoding="utf-8"))
    if meta.get("format") != CACHE_FORMAT:
        raise ValueError(f"cache format {meta.get('format')}, expected {CACHE_FORMAT}")
    images = np.load(path / _IMAGES, mmap_mode="c", allow_pickle=False)
    targets = np.load(path / _TARGETS, allow_pickle=False)
    counts = tuple(int(meta["counts"][split]) for split in SPLITS)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"{_IMAGES} is not a uint8 4-d array")
    if targets.dtype != np.int64 or targets.shape != (len(images),):
        raise ValueError(f"{_TARGETS} does not hold one int64 class id per image")
    if sum(counts) != len(images) or min(counts) < 0:
        raise ValueError(f"the split sizes {counts} do not add up to {len(images)} images")
    return CacheContent(
        images=images,
        targets=targets,
        counts=counts,  # type: ignore[arg-type]
        class_names=tuple(str(name) for name in meta["class_names"]),
        skipped=tuple(str(rel) for rel in meta["skipped"]),
    )


class ImageRows:
    """A new uint8 .npy file of images (N, C, S, S), written image by image through the file.

    Unlike a writable memory map, writing leaves no page of the file mapped into the process:
    its resident memory does not grow with the file, and a full disk raises OSError rather
    than killing the process with SIGBUS.

    Args:
        path: the file to create.
        shape: (N, C, S, S).
    """

    def __init__(self, path: Path, shape: tuple[int, ...]) -> None:
        self.shape = shape
        self.row_bytes = math.prod(shape[1:])
        self.handle = open(path, "w+b", buffering=0)  # noqa: SIM115 (see close, finish)
        try:
            self._write_header(shape[0])
            self.offset = self.handle.tell()
            self.handle.truncate(self.offset + shape[0] * self.row_bytes)  # sparse until written
            _reserve(self.handle.fileno())
        except BaseException:
            self.handle.close()
            raise

    def _write_header(self, count: int) -> None:
        self.handle.seek(0)
        header = {"descr": "|u1", "fortran_order": False, "shape": (count, *self.shape[1:])}
        np.lib.format.write_array_header_1_0(self.handle, header)

    def __setitem__(self, index: int, image: np.ndarray) -> None:
        if image.shape != self.shape[1:] or image.dtype != np.uint8:
            raise ValueError(f"expected a uint8 image of shape {self.shape[1:]}, got {image.shape}")
        self.handle.seek(self.offset + index * self.row_bytes)
        self.handle.write(np.ascontiguousarray(image).data)

    def __getitem__(self, index: int) -> np.ndarray:
        self.handle.seek(self.offset + index * self.row_bytes)
        data = self.handle.read(self.row_bytes)
        return np.frombuffer(data, np.uint8).reshape(self.shape[1:])

    def close(self) -> None:
        """Closes the file as it is (the cache is abandoned)."""
        self.handle.close()

    def finish(self, count: int) -> None:
        """Keeps only the first `count` images, syncs the file to disk and closes it.

        Raises:
            ValueError: if the header would change its length (numpy leaves room for the
                first axis to grow to 21 digits, so it does not).
        """
        try:
            if count != self.shape[0]:
                self._write_header(count)
                if self.handle.tell() != self.offset:
                    raise ValueError("the .npy header changed its length")
                self.handle.truncate(self.offset + count * self.row_bytes)
            os.fsync(self.handle.fileno())
        finally:
            self.handle.close()


class CacheWriter:
    """Writes one cache: in a temporary directory, then renamed into place by `commit`.

    Use `start_cache` to make one, as a context manager: leaving the block removes whatever
    was not committed (after an error or an interrupt), and a scratch cache as a whole.

    Args:
        path: the cache's final path.
        temp: the empty temporary directory beside it, where the files are written.
        keep: False for a scratch cache in the system's temporary folder (no cache location
            was writable), removed on leaving the block once its images are mapped.
        lock: the descriptor of the locked lock file in `temp` (`_lock_temp`), closed on leaving.
    """

    def __init__(self, path: Path, temp: Path, keep: bool, lock: int) -> None:
        self.path, self.temp, self.keep, self.lock = path, temp, keep, lock
        self.images: ImageRows | None = None

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self.images is not None:
            self.images.close()
        _remove(self.temp)
        os.close(self.lock)
        if not self.keep:  # the mapped images outlive the deleted files (POSIX)
            _remove(self.path.parent)

    def allocate(self, shape: tuple[int, ...]) -> ImageRows:
        """A new `images.npy` of `shape` to write the images into (replacing any earlier).

        Raises:
            UserError: when the file cannot be created or the disk has no room for it.
        """
        if self.images is not None:
            self.images.close()
            self.images = None
        try:
            self.images = ImageRows(self.temp / _IMAGES, shape)
        except OSError as error:
            raise UserError(
                f"cannot write the image cache in {self.temp.parent} ({error}); free some disk "
                "space or set cache_dir to another folder"
            ) from error
        return self.images

    def commit(
        self,
        count: int,
        targets: np.ndarray,
        counts: tuple[int, int, int],
        class_names: tuple[str, ...],
        skipped: list[str],
    ) -> Path:
        """Completes the cache: keeps the first `count` images, syncs and renames it into place.

        Returns the cache's path (an identical cache that another process committed first is
        kept instead of ours).

        Raises:
            UserError: when the disk is full or the folder not writable (nothing is committed).
        """
        try:
            return self._commit(count, targets, counts, class_names, skipped)
        except OSError as error:
            raise UserError(
                f"cannot write the image cache in {self.temp.parent} ({error.strerror or error}); "
                "free some disk space or set cache_dir to another folder"
            ) from error

    def _commit(
        self,
        count: int,
        targets: np.ndarray,
        counts: tuple[int, int, int],
        class_names: tuple[str, ...],
        skipped: list[str],
    ) -> Path:
        if self.images is None:
            raise ValueError("no images were allocated")
        self.images.finish(count)
        self.images = None
        _write_synced(self.temp / _TARGETS, lambda handle: np.save(handle, targets))
        meta = {
            "format": CACHE_FORMAT,
            "counts": dict(zip(SPLITS, counts, strict=True)),
            "class_names": list(class_names),
            "skipped": skipped,
        }
        # ASCII escapes keep file and class names that are not valid UTF-8 (surrogates)
        text = json.dumps(meta).encode("ascii")
        _write_synced(self.temp / _META, lambda handle: handle.write(text))
        (self.temp / _TEMP_LOCK).unlink()  # the lock stays held until the writer is left
        try:
            os.replace(self.temp, self.path)
        except OSError:
            if not (self.path / _META).is_file():
                raise
            return self.path  # another process wrote the same cache meanwhile
        _sync_folder(self.path.parent)
        if self.keep:
            _prune(self.path)
        return self.path


@contextlib.contextmanager
def start_cache(paths: list[Path]) -> Iterator[CacheWriter]:
    """A writer for the first cache path whose folder is writable, else a scratch cache.

    The scratch cache lives in the system's temporary folder and is deleted once read: the
    images are still memory-mapped rather than held in memory, but decoded again next time.
    """
    for path in paths:
        temp = path.parent / f"{_TEMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex}"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(path.parent)
            temp.mkdir()  # 0o777 minus the umask, like any folder the user creates
            lock = _lock_temp(temp)
        except OSError as error:
            logger.debug("cannot write a cache in %s: %s", path.parent, error)
            _remove(temp)
            continue
        with CacheWriter(path, temp, keep=True, lock=lock) as writer:
            yield writer
        return
    logger.warning(
        "could not write the image cache to %s; the images will be decoded again next time "
        "(set cache_dir to a writable folder)",
        " or ".join(str(p.parent) for p in paths),
    )
    scratch = Path(tempfile.mkdtemp(prefix="semisup-folder-"))
    temp = scratch / ".tmp"
    temp.mkdir()
    with CacheWriter(scratch / paths[0].name, temp, keep=False, lock=_lock_temp(temp)) as writer:
        yield writer


def _lock_temp(temp: Path) -> int:
    """Creates and locks the lock file of a build's temporary directory; returns its descriptor."""
    descriptor = os.open(temp / _TEMP_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    return descriptor


def remove_stale_temps(folder: Path) -> None:
    """Deletes the temporary directories of builds that ended without cleaning up (killed).

    A directory whose lock file can be locked has no live builder; one without a lock file is
    a build that died before locking it (or of an earlier version) once it is old enough.
    """
    for temp in folder.glob(f"{_TEMP_PREFIX}*"):
        try:
            descriptor = os.open(temp / _TEMP_LOCK, os.O_RDWR)
        except FileNotFoundError:
            with contextlib.suppress(OSError):
                if time.time() - temp.stat().st_mtime > _UNLOCKED_TEMP_AGE:
                    _remove(temp)
            continue
        except OSError:  # not a directory, or not ours to open
            continue
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # a build is writing it
            continue
        else:
            logger.info("deleting %s, left by an interrupted cache build", temp)
            _remove(temp)
        finally:
            os.close(descriptor)


def _reserve(descriptor: int) -> None:
    """Reserves the disk blocks of a sparse file where the system can (a full disk fails now)."""
    if not hasattr(os, "posix_fallocate"):
        return
    try:
        os.posix_fallocate(descriptor, 0, os.fstat(descriptor).st_size)
    except OSError as error:  # e.g. a file system without fallocate: blocks come as written
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise


def _write_synced(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Creates a file with what `write` writes to it, synced to disk."""
    with open(path, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())


def _sync_folder(path: Path) -> None:
    """Syncs a folder's entries (a rename) to disk, where folders can be opened (POSIX)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _remove(path: Path) -> None:
    """Deletes a file or a folder tree, ignoring what is already gone or locked."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def _prune(path: Path) -> None:
    """Deletes older caches of the same slot (the folder changed since they were written)."""
    slot = path.name.split("-", 1)[0]
    for old in path.parent.glob(f"{slot}-*"):
        if old != path:
            _remove(old)
