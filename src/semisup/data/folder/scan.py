"""Listing a user's image folder (a directory or a .zip) and finding its layout.

Two layouts are understood, both either at the top of the folder or under one top-level folder:

- practitioner: `labeled/<class>/*`, optional `unlabeled/**` and optional `test/<class>/*`;
- research: `train/<class>/*`, optional `test/<class>/*` (and optional `unlabeled/**`).

Hidden files and folders (names starting with '.') and `__MACOSX/` are ignored everywhere;
files whose extension is not an image extension are ignored and counted.
"""

from __future__ import annotations

import logging
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from semisup.errors import UserError

logger = logging.getLogger("semisup.data")

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
LAYOUT_HELP = (
    "Expected one of two layouts (at the top or under one top-level folder):\n"
    "  practitioner: labeled/<class>/<image>, optional unlabeled/**/<image>, "
    "optional test/<class>/<image>\n"
    "  research:     train/<class>/<image> and test/<class>/<image>"
)
_IGNORED_DIRS = frozenset({"__MACOSX"})


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One file of the folder.

    Slotted, and a directory entry's `rel` and `member` are one string object: a folder of a
    million images keeps a million of these.

    Attributes:
        rel: path relative to the layout root, with '/' separators (e.g. `train/cat/1.png`).
        member: where the reader finds it: the path relative to the directory, or the zip
            member name.
        size: size in bytes.
        stamp: modification time in ns (directory) or CRC-32 (zip member), for the cache key.
    """

    rel: str
    member: str
    size: int
    stamp: int


@dataclass(frozen=True)
class FolderSource:
    """A directory or a zip file, with every visible file under its layout root.

    Attributes:
        path: the directory or the .zip file.
        is_zip: whether `path` is a zip file.
        prefix: the one top-level folder the layout sits under ('' or e.g. 'photos/').
        files: every non-hidden file under the root, sorted by `rel`.
        dirs: every non-hidden folder under the root (relative, no trailing '/').
    """

    path: Path
    is_zip: bool
    prefix: str
    files: tuple[FileEntry, ...]
    dirs: frozenset[str]

    def display(self, rel: str) -> str:
        """A path to show the user for `rel` (a file or folder relative to the layout root)."""
        return str(self.path / (self.prefix + rel))

    def fingerprint(self) -> list[object]:
        """What identifies the folder's content for the cache key."""
        head: list[object] = ["zip" if self.is_zip else "dir", self.prefix]
        if self.is_zip:
            stat = self.path.stat()
            head += [stat.st_size, stat.st_mtime_ns]
        return head + [[f.rel, f.size, f.stamp] for f in self.files]


@dataclass
class FolderLayout:
    """Which files are labeled, unlabeled and test images.

    Attributes:
        kind: 'labeled' (practitioner layout) or 'train' (research layout).
        class_names: sorted class folder names of the labeled/train split.
        train: (rel path, class id) of every labeled/train image.
        test: (rel path, class id) of every test image.
        unlabeled: rel path of every unlabeled image.
        has_test: whether a `test/` folder exists.
        has_unlabeled: whether an `unlabeled/` folder exists.
    """

    kind: str
    class_names: tuple[str, ...]
    train: list[tuple[str, int]] = field(default_factory=list)
    test: list[tuple[str, int]] = field(default_factory=list)
    unlabeled: list[str] = field(default_factory=list)
    has_test: bool = False
    has_unlabeled: bool = False


def _hidden(parts: list[str]) -> bool:
    return any(p.startswith(".") or p in _IGNORED_DIRS for p in parts)


def _list_directory(root: Path) -> tuple[list[FileEntry], set[str]]:
    files: list[FileEntry] = []
    dirs: set[str] = set()
    seen: set[tuple[int, int]] = set()
    for current, subdirs, names in os.walk(root, followlinks=True):
        stat = os.stat(current)
        if (stat.st_dev, stat.st_ino) in seen:  # a symlink loop
            subdirs[:] = []
            continue
        seen.add((stat.st_dev, stat.st_ino))
        subdirs[:] = sorted(d for d in subdirs if not _hidden([d]))
        rel_dir = Path(current).relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        dirs.update(rel_dir + d for d in subdirs)
        for name in names:
            if _hidden([name]):
                continue
            try:
                st = os.stat(os.path.join(current, name))
            except OSError:  # a dangling symlink
                continue
            rel = rel_dir + name
            files.append(FileEntry(rel, rel, st.st_size, st.st_mtime_ns))
    return files, dirs


def _list_zip(path: Path) -> tuple[list[FileEntry], set[str]]:
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError) as error:
        raise UserError(
            f"cannot read {path} as a zip file ({error}); pass a valid .zip or a directory"
        ) from error
    files: list[FileEntry] = []
    dirs: set[str] = set()
    for info in infos:
        name = info.filename.replace("\\", "/").strip("/")
        parts = name.split("/")
        if not name or _hidden(parts):
            continue
        for depth in range(1, len(parts)):
            dirs.add("/".join(parts[:depth]))
        if info.is_dir():
            dirs.add(name)
        else:
            files.append(FileEntry(name, info.filename, info.file_size, info.CRC))
    return files, dirs


