"""Loaders for the standard benchmarks, read from their official files (downloaded if missing).

Every loader takes the data directory and finds its files in `data_dir/<name>` or, when that
folder does not exist, in `data_dir` itself (see `resolve_dir`). Missing files are downloaded
there from the official servers (or `mirror`, default `$SEMISUP_MIRROR`) and checked against
the official md5s in `SOURCES`; files already on disk are trusted unless `verify=True` (see
`semisup.data.download`). A file that cannot be parsed raises a UserError that names it.
"""

from __future__ import annotations

import codecs
import gzip
import os
import pickle
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import scipy.io
import torch
from scipy.io.matlab import MatReadError
from torch import Tensor

from semisup.data.base import DATASETS, ImageDataset, resolve_dir
from semisup.data.download import ensure_files
from semisup.errors import UserError


@dataclass(frozen=True)
class Source:
    """Where a data set's official files come from.

    Attributes:
        base_urls: URL prefixes (ending in "/") tried in order when no mirror is set.
        md5s: the official md5 of each file, by file name. Tests patch entries of this dict.
    """

    base_urls: tuple[str, ...]
    md5s: dict[str, str]


SOURCES: dict[str, Source] = {
    "mnist": Source(
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
    "fashion_mnist": Source(
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    ),
    "cifar10": Source(
        ("https://www.cs.toronto.edu/~kriz/",),
        {"cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"},
    ),
    "cifar100": Source(
        ("https://www.cs.toronto.edu/~kriz/",),
        {"cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85"},
    ),
    "svhn": Source(
        ("http://ufldl.stanford.edu/housenumbers/",),
        {
            "train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
            "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3",
            "extra_32x32.mat": "a93ce644f1a588dc4d68dda5feec44a7",
        },
    ),
    "stl10": Source(
        ("http://ai.stanford.edu/~acoates/stl10/",),
        {"stl10_binary.tar.gz": "91f7769df0f17e558f3565bffb0c7dfb"},
    ),
}

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
STL10_MEMBERS = (
    "train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin",
    "unlabeled_X.bin", "class_names.txt", "fold_indices.txt",
)  # fmt: skip


def _files(
    name: str,
    directory: Path,
    filenames: tuple[str, ...],
    *,
    download: bool,
    mirror: str | None,
    verify: bool,
) -> list[Path]:
    """The paths of data set `name`'s `filenames` in `directory`, downloading missing ones."""
    source = SOURCES[name]
    md5s = {filename: source.md5s[filename] for filename in filenames}
    return ensure_files(
        directory,
        md5s,
        base_urls=source.base_urls,
        download=download,
        mirror=mirror,
        verify=verify,
    )


def _data_dir(data_dir: str | Path | None, *names: str) -> Path:
    """The folder of a data set called `names[0]` (or one of its aliases) under `data_dir`."""
    if data_dir is None:
        raise UserError(
            f"data set {names[0]} needs a data directory: pass --data-dir DIR (missing files "
            "are downloaded there)."
        )
    for name in names:
        directory = resolve_dir(data_dir, name)
        if directory != Path(data_dir).expanduser():  # found the data set's own folder
            return directory
    return resolve_dir(data_dir, names[0])


def _damaged(path: Path, reason: object) -> UserError:
    """The error for a file that cannot be parsed; `reason` may be the exception raised."""
    reason = str(reason) or type(reason).__name__
    return UserError(
        f"cannot read {path} ({reason}): the file is damaged or not the official one. Delete it "
        "so that it is downloaded again, or replace it with the official file."
    )


def _tensors(images: np.ndarray, labels: np.ndarray) -> tuple[Tensor, Tensor]:
    """uint8 images and int64 labels as contiguous torch tensors (copied only when needed)."""
    return (
        torch.from_numpy(np.require(images, np.uint8, ["C", "W"])),
        torch.from_numpy(np.require(labels, np.int64, ["C", "W"])),
    )


def _labels_fit(labels: np.ndarray, count: int, num_classes: int) -> bool:
    """Whether there are `count` labels, all in [0, num_classes)."""
    return len(labels) == count and (count == 0 or 0 <= labels.min() <= labels.max() < num_classes)


# --- MNIST and Fashion-MNIST -------------------------------------------------------------------


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """Reads a gzipped idx file of unsigned bytes with `ndim` dimensions."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as err:
        raise _damaged(path, f"not a complete gzip file: {err}") from err
    if raw[:4] != bytes((0, 0, 8, ndim)):
        raise _damaged(path, f"bad idx magic number {raw[:4].hex()}")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != np.prod(shape):
        raise _damaged(path, f"{data.size} bytes of data for shape {shape}")
    return data.reshape(shape)


def _load_idx_dataset(
    name: str,
    directory: Path,
    class_names: tuple[str, ...],
    hflip: bool,
    *,
    download: bool,
    mirror: str | None,
    verify: bool,
) -> ImageDataset:
    """MNIST-style data: four gzipped idx files of 28x28 grey images and their labels."""
    filenames = tuple(SOURCES[name].md5s)
    paths = _files(name, directory, filenames, download=download, mirror=mirror, verify=verify)
    arrays = {path.name: _read_idx(path, 3 if "images" in path.name else 1) for path in paths}
    splits = []
    for prefix in ("train", "t10k"):
        images = arrays[f"{prefix}-images-idx3-ubyte.gz"]
        labels = arrays[f"{prefix}-labels-idx1-ubyte.gz"]
        if not _labels_fit(labels, len(images), len(class_names)):
            raise _damaged(directory / f"{prefix}-labels-idx1-ubyte.gz", "labels do not fit")
        splits.append(_tensors(images[:, None], labels))
    (train_x, train_y), (test_x, test_y) = splits
    return ImageDataset(train_x, train_y, test_x, test_y, class_names, hflip=hflip)


@DATASETS.register("mnist")
def load_mnist(
    data_dir: str | Path | None,
    *,
    download: bool = True,
    mirror: str | None = None,
    verify: bool = False,
) -> ImageDataset:
    """MNIST: 60,000 training and 10,000 test 28x28 grey digits, (N, 1, 28, 28).

    Files: the four idx `.gz` files in `data_dir/mnist` (or `data_dir`). Class i is digit i.
    `hflip` is False: a mirrored digit is not a digit (the usual choice).

    Args:
        data_dir: the data directory.
        download: download missing files (else a missing file is a UserError).
        mirror: base URL or directory holding the files instead of the official servers;
            defaults to `$SEMISUP_MIRROR`.
        verify: also check the md5 of files already on disk.
    """
    directory = _data_dir(data_dir, "mnist")
    classes = tuple(str(digit) for digit in range(10))
    return _load_idx_dataset(
        "mnist", directory, classes, False, download=download, mirror=mirror, verify=verify
    )


@DATASETS.register("fashion_mnist")
def load_fashion_mnist(
    data_dir: str | Path | None,
    *,
    download: bool = True,
    mirror: str | None = None,
    verify: bool = False,
) -> ImageDataset:
    """Fashion-MNIST: 60,000 training and 10,000 test 28x28 grey clothes images, (N, 1, 28, 28).

    Files: the four idx `.gz` files in `data_dir/fashion-mnist` (also `data_dir/fashion_mnist`,
    or `data_dir`). `hflip` is True: a mirrored shoe or shirt keeps its class, and flipping is
    the usual augmentation for this data set (unlike MNIST).

    Args:
        data_dir: the data directory.
        download: download missing files (else a missing file is a UserError).
        mirror: base URL or directory holding the files instead of the official servers;
            defaults to `$SEMISUP_MIRROR`.
        verify: also check the md5 of files already on disk.
    """
    directory = _data_dir(data_dir, "fashion-mnist", "fashion_mnist")
    return _load_idx_dataset(
        "fashion_mnist",
        directory,
        FASHION_MNIST_CLASSES,
        True,
        download=download,
        mirror=mirror,
        verify=verify,
    )


# --- CIFAR-10 and CIFAR-100 --------------------------------------------------------------------


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only builtin containers and numpy arrays, so a tampered file cannot run code.

    The official CIFAR pickles come from Python 2 and name `numpy.core.multiarray`; any numpy
    module name maps to the installed numpy's functions. `_codecs.encode` is how Python 3
    writes bytes at pickle protocol 2.
    """

    _ALLOWED = {
        ("numpy", "_reconstruct"): np.empty(0).__reduce__()[0],  # installed numpy's rebuilder
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,
    }

    def find_class(self, module: str, name: str) -> Any:
        """Returns an allowed function or class a pickle refers to; refuses everything else."""
        found = self._ALLOWED.get((module.split(".")[0], name))
        if found is None:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} in the pickle")
        return found


