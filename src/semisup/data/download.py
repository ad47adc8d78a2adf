"""Fetch data set files over HTTP(S): stream to a temp file, check the md5, rename atomically.

Integrity policy: every download is hashed while it streams and only renamed into place when
its md5 matches, so a file that appears under its final name was complete when it arrived.
Files already on disk are trusted without re-hashing (hashing STL-10's 2.6 GB on every run
would cost seconds); pass `verify=True` to `ensure_files` (or call `check_md5`) to hash them
anyway. A damaged file that slips through still fails loudly when its loader parses it.

Mirrors: `mirror` (the `data.mirror` option), else the environment variable `SEMISUP_MIRROR`,
replaces the official servers: a file `NAME` is then fetched from `<mirror>/NAME` only. A mirror
may be an http(s):// or file:// URL, or a plain local directory.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from semisup.errors import UserError

MIRROR_ENV = "SEMISUP_MIRROR"
CHUNK_BYTES = 1 << 20
USER_AGENT = "semisup-data-download"

log = logging.getLogger(__name__)


def default_mirror(mirror: str | None) -> str | None:
    """The mirror to use: `mirror` if given, else `$SEMISUP_MIRROR`, else None (official URLs)."""
    return mirror or os.environ.get(MIRROR_ENV) or None


def mirror_url(mirror: str, filename: str) -> str:
    """The URL of `filename` on `mirror` (a URL or a local directory)."""
    if "://" not in mirror:
        mirror = Path(mirror).expanduser().resolve().as_uri()
    return f"{mirror.rstrip('/')}/{filename}"


def file_md5(path: Path) -> str:
    """The hex md5 of the file at `path`, read in 1 MiB chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def check_md5(path: str | Path, md5: str) -> None:
    """Hashes the file at `path` and raises UserError unless its md5 is `md5`.

    Raises:
        UserError: the md5 differs (the message names the file and both md5s).
    """
    path = Path(path)
    actual = file_md5(path)
    if actual != md5:
        raise UserError(
            f"{path} has md5 {actual} but {md5} was expected: the file is damaged or not the "
            "official one. Delete it so that it is downloaded again, or replace it yourself."
        )


def ensure_files(
    directory: Path,
    md5s: Mapping[str, str],
    *,
    base_urls: Sequence[str],
    download: bool = True,
    mirror: str | None = None,
    verify: bool = False,
) -> list[Path]:
    """Returns `directory/name` for each name in `md5s`, downloading the missing files first.

    Args:
        directory: where the files live and where downloads go (created if needed).
        md5s: the official md5 of each file, by file name (the name on disk and at the end of
            each URL).
        base_urls: official URL prefixes (ending in "/"), tried in order; ignored when a mirror
            is set.
        download: when False, a missing file is an error instead of a download.
        mirror: a mirror replacing `base_urls` (see the module docstring); defaults to
            `$SEMISUP_MIRROR`.
        verify: also hash the files that are already on disk.

    Raises:
        UserError: a file is missing and may not or cannot be downloaded, or an md5 is wrong.
    """
    paths = [directory / name for name in md5s]
    missing = [path for path in paths if not path.is_file()]
    if missing and not download:
        raise UserError(
            f"{', '.join(path.name for path in missing)} not found in {directory} and downloads "
            "are off: put the files there yourself, or allow downloads (data.download=true; a "
            f"mirror can be set with data.mirror or ${MIRROR_ENV})."
        )
    mirror = default_mirror(mirror)
    for path in paths:
        if path in missing:
            urls = [mirror_url(mirror, path.name)] if mirror else [b + path.name for b in base_urls]
            fetch(urls, path, md5s[path.name])
        elif verify:
            check_md5(path, md5s[path.name])
    return paths


def fetch(urls: str | Sequence[str], dest: Path, md5: str | None, *, timeout: float = 60) -> Path:
    """Downloads the first of `urls` that works to `dest`, checking its md5.

    The bytes stream into a hidden temp file beside `dest`, which is renamed to `dest` only when
    the download is complete and its md5 matches, so `dest` never holds a partial file.

    Args:
        urls: one URL, or several tried in order until one succeeds.
        dest: the final path; its directory is created if needed.
        md5: the expected hex md5, or None to skip the check.
        timeout: seconds to wait for the server on each connection or read.

    Returns:
        `dest`.

    Raises:
        UserError: every URL failed (the message lists each URL and why), the md5 differs, or
            `dest`'s directory cannot be written.
    """
    urls = [urls] if isinstance(urls, str) else list(urls)
    failures = []
    for url in urls:
        try:
            _download(url, dest, md5, timeout)
            return dest
        except (OSError, http.client.HTTPException, _Md5Mismatch) as err:
            failures.append(f"{url} ({_reason(err)})")
    raise UserError(
        f"could not download {dest.name} from {', '.join(failures)}. Put the official "
        f"{dest.name} into {dest.parent} yourself, or point data.mirror or ${MIRROR_ENV} at a "
        "mirror that has it."
    )


class _Md5Mismatch(Exception):
    """A download arrived complete but with the wrong md5 (it has been deleted)."""

    def __init__(self, actual: str, expected: str) -> None:
        super().__init__(f"got md5 {actual} but {expected} was expected; the file was deleted")


def _download(url: str, dest: Path, md5: str | None, timeout: float) -> None:
    """Streams `url` into a temp file beside `dest`, checks it, and renames it to `dest`."""
    temp_path, temp = _open_temp(dest)
    try:
        log.info("downloading %s to %s", url, dest)
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        with temp, urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            size = int(length) if length else None
            received, actual = _copy_hashing(response, temp, size, dest.name)
        if size is not None and received != size:
            raise http.client.IncompleteRead(b"", size - received)
        if md5 is not None and actual != md5:
            raise _Md5Mismatch(actual, md5)
        os.replace(temp_path, dest)
    finally:
        temp_path.unlink(missing_ok=True)


def _open_temp(dest: Path) -> tuple[Path, BinaryIO]:
    """Creates `dest`'s directory and a hidden temp file in it; UserError when not writable."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    except OSError as err:
        raise UserError(
            f"cannot download {dest.name} into {dest.parent} ({_reason(err)}): put the file "
            "there yourself, or choose a writable data directory (--data-dir)."
        ) from err
    return Path(name), os.fdopen(fd, "wb")


def _copy_hashing(
    source: BinaryIO, target: BinaryIO, size: int | None, label: str
) -> tuple[int, str]:
    """Copies `source` to `target` with a progress bar (on a terminal); returns (bytes, md5)."""
    digest = hashlib.md5(usedforsecurity=False)
    received = 0
    with tqdm(total=size, unit="B", unit_scale=True, desc=label, disable=None) as bar:
        while chunk := source.read(CHUNK_BYTES):
            target.write(chunk)
            digest.update(chunk)
            received += len(chunk)
            bar.update(len(chunk))
    return received, digest.hexdigest()


def _reason(err: BaseException) -> str:
    """A short human-readable reason for a network or file system error."""
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return _reason(err.reason) if isinstance(err.reason, BaseException) else str(err.reason)
    if isinstance(err, http.client.IncompleteRead):
        return "the connection closed before the whole file arrived"
    if isinstance(err, TimeoutError):
        return "timed out"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(err) or type(err).__name__