def _strip_prefix(files: list[FileEntry], dirs: set[str]) -> tuple[str, list[FileEntry], set[str]]:
    """Descends into a single top-level folder when the layout is not at the top."""
    top = {d for d in dirs if "/" not in d}
    top_files = [f for f in files if "/" not in f.rel]
    if top & {"labeled", "train"} or len(top) != 1 or top_files:
        return "", files, dirs
    prefix = next(iter(top)) + "/"
    if not {prefix + "labeled", prefix + "train"} & dirs:
        return "", files, dirs
    files = [FileEntry(f.rel[len(prefix) :], f.member, f.size, f.stamp) for f in files]
    dirs = {d[len(prefix) :] for d in dirs if d.startswith(prefix)}
    return prefix, files, dirs


def open_source(data_dir: str | Path) -> FolderSource:
    """Lists the files of a directory or zip file.

    Raises:
        UserError: when `data_dir` does not exist or is neither a directory nor a zip file.
    """
    path = Path(data_dir).expanduser()
    if path.is_dir():
        files, dirs = _list_directory(path)
        is_zip = False
    elif path.is_file() and zipfile.is_zipfile(path):
        files, dirs = _list_zip(path)
        is_zip = True
    elif path.exists():
        raise UserError(
            f"{path} is neither a directory nor a .zip file; pass the folder of images "
            "or a zip of it"
        )
    else:
        raise UserError(f"data folder {path} does not exist; check the data directory you passed")
    prefix, files, dirs = _strip_prefix(files, dirs)
    if prefix:
        logger.info("using the images under %s", path / prefix)
    files.sort(key=lambda f: f.rel)
    return FolderSource(path, is_zip, prefix, tuple(files), frozenset(dirs))


def is_image(rel: str) -> bool:
    """Whether the file name has an image extension (case-insensitive)."""
    return os.path.splitext(rel)[1].lower() in IMAGE_EXTENSIONS


def _class_dirs(source: FolderSource, split: str) -> list[str]:
    inside = (d for d in source.dirs if d.startswith(split + "/") and d.count("/") == 1)
    return sorted(d.split("/")[1] for d in inside)


def _split_images(
    source: FolderSource, split: str, class_ids: dict[str, int], kind: str
) -> list[tuple[str, int]]:
    """Every image of `split/<class>/**`, checking there is no stray image or empty class."""
    images: list[tuple[str, int]] = []
    per_class = dict.fromkeys(_class_dirs(source, split), 0)
    for entry in source.files:
        parts = entry.rel.split("/")
        if parts[0] != split or not is_image(entry.rel):
            continue
        if len(parts) == 2:
            raise UserError(
                f"image {source.display(entry.rel)} lies directly in {split}/: put every image "
                f"of {split}/ into a folder named after its class ({split}/<class>/<image>)"
            )
        if parts[1] not in class_ids:
            raise UserError(
                f"class folder {source.display(split + '/' + parts[1])} is not among the "
                f"classes of {kind}/ "
                f"({', '.join(class_ids)}); rename or remove it"
            )
        per_class[parts[1]] += 1
        images.append((entry.rel, class_ids[parts[1]]))
    for name, count in per_class.items():
        if count == 0:
            raise UserError(
                f"class folder {source.display(split + '/' + name)} holds no images; "
                "add images or remove the folder"
            )
    return images


def find_layout(source: FolderSource) -> FolderLayout:
    """Finds the layout and assigns class ids (sorted class folder names).

    Raises:
        UserError: when no layout is found, both are present, an image lies outside a class
            folder, a class folder is empty, or a test class is not a training class.
    """
    top = {d for d in source.dirs if "/" not in d}
    if {"labeled", "train"} <= top:
        raise UserError(
            f"{source.display('')} holds both labeled/ and train/; keep only one of them.\n"
            + LAYOUT_HELP
        )
    if not top & {"labeled", "train"}:
        found = sorted(top) + sorted(f.rel for f in source.files if "/" not in f.rel)
        shown = ", ".join(found[:10]) + (", ..." if len(found) > 10 else "") or "nothing"
        raise UserError(
            f"no image folder layout found in {source.display('')}.\n{LAYOUT_HELP}\n"
            f"Found at its top: {shown}"
        )
    kind = "labeled" if "labeled" in top else "train"
    names = _class_dirs(source, kind)
    if not names:
        raise UserError(
            f"{source.display(kind)} holds no class folders; put the images of each class "
            f"into {kind}/<class>/"
        )
    class_ids = {name: i for i, name in enumerate(names)}
    layout = FolderLayout(kind, tuple(names), has_test="test" in top)
    layout.train = _split_images(source, kind, class_ids, kind)
    if layout.has_test:
        layout.test = _split_images(source, "test", class_ids, kind)
        if not layout.test:
            raise UserError(
                f"{source.display('test')} holds no images; put test images into "
                "test/<class>/, or remove the empty test/ folder to train without a test set"
            )
    layout.has_unlabeled = "unlabeled" in top
    layout.unlabeled = [
        f.rel for f in source.files if f.rel.startswith("unlabeled/") and is_image(f.rel)
    ]
    known = {kind, "test", "unlabeled"}
    others = sorted(top - known)
    if others:
        logger.warning(
            "ignoring folders %s in %s (only %s are read)",
            ", ".join(o + "/" for o in others),
            source.display(""),
            ", ".join(sorted(k + "/" for k in known)),
        )
    ignored = [f.rel for f in source.files if not is_image(f.rel)]
    if ignored:
        logger.info(
            "ignored %d files without an image extension (e.g. %s)",
            len(ignored),
            ", ".join(ignored[:3]),
        )
    return layout
