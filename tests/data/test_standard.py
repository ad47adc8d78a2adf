"""The standard loaders: real MNIST/Fashion-MNIST, and tiny official-format CIFAR/SVHN/STL-10."""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from semisup.data import standard
from semisup.data.base import DATASETS, ImageDataset
from semisup.data.download import file_md5
from semisup.errors import UserError

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def mnist(shared_datasets: Path) -> ImageDataset:
    return standard.load_mnist(shared_datasets, download=False)


@pytest.fixture(scope="module")
def fashion(shared_datasets: Path) -> ImageDataset:
    return standard.load_fashion_mnist(shared_datasets, download=False)


def test_registered_names() -> None:
    for name in ("mnist", "fashion_mnist", "cifar10", "cifar100", "svhn", "stl10"):
        assert name in DATASETS


def test_mnist(mnist: ImageDataset) -> None:
    assert mnist.train_images.shape == (60000, 1, 28, 28)
    assert mnist.test_images is not None and mnist.test_targets is not None
    assert mnist.test_images.shape == (10000, 1, 28, 28)
    assert mnist.train_images.dtype == torch.uint8 and mnist.train_targets.dtype == torch.int64
    assert mnist.train_targets.bincount().tolist() == MNIST_TRAIN_COUNTS
    assert mnist.test_targets.bincount().tolist() == MNIST_TEST_COUNTS
    assert mnist.train_targets[:5].tolist() == [5, 0, 4, 1, 9]
    assert mnist.test_targets[:3].tolist() == [7, 2, 1]
    assert mnist.class_names == tuple("0123456789") and not mnist.hflip
    # The first image is an upright "5": its top bar (row 5) runs right, its tail ends low left.
    first = mnist.train_images[0, 0]
    top_bar = [3, 18, 18, 18, 126, 136, 175, 26, 166, 255, 247, 127]
    assert first[5].tolist() == [0] * 12 + top_bar + [0] * 4
    assert first[:5].sum() == 0 and first[24, 4] > 0 and first[24, 20:].sum() == 0
    assert abs(mnist.train_images.double().mean().item() / 255 - 0.1307) < 1e-4


def test_fashion_mnist(fashion: ImageDataset) -> None:
    assert fashion.train_images.shape == (60000, 1, 28, 28)
    assert fashion.test_images is not None and fashion.test_images.shape == (10000, 1, 28, 28)
    assert fashion.train_targets.bincount().tolist() == [6000] * 10
    assert fashion.train_targets[:3].tolist() == [9, 0, 0]  # ankle boot, T-shirt, T-shirt
    assert fashion.class_names[9] == "Ankle boot" and fashion.hflip


def test_fashion_mnist_underscore_dir(tmp_path: Path) -> None:
    arrays = _write_tiny_mnist(tmp_path / "fashion_mnist", np.random.default_rng(5))
    (tmp_path / "mnist").mkdir()  # another data set's folder beside it changes nothing
    data = standard.load_fashion_mnist(tmp_path, download=False)
    assert np.array_equal(data.train_targets.numpy(), arrays["train-labels-idx1-ubyte.gz"])


def test_missing_files_without_download(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=str(tmp_path)) as info:
        standard.load_mnist(tmp_path, download=False)
    assert "train-images-idx3-ubyte.gz" in str(info.value)
    assert not list(tmp_path.iterdir())


def test_no_data_dir() -> None:
    with pytest.raises(UserError, match="--data-dir"):
        standard.load_cifar10(None)


def _write_idx(path: Path, array: np.ndarray, *, magic: bytes | None = None) -> None:
    header = magic or bytes((0, 0, 8, array.ndim))
    dims = np.asarray(array.shape, ">u4").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + dims + array.astype(np.uint8).tobytes())


def _write_tiny_mnist(directory: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (6, 28, 28)),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, 6),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (4, 28, 28)),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, 4),
    }
    directory.mkdir(exist_ok=True)
    for name, array in arrays.items():
        _write_idx(directory / name, array)
    return arrays


def test_tiny_idx_files(tmp_path: Path) -> None:
    arrays = _write_tiny_mnist(tmp_path / "mnist", np.random.default_rng(0))
    data = standard.load_mnist(tmp_path, download=False)
    assert np.array_equal(data.train_images[:, 0].numpy(), arrays["train-images-idx3-ubyte.gz"])
    assert np.array_equal(data.test_targets.numpy(), arrays["t10k-labels-idx1-ubyte.gz"])


def test_truncated_gz_names_file(tmp_path: Path) -> None:
    _write_tiny_mnist(tmp_path, np.random.default_rng(0))
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(UserError, match="train-images-idx3-ubyte.gz") as info:
        standard.load_mnist(tmp_path, download=False)
    assert "Delete it" in str(info.value)


