"""Failure-safe file writing: atomic replacement, unique temporary names, one writer per folder.

Every file semisup writes (checkpoints, config.yaml, metrics.jsonl, summary.json, reports,
exports, cache metadata) goes through `write_atomic` or `atomic_path`: the bytes go to a hidden
temporary file with a unique name beside the target, are flushed and synced, and the temporary
file is then renamed over the target, so a reader (or a process killed at any moment) sees the
old file or the new one, never a mix. A failed write (a full disk, which torch reports as a
RuntimeError rather than an OSError, a read-only file system, a folder in the way) removes the
temporary file, leaves the previous file as it was and becomes one `UserError` line.

`exclusive_lock` holds an advisory `fcntl.flock` lock on a folder for as long as one process
writes into it; the kernel releases it when the process ends, also on SIGKILL.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from semisup.errors import UserError

TEMP_MARK = ".tmp-"  # in the name of every temporary file: `.<stem>.tmp-<pid>-<hex><suffix>`
LOCK_NAME = ".lock"
WRITE_ERRORS = (OSError, RuntimeError)  # torch.save reports a full disk as a RuntimeError


def temp_path(path: Path) -> Path:
    """A hidden, unique temporary name beside `path` that keeps its suffix.

    Unique per process and call, so concurrent writers never share a temporary file.
    """
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return path.with_name(f".{path.stem}{TEMP_MARK}{token}{path.suffix}")


def reason(error: BaseException) -> str:
    """A one-line reason for a failed write: the OS error text or the first line of the message."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    lines = str(error).strip().splitlines()
    return (lines[0] if lines else type(error).__name__)[:200]


def write_failed(path: Path, error: BaseException, hint: str) -> UserError:
    """The UserError for a write of `path` that failed with `error`."""
    return UserError(
        f"cannot write {path}: {reason(error)}; the previous {path.name} (if any) is unchanged. "
        f"{hint}"
    )


DEFAULT_HINT = "Free some disk space or write somewhere else"


@contextlib.contextmanager
def atomic_path(path: str | Path, hint: str = DEFAULT_HINT) -> Iterator[Path]:
    """Yields a temporary path to write the content of `path` to; then replaces `path` with it.

    For writers that take a file name (ONNX, torch.export). The temporary file is synced and
    renamed over `path` when the block ends without an error; it is removed otherwise.

    Raises:
        UserError: when writing, syncing or renaming fails (the previous file is unchanged).
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a folder; give a file name inside it")
    tmp = temp_path(path)
    try:
        yield tmp
        _sync_file(tmp)
        os.replace(tmp, path)
    except WRITE_ERRORS as error:
        raise write_failed(path, error, hint) from error
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    sync_folder(path.parent)


def write_atomic(
    path: str | Path, write: Callable[[BinaryIO], object], hint: str = DEFAULT_HINT
) -> None:
    """Creates or replaces `path` with what `write` writes to an open binary file, atomically."""
    with atomic_path(path, hint) as tmp, open(tmp, "wb") as handle:
        write(handle)


def write_bytes(path: str | Path, content: bytes, hint: str = DEFAULT_HINT) -> None:
    """Creates or replaces `path` with `content`, atomically."""
    write_atomic(path, lambda handle: handle.write(content), hint)


def write_text(path: str | Path, text: str, hint: str = DEFAULT_HINT) -> None:
    """Creates or replaces `path` with UTF-8 `text`, atomically (lone surrogates escaped)."""
    write_bytes(path, text.encode("utf-8", "backslashreplace"), hint)


def write_json(path: str | Path, content: Any, hint: str = DEFAULT_HINT) -> None:
    """Writes an indented JSON file atomically."""
    write_text(path, json.dumps(content, indent=2) + "\n", hint)


def write_jsonl(path: str | Path, records: list[dict[str, Any]], hint: str = DEFAULT_HINT) -> None:
    """Writes one JSON object per line, atomically."""
    write_text(path, "".join(json.dumps(r) + "\n" for r in records), hint)


def write_yaml(path: str | Path, content: dict[str, Any], hint: str = DEFAULT_HINT) -> None:
    """Writes a YAML file atomically (tuples as lists)."""
    write_text(path, yaml.safe_dump(json.loads(json.dumps(content)), sort_keys=False), hint)


def _sync_file(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def sync_folder(path: Path) -> None:
    """Syncs a folder's entries (a rename) to disk where the system allows it."""
    with contextlib.suppress(OSError):
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def remove_temp_files(folder: Path) -> list[Path]:
    """Deletes the temporary files that writers killed mid-write left in `folder`.

    Only safe while holding the folder's `exclusive_lock` (no other writer is active).
    """
    removed = []
    for path in folder.glob(f".*{TEMP_MARK}*"):
        if path.is_file():
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    return removed


def make_folder(path: Path, alternative: str) -> None:
    """Creates `path` (and its parents), or raises a UserError saying why it cannot be.

    Args:
        path: the folder.
        alternative: what the user can do instead, e.g. "choose another --out".
    """
    if path.exists() and not path.is_dir():
        raise UserError(f"{path} is a file, not a folder; {alternative}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        message = f"cannot create the folder {path}: {reason(error)}; {alternative}"
        raise UserError(message) from error


@contextlib.contextmanager
def exclusive_lock(folder: Path, alternative: str) -> Iterator[None]:
    """Holds an exclusive lock on `folder` (its `.lock` file) for the block.

    The lock is the kernel's (`flock`): it ends with the block, or with the process however it
    ends, so a killed run never leaves its folder locked.

    Args:
        folder: an existing folder.
        alternative: what the user can do instead, e.g. "choose another --out".

    Raises:
        UserError: when another process holds the lock, or the folder is not writable.
    """
    path = folder / LOCK_NAME
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise UserError(f"cannot write into {folder}: {reason(error)}; {alternative}") from error
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise UserError(f"cannot lock {path}: {reason(error)}; {alternative}") from error
            raise UserError(
                f"{folder} is being written by another semisup process; wait for it to end, "
                f"or {alternative}"
            ) from error
        yield
    finally:
        os.close(descriptor)