def _tar_members(path: Path, wanted: set[str]) -> Iterator[tuple[str, IO[bytes]]]:
    """Streams the members of tarball `path` whose names (less any "./") are in `wanted`."""
    with tarfile.open(path, "r|*") as tar:
        for member in tar:
            name = member.name.removeprefix("./")
            if name in wanted and member.isfile():
                f = tar.extractfile(member)
                if f is not None:
                    yield name, f


def _read_cifar(
    path: Path, folder: str, members: dict[str, str], label_key: str, names_key: str
) -> dict[str, Any]:
    """Reads the pickles of a CIFAR tarball straight from it.

    Args:
        path: the tarball.
        folder: the folder inside it (`cifar-10-batches-py`).
        members: split ("train"/"test"/"meta") of each wanted pickle, by its name in `folder`.
        label_key: the key of the labels in a data pickle.
        names_key: the key of the class names in the meta pickle.

    Returns:
        {"train": (images, labels), "test": (images, labels), "names": tuple of class names},
        with images (N, 3, 32, 32) uint8 in `members`' order.
    """
    loaded: dict[str, dict[str, Any]] = {}
    try:
        for name, f in _tar_members(path, {f"{folder}/{m}" for m in members}):
            loaded[name.rsplit("/", 1)[1]] = _ArrayUnpickler(f, encoding="latin1").load()
        missing = [m for m in members if m not in loaded]
        if missing:
            raise ValueError(f"{', '.join(missing)} missing from {folder}/")
        result: dict[str, Any] = {}
        for split in ("train", "test"):
            batches = [loaded[m] for m, s in members.items() if s == split]
            images = np.concatenate([np.asarray(b["data"], np.uint8) for b in batches])
            labels = np.concatenate([np.asarray(b[label_key], np.int64) for b in batches])
            result[split] = (images.reshape(-1, 3, 32, 32), labels)
        meta = next(loaded[m] for m, s in members.items() if s == "meta")
        result["names"] = tuple(str(n) for n in meta[names_key])
    except (tarfile.TarError, OSError, EOFError, zlib.error, pickle.UnpicklingError) as err:
        raise _damaged(path, err) from err
    except (KeyError, ValueError, TypeError) as err:
        raise _damaged(path, f"unexpected content: {err}") from err
    return result