def test_wrong_magic_number(tmp_path: Path) -> None:
    arrays = _write_tiny_mnist(tmp_path, np.random.default_rng(0))
    name = "t10k-labels-idx1-ubyte.gz"
    _write_idx(tmp_path / name, arrays[name], magic=b"\x00\x00\x08\x03")
    with pytest.raises(UserError, match=f"{name}.*magic"):
        standard.load_mnist(tmp_path, download=False)


def test_verify_existing_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_tiny_mnist(tmp_path, np.random.default_rng(0))
    standard.load_mnist(tmp_path, download=False)  # trusted without hashing by default
    with pytest.raises(UserError, match="md5"):
        standard.load_mnist(tmp_path, download=False, verify=True)
    for name in standard.SOURCES["mnist"].md5s:
        monkeypatch.setitem(standard.SOURCES["mnist"].md5s, name, file_md5(tmp_path / name))
    standard.load_mnist(tmp_path, download=False, verify=True)


# --- CIFAR: tiny tarballs in the official layout ----------------------------------------------


def _py2_style_pickle(obj: object) -> bytes:
    """A protocol-2 pickle naming numpy.core, like the official Python 2 CIFAR pickles."""
    return pickle.dumps(obj, protocol=2).replace(b"numpy._core", b"numpy.core")


def _write_tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))


