"""A user's image folder: any file-name bytes, too few classes, empty or broken parts, killed
cache builds."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from semisup.data.folder.cache import remove_stale_temps

from .helpers import FAST, assert_clean_failure, run_cli

NOT_UTF8 = os.fsdecode(b"caf\xe9")  # Latin-1 bytes, not UTF-8: a surrogate in the str


def _images(folder: Path, count: int, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")


def _folder(root: Path, classes=("cat", "dog"), test=True) -> Path:
    for k, name in enumerate(classes):
        _images(root / "train" / name, 6, k)
        if test:
            _images(root / "test" / name, 3, 10 + k)
    return root


def _train(capsys, data: Path, out: Path, *extra: str):
    argv = ["train", *FAST, "--dataset", "folder", "--data-dir", str(data), "--num-labels", "4"]
    return run_cli(capsys, *argv, "--out", str(out), "--no-report", *extra)


def test_file_and_class_names_of_any_bytes(tmp_path, capsys):
    data = _folder(tmp_path / "images", classes=("dog", NOT_UTF8))
    os.rename(data / "train" / "dog" / "0.png", data / "train" / "dog" / f"{NOT_UTF8}.png")
    (data / "train" / "dog" / f"broken-{NOT_UTF8}.png").write_bytes(b"not an image")
    code, _, err = _train(capsys, data, tmp_path / "run")
    assert code == 0, err
    assert "BytesIO" not in err and "broken-caf" in err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["class_names"] == ["caf\udce9", "dog"]
    assert summary["skipped_files"] == [str(data / "train" / "dog" / f"broken-{NOT_UTF8}.png")]
    code, out, err = run_cli(
        capsys, "predict", str(tmp_path / "run"), str(data / "test"), "--format", "csv"
    )
    assert code == 0 and "caf\ufffd" in out and "Traceback" not in err


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda root: _folder(root, classes=("only",)), "a classifier needs at least two"),
        (lambda root: (_folder(root, test=False) / "test").mkdir(), "test holds no images"),
        (
            lambda root: (_folder(root, test=False) / "test" / "cat").mkdir(parents=True),
            "holds no images; add images or remove the folder",
        ),
        (lambda root: _images(_folder(root) / "test" / "bird", 2, 5), "is not among the classes"),
        (lambda root: _images(root / "pictures", 3, 0), "no image folder layout found"),
        (lambda root: (root / "train" / "cat").mkdir(parents=True), "cat holds no images"),
        (lambda root: _images(root / "train", 2, 0), "holds no class folders"),
    ],
)
def test_unusable_folder(tmp_path, capsys, build, message):
    data = tmp_path / "images"
    data.mkdir()
    build(data)
    code, _, err = _train(capsys, data, tmp_path / "run")
    assert_clean_failure(code, err, message)
    assert not (tmp_path / "run").exists()


def test_a_folder_of_broken_files(tmp_path, capsys):
    data = tmp_path / "images"
    for name in ("cat", "dog"):
        (data / "train" / name).mkdir(parents=True)
        (data / "train" / name / "1.png").write_bytes(b"\x89PNG truncated")
    code, _, err = _train(capsys, data, tmp_path / "run")
    assert_clean_failure(code, err, "could be decoded")
    assert "BytesIO" not in err and "1.png" in err


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b"PK\x03\x04 not a zip"), "is neither a directory nor a .zip"),
        (lambda p: None, "does not exist"),
    ],
)
def test_data_dir_that_is_no_folder(tmp_path, capsys, make, message):
    make(tmp_path / "images.zip")
    code, _, err = _train(capsys, tmp_path / "images.zip", tmp_path / "run")
    assert_clean_failure(code, err, message)


def test_killed_cache_builds_are_cleaned_up(tmp_path, capsys):
    data = _folder(tmp_path / "images")
    cache = data / ".semisup-cache"
    dead, alive, old = cache / ".tmp-1-dead", cache / ".tmp-2-alive", cache / ".tmp-3-old"
    for temp in (dead, alive, old):
        temp.mkdir(parents=True)
        (temp / "images.npy").write_bytes(bytes(4096))
    (dead / ".building").touch()  # its builder was killed: nobody holds the lock
    (alive / ".building").touch()
    os.utime(old, (0, 0))  # an unlocked directory of an earlier version, long abandoned
    holder = os.open(alive / ".building", os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)  # a build in progress in another process
    try:
        assert _train(capsys, data, tmp_path / "run")[0] == 0
        left = sorted(p.name for p in cache.iterdir() if p.name.startswith(".tmp-"))
        assert left == [".tmp-2-alive"]
    finally:
        os.close(holder)
    remove_stale_temps(cache)
    assert not [p for p in cache.iterdir() if p.name.startswith(".tmp-")]