def _load_cifar(
    name: str,
    data_dir: str | Path | None,
    folder: str,
    members: dict[str, str],
    label_key: str,
    names_key: str,
    *,
    download: bool,
    mirror: str | None,
    verify: bool,
) -> ImageDataset:
    """A CIFAR data set from its official python tarball."""
    directory = _data_dir(data_dir, name)
    filenames = tuple(SOURCES[name].md5s)
    (path,) = _files(name, directory, filenames, download=download, mirror=mirror, verify=verify)
    data = _read_cifar(path, folder, members, label_key, names_key)
    for images, labels in (data["train"], data["test"]):
        if not _labels_fit(labels, len(images), len(data["names"])):
            raise _damaged(path, "labels do not fit the images or the class names")
    train_x, train_y = _tensors(*data["train"])
    test_x, test_y = _tensors(*data["test"])
    return ImageDataset(train_x, train_y, test_x, test_y, data["names"], hflip=True)


@DATASETS.register("cifar10")
def load_cifar10(
    data_dir: str | Path | None,
    *,
    download: bool = True,
    mirror: str | None = None,
    verify: bool = False,
) -> ImageDataset:
    """CIFAR-10: 50,000 training and 10,000 test 32x32 RGB images in 10 classes, (N, 3, 32, 32).

    Files: `cifar-10-python.tar.gz` in `data_dir/cifar10` (or `data_dir`), read without
    extracting it. Class names come from its `batches.meta`. `hflip` is True.

    Args:
        data_dir: the data directory.
        download: download a missing tarball (else a missing file is a UserError).
        mirror: base URL or directory holding the file instead of the official server;
            defaults to `$SEMISUP_MIRROR`.
        verify: also check the md5 of a tarball already on disk.
    """
    batches = {f"data_batch_{i}": "train" for i in range(1, 6)}
    members = {**batches, "test_batch": "test", "batches.meta": "meta"}
    return _load_cifar(
        "cifar10",
        data_dir,
        "cifar-10-batches-py",
        members,
        "labels",
        "label_names",
        download=download,
        mirror=mirror,
        verify=verify,
    )


@DATASETS.register("cifar100")
def load_cifar100(
    data_dir: str | Path | None,
    *,
    download: bool = True,
    mirror: str | None = None,
    verify: bool = False,
) -> ImageDataset:
    """CIFAR-100: 50,000 training and 10,000 test 32x32 RGB images, (N, 3, 32, 32).

    Files: `cifar-100-python.tar.gz` in `data_dir/cifar100` (or `data_dir`), read without
    extracting it. Targets are the 100 fine labels, named by the tarball's `meta`. `hflip` is
    True.

    Args:
        data_dir: the data directory.
        download: download a missing tarball (else a missing file is a UserError).
        mirror: base URL or directory holding the file instead of the official server;
            defaults to `$SEMISUP_MIRROR`.
        verify: also check the md5 of a tarball already on disk.
    """
    return _load_cifar(
        "cifar100",
        data_dir,
        "cifar-100-python",
        {"train": "train", "test": "test", "meta": "meta"},
        "fine_labels",
        "fine_label_names",
        download=download,
        mirror=mirror,
        verify=verify,
    )