def _cifar_rows(images: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) HWC images as official CIFAR rows: R plane, G plane, B plane."""
    return np.concatenate([images[..., c].reshape(len(images), -1) for c in range(3)], axis=1)


def test_cifar10(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (14, 32, 32, 3), dtype=np.uint8)  # HWC, as a viewer shows
    labels = rng.integers(0, 10, 14)
    names = ["airplane", "automobile", "bird", "cat", "deer"] + [f"c{i}" for i in range(5, 10)]
    folder = "cifar-10-batches-py"
    members = {f"{folder}/readme.html": b"<html></html>"}
    for i in range(5):  # two images per training batch, 4 test images
        batch = {"batch_label": "b", "data": _cifar_rows(images[2 * i : 2 * i + 2])}
        batch["labels"] = labels[2 * i : 2 * i + 2].tolist()
        members[f"{folder}/data_batch_{i + 1}"] = _py2_style_pickle(batch)
    test = {"data": _cifar_rows(images[10:]), "labels": labels[10:].tolist()}
    members[f"{folder}/test_batch"] = _py2_style_pickle(test)
    members[f"{folder}/batches.meta"] = _py2_style_pickle({"label_names": names})
    (tmp_path / "cifar10").mkdir()
    _write_tar(tmp_path / "cifar10" / "cifar-10-python.tar.gz", dict(reversed(members.items())))

    data = standard.load_cifar10(tmp_path, download=False)
    assert data.train_images.shape == (10, 3, 32, 32) and data.test_images is not None
    assert np.array_equal(data.train_images.permute(0, 2, 3, 1).numpy(), images[:10])
    assert np.array_equal(data.test_images.permute(0, 2, 3, 1).numpy(), images[10:])
    assert data.train_targets.tolist() == labels[:10].tolist()
    assert data.class_names == tuple(names) and data.hflip


def test_cifar100_fine_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    fine = rng.integers(0, 100, 5)
    names = [f"fine{i}" for i in range(100)]
    folder = "cifar-100-python"

    def batch(part: slice) -> bytes:
        coarse = (fine[part] // 5).tolist()
        data = {"data": _cifar_rows(images[part]), "fine_labels": fine[part].tolist()}
        return _py2_style_pickle({**data, "coarse_labels": coarse})

    meta = {"fine_label_names": names, "coarse_label_names": [f"c{i}" for i in range(20)]}
    # Member names with a "./" prefix, as some tar tools write them, are accepted too.
    members = {f"./{folder}/train": batch(slice(0, 3)), f"./{folder}/test": batch(slice(3, 5))}
    _write_tar(
        tmp_path / "cifar-100-python.tar.gz", {**members, f"./{folder}/meta": pickle.dumps(meta)}
    )

    data = standard.load_cifar100(tmp_path, download=False)
    assert np.array_equal(data.train_images.permute(0, 2, 3, 1).numpy(), images[:3])
    assert data.train_targets.tolist() == fine[:3].tolist()
    assert data.test_targets is not None and data.test_targets.tolist() == fine[3:].tolist()
    assert data.num_classes == 100 and data.class_names[7] == "fine7"


def test_cifar_pickle_cannot_run_code(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("pwned",))

    folder = "cifar-100-python"
    members = {f"{folder}/{m}": pickle.dumps(Evil()) for m in ("train", "test", "meta")}
    _write_tar(tmp_path / "cifar-100-python.tar.gz", members)
    with pytest.raises(UserError, match="cifar-100-python.tar.gz.*builtins.print"):
        standard.load_cifar100(tmp_path, download=False)


def test_bad_tarball(tmp_path: Path) -> None:
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"not a tarball at all")
    with pytest.raises(UserError, match="cifar-10-python.tar.gz.*Delete it"):
        standard.load_cifar10(tmp_path, download=False)


# --- SVHN ----------------------------------------------------------------------------------------


def test_svhn_labels_and_layout(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)  # HWC
    digits = np.array([1, 2, 9, 10, 10, 5, 3], dtype=np.uint8)  # 10 means digit 0
    for name, part in (("train_32x32.mat", slice(0, 4)), ("test_32x32.mat", slice(4, 7))):
        x = images[part].transpose(1, 2, 3, 0)  # the files store (32, 32, 3, N)
        scipy.io.savemat(tmp_path / name, {"X": x, "y": digits[part].reshape(-1, 1)})

    data = standard.load_svhn(tmp_path, download=False)
    assert np.array_equal(data.train_images.permute(0, 2, 3, 1).numpy(), images[:4])
    assert data.train_targets.tolist() == [0, 1, 8, 9]
    assert data.test_targets is not None and data.test_targets.tolist() == [9, 4, 2]
    assert data.class_names == ("1", "2", "3", "4", "5", "6", "7", "8", "9", "0")
    assert [data.class_names[t] for t in data.train_targets] == ["1", "2", "9", "0"]
    assert not data.hflip

    extra = images[:2].transpose(1, 2, 3, 0)
    scipy.io.savemat(tmp_path / "extra_32x32.mat", {"X": extra, "y": [[7], [8]]})
    with_extra = standard.load_svhn(tmp_path, download=False, extra=True)
    assert with_extra.train_targets.tolist() == [0, 1, 8, 9, 6, 7]


def test_svhn_damaged_mat(tmp_path: Path) -> None:
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": np.zeros((32, 32, 3, 1)), "y": [[1]]})
    (tmp_path / "train_32x32.mat").write_bytes(b"garbage" * 20)
    with pytest.raises(UserError, match="train_32x32.mat"):
        standard.load_svhn(tmp_path, download=False)


# --- STL-10 --------------------------------------------------------------------------------------


def _stl_bin(images: np.ndarray) -> bytes:
    """(N, 96, 96, 3) HWC images as the official .bin: per channel, column-major."""
    return images.transpose(0, 3, 2, 1).tobytes()


def test_stl10_from_tarball(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    train = rng.integers(0, 256, (5, 96, 96, 3), dtype=np.uint8)
    test = rng.integers(0, 256, (3, 96, 96, 3), dtype=np.uint8)
    unlabeled = rng.integers(0, 256, (4, 96, 96, 3), dtype=np.uint8)
    train_labels = np.array([1, 10, 3, 4, 5], dtype=np.uint8)
    folds = [rng.permutation(5)[:2] for _ in range(10)]
    names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    members = {
        "train_X.bin": _stl_bin(train),
        "train_y.bin": train_labels.tobytes(),
        "test_X.bin": _stl_bin(test),
        "test_y.bin": np.array([2, 2, 7], np.uint8).tobytes(),
        "unlabeled_X.bin": _stl_bin(unlabeled),
        "class_names.txt": ("\n".join(names) + "\n").encode(),
        "fold_indices.txt": "".join(" ".join(map(str, f)) + " \n" for f in folds).encode(),
    }
    directory = tmp_path / "stl10"
    directory.mkdir()
    _write_tar(
        directory / "stl10_binary.tar.gz", {f"stl10_binary/{k}": v for k, v in members.items()}
    )

    data = standard.load_stl10(tmp_path, download=False)
    assert data.train_images.shape == (5, 3, 96, 96)
    assert np.array_equal(data.train_images.permute(0, 2, 3, 1).numpy(), train)
    assert data.test_images is not None
    assert np.array_equal(data.test_images.permute(0, 2, 3, 1).numpy(), test)
    assert data.unlabeled_images is not None
    assert np.array_equal(data.unlabeled_images.permute(0, 2, 3, 1).numpy(), unlabeled)
    assert data.train_targets.tolist() == [0, 9, 2, 3, 4]
    assert data.test_targets is not None and data.test_targets.tolist() == [1, 1, 6]
    assert data.class_names == tuple(names) and data.hflip
    assert data.label_folds is not None and len(data.label_folds) == 10
    assert [f.tolist() for f in data.label_folds] == [f.tolist() for f in folds]

    # Extracted once: the loader now works from stl10_binary/ without the tarball.
    assert sorted(p.name for p in (directory / "stl10_binary").iterdir()) == sorted(members)
    (directory / "stl10_binary.tar.gz").unlink()
    again = standard.load_stl10(directory, download=False)
    assert torch.equal(again.train_images, data.train_images)


def test_stl10_bad_image_file(tmp_path: Path) -> None:
    for name in standard.STL10_MEMBERS:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "train_X.bin").write_bytes(b"\x00" * 1000)
    with pytest.raises(UserError, match="train_X.bin"):
        standard.load_stl10(tmp_path, download=False)
