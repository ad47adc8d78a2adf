"""The decoded-array cache of an image folder: one uncompressed .npz file per folder state.

The file name is `<slot>-<key>.npz`. The key hashes the folder's content (relative paths, sizes,
mtimes or zip CRCs), the requested options and the format version, so any change to the folder
or the options misses the cache. The slot hashes only the options (and, outside the folder, the
folder's path): when a new cache file is written, older files of the same slot are deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import uuid
from pathlib import Path

import numpy as np

from semisup.data.folder_scan import FolderSource

logger = logging.getLogger("semisup.data")

CACHE_FORMAT = 1  # bump whenever the decoding rules or the file's content change
CACHE_SUBDIR = ".semisup-cache"


def default_cache_dir() -> Path:
    """`$SEMISUP_CACHE_DIR`, else `~/.cache/semisup/folders`."""
    env = os.environ.get("SEMISUP_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "semisup" / "folders"


def _digest(value: object) -> str:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def cache_candidates(
    source: FolderSource, layout_kind: str, options: dict[str, object], cache_dir: Path | None
) -> list[Path]:
    """Where the cache file may be, in order: inside a directory, then the fallback folder."""
    content = _digest([CACHE_FORMAT, layout_kind, options, source.fingerprint()])[:24]
    paths = []
    if not source.is_zip:
        slot = _digest([CACHE_FORMAT, options])[:12]
        paths.append(source.path / CACHE_SUBDIR / f"{slot}-{content}.npz")
    folder = cache_dir.expanduser() if cache_dir is not None else default_cache_dir()
    slot = _digest([CACHE_FORMAT, options, str(source.path.resolve())])[:12]
    paths.append(folder / f"{slot}-{content}.npz")
    return paths


def read_cache(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of a cache file, None when it is absent; a corrupt file is deleted."""
    if not path.is_file():
        return None
    try:
        handle = path.open("rb")
    except OSError as error:  # e.g. another user's cache we may not read: leave it alone
        logger.warning("cannot read cache file %s (%s); decoding the images again", path, error)
        return None
    try:
        with handle, np.load(handle, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
        _check(arrays)
        return arrays
    except Exception as error:  # whatever is wrong with the content, rebuilding fixes it
        logger.warning(
            "deleting unreadable cache file %s (%s); decoding the images again", path, error
        )
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
        return None


def _check(arrays: dict[str, np.ndarray]) -> None:
    if int(arrays["format"]) != CACHE_FORMAT:
        raise ValueError(f"cache format {int(arrays['format'])}, expected {CACHE_FORMAT}")
    for images, targets in (("train_images", "train_targets"), ("test_images", "test_targets")):
        if images in arrays and len(arrays[images]) != len(arrays[targets]):
            raise ValueError(f"{images} and {targets} differ in length")
    for name in ("train_images", "test_images", "unlabeled_images"):
        if name in arrays and (arrays[name].dtype != np.uint8 or arrays[name].ndim != 4):
            raise ValueError(f"{name} is not a uint8 4-d array")
    arrays["class_names"].astype(str)
    arrays["skipped"].astype(str)


def write_cache(paths: list[Path], arrays: dict[str, np.ndarray | None]) -> Path | None:
    """Writes the arrays atomically to the first writable path; returns it (None if none is)."""
    stored = {k: v for k, v in arrays.items() if v is not None}
    stored["format"] = np.array(CACHE_FORMAT)
    for path in paths:
        temp = path.parent / f".tmp-{os.getpid()}-{uuid.uuid4().hex}.npz"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # 0o666 minus the umask, like any file the user creates (readable by the group).
            descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            with os.fdopen(descriptor, "wb") as handle:
                np.savez(handle, **stored)
            os.replace(temp, path)
        except OSError as error:
            logger.debug("cannot write cache file %s: %s", path, error)
            continue
        finally:  # after an error or an interrupt; after os.replace there is nothing left
            with contextlib.suppress(OSError):
                temp.unlink(missing_ok=True)
        _prune(path)
        return path
    logger.warning(
        "could not write the image cache to %s; the images will be decoded again "
        "next time (set cache_dir to a writable folder)",
        " or ".join(str(p.parent) for p in paths),
    )
    return None


def _prune(path: Path) -> None:
    """Deletes older cache files of the same slot (the folder changed since they were written)."""
    slot = path.name.split("-", 1)[0]
    for old in path.parent.glob(f"{slot}-*.npz"):
        if old != path:
            old.unlink(missing_ok=True)