# --- SVHN --------------------------------------------------------------------------------------


def _read_svhn(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) and classes (label - 1) of one SVHN `.mat` file."""
    try:
        mat = scipy.io.loadmat(path, variable_names=("X", "y"))
        images, labels = mat["X"], np.asarray(mat["y"]).reshape(-1)
    except (MatReadError, OSError, ValueError, LookupError, TypeError, EOFError, zlib.error) as err:
        raise _damaged(path, err) from err
    if images.ndim != 4 or images.shape[:3] != (32, 32, 3) or images.shape[3] != len(labels):
        raise _damaged(path, f"X has shape {images.shape} and y has {len(labels)} labels")
    if len(labels) and (labels.min() < 1 or labels.max() > 10):
        raise _damaged(path, "labels outside 1..10")
    return images.transpose(3, 2, 0, 1), labels.astype(np.int64) - 1


@DATASETS.register("svhn")
def load_svhn(
    data_dir: str | Path | None,
    *,
    download: bool = True,
    mirror: str | None = None,
    verify: bool = False,
    extra: bool = False,
) -> ImageDataset:
    """SVHN: 73,257 training and 26,032 test 32x32 RGB house-number digits, (N, 3, 32, 32).

    Files: `train_32x32.mat` and `test_32x32.mat` (and `extra_32x32.mat` with `extra`) in
    `data_dir/svhn` (or `data_dir`). The files label digit d as d for 1..9 and digit 0 as 10;
    like the original Google SSL code we use class = label - 1, so class i is digit i + 1 for
    i < 9 and class 9 is digit 0 (`class_names` is "1", ..., "9", "0"). `hflip` is False.

    Args:
        data_dir: the data directory.
        download: download missing files (else a missing file is a UserError).
        mirror: base URL or directory holding the files instead of the official server;
            defaults to `$SEMISUP_MIRROR`.
        verify: also check the md5 of files already on disk.
        extra: append the 531,131 images of `extra_32x32.mat` to the training images.
    """
    directory = _data_dir(data_dir, "svhn")
    filenames = ("train_32x32.mat", "test_32x32.mat") + (("extra_32x32.mat",) if extra else ())
    paths = _files("svhn", directory, filenames, download=download, mirror=mirror, verify=verify)
    train, test, *more = (_read_svhn(path) for path in paths)
    if more:
        train = (np.concatenate([train[0], more[0][0]]), np.concatenate([train[1], more[0][1]]))
    train_x, train_y = _tensors(*train)
    test_x, test_y = _tensors(*test)
    names = tuple(str(digit % 10) for digit in range(1, 11))
    return ImageDataset(train_x, train_y, test_x, test_y, names, hflip=False)


# --- STL-10 ------------------------------------------------------------------------------------


def _stl10_folder(directory: Path, *, download: bool, mirror: str | None, verify: bool) -> Path:
    """The folder holding STL-10's extracted files, extracting (and downloading) them if needed.

    Accepts `directory/stl10_binary/` or the files directly in `directory`; otherwise extracts
    the needed members of `directory/stl10_binary.tar.gz` into `directory/stl10_binary/` once.
    """
    folder = directory / "stl10_binary"
    for candidate in (folder, directory):
        if all((candidate / member).is_file() for member in STL10_MEMBERS):
            return candidate
    filenames = tuple(SOURCES["stl10"].md5s)
    (tar_path,) = _files(
        "stl10", directory, filenames, download=download, mirror=mirror, verify=verify
    )
    missing = {f"stl10_binary/{m}" for m in STL10_MEMBERS if not (folder / m).is_file()}
    try:
        folder.mkdir(exist_ok=True)
    except OSError as err:
        raise UserError(
            f"cannot create {folder} to extract {tar_path.name} into ({err.strerror or err}): "
            "extract the tarball there yourself, or choose a writable data directory (--data-dir)."
        ) from err
    try:
        for name, f in _tar_members(tar_path, missing):
            _extract(f, folder / Path(name).name)
            missing.discard(name)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise _damaged(tar_path, err) from err
    if missing:
        raise _damaged(tar_path, f"{', '.join(sorted(missing))} missing from the tarball")
    return folder


def _extract(source: IO[bytes], dest: Path) -> None:
    """Copies a tar member to `dest` through a temp file, so `dest` is never partial."""
    temp = dest.with_name(f".{dest.name}.{os.getpid()}.part")  # one per process (DDP ranks)
    try:
        out = open(temp, "wb")  # noqa: SIM115 - closed below; only the open may hit permissions
    except OSError as err:
        raise UserError(
            f"cannot extract {dest.name} into {dest.parent} ({err.strerror or err}): extract it "
            "there yourself, or choose a writable data directory (--data-dir)."
        ) from err
    try:
        with out:
            while chunk := source.read(1 << 24):
                out.write(chunk)
        temp.replace(dest)
    finally:
        temp.unlink(missing_ok=True)


def _read_stl10_images(path: Path) -> np.ndarray:
    """Images (N, 3, 96, 96) of an STL-10 `.bin` file (stored column-major per channel)."""
    image_bytes = 3 * 96 * 96
    size = path.stat().st_size
    if size % image_bytes:
        raise _damaged(path, f"{size} bytes is not a whole number of 3x96x96 images")
    images = np.empty((size // image_bytes, 3, 96, 96), np.uint8)
    with open(path, "rb") as f:
        for start in range(0, len(images), 10_000):  # chunks keep peak memory near the result
            chunk = np.fromfile(f, np.uint8, count=min(10_000, len(images) - start) * image_bytes)
            images[start : start + 10_000] = chunk.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2)
    return images


def _read_stl10_labels(path: Path, count: int) -> np.ndarray:
    """Classes 0..9 from an STL-10 label file holding `count` labels 1..10."""
    labels = np.fromfile(path, np.uint8).astype(np.int64)
    if len(labels) != count or (count and (labels.min() < 1 or labels.max() > 10)):
        raise _damaged(path, f"expected {count} labels in 1..10")
    return labels - 1


def _read_stl10_folds(path: Path, num_train: int) -> tuple[Tensor, ...]:
    """The predefined labeled folds: one line of space-separated 0-based indices per fold."""
    try:
        folds = [
            torch.tensor([int(i) for i in line.split()], dtype=torch.int64)
            for line in path.read_text().splitlines()
            if line.strip()
        ]
    except ValueError as err:
        raise _damaged(path, err) from err
    if any(len(fold) and (fold.min() < 0 or fold.max() >= num_train) for fold in folds):
        raise _damaged(path, f"fold indices outside 0..{num_train - 1}")
    return tuple(folds)


@DATASETS.register("stl10")
def load_stl10(
    data_dir: str | Path | None,
    *,
    download: bool = True,
    mirror: str | None = None,
    verify: bool = False,
) -> ImageDataset:
    """STL-10: 5,000 labeled training, 8,000 test and 100,000 unlabeled 96x96 RGB images.

    Files: `stl10_binary.tar.gz` in `data_dir/stl10` (or `data_dir`). Its needed members are
    extracted once into `stl10_binary/` beside it (after which the 2.6 GB tarball may be
    deleted; already extracted files are used as they are). Labels 1..10 become classes 0..9.
    `unlabeled_images` holds the 100,000 unlabeled images (about 2.8 GB in memory) and
    `label_folds` the 10 official folds of 1,000 training indices. `hflip` is True.

    Args:
        data_dir: the data directory.
        download: download a missing tarball (else a missing file is a UserError).
        mirror: base URL or directory holding the file instead of the official server;
            defaults to `$SEMISUP_MIRROR`.
        verify: also check the md5 of a tarball already on disk.
    """
    directory = _data_dir(data_dir, "stl10")
    folder = _stl10_folder(directory, download=download, mirror=mirror, verify=verify)
    train_x = _read_stl10_images(folder / "train_X.bin")
    test_x = _read_stl10_images(folder / "test_X.bin")
    train_y = _read_stl10_labels(folder / "train_y.bin", len(train_x))
    test_y = _read_stl10_labels(folder / "test_y.bin", len(test_x))
    names = tuple(
        line.strip()
        for line in (folder / "class_names.txt").read_text(errors="replace").splitlines()
    )
    names = tuple(name for name in names if name)
    if len(names) != 10:
        raise _damaged(folder / "class_names.txt", f"{len(names)} class names instead of 10")
    return ImageDataset(
        *_tensors(train_x, train_y),
        *_tensors(test_x, test_y),
        names,
        hflip=True,
        unlabeled_images=torch.from_numpy(_read_stl10_images(folder / "unlabeled_X.bin")),
        label_folds=_read_stl10_folds(folder / "fold_indices.txt", len(train_x)),
    )
