from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from semisup.config import build_config
from semisup.data.base import DATASETS
from semisup.data.folder import dataset as folder_module
from semisup.data.folder import decode as folder_decode
from semisup.data.folder.dataset import load_folder
from semisup.data.ssl import build_ssl_data, join_images
from semisup.engine.batches import place_pool
from semisup.errors import UserError
from semisup.experiment import build_trainer

CIFAR_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


def rgb(seed: int, size: tuple[int, int] = (8, 8)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def save(path: Path, image: np.ndarray | Image.Image, **kwargs: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = image if isinstance(image, Image.Image) else Image.fromarray(image)
    img.save(path, **kwargs)


def chw(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array).permute(2, 0, 1)


def make_research(root: Path) -> dict[str, list[np.ndarray]]:
    """train/{cat,dog}/ (3 and 2 PNGs) and test/{cat,dog}/ (1 each); arrays in load order."""
    written: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    seed = 0
    for split, counts in (("train", {"cat": 3, "dog": 2}), ("test", {"cat": 1, "dog": 1})):
        for name, count in counts.items():
            for i in range(count):
                seed += 1
                save(root / split / name / f"{i:03d}.png", rgb(seed))
                written[split].append(rgb(seed))
    return written


def caches(folder: Path) -> list[Path]:
    """The cache directories in `folder` (temporary ones start with '.')."""
    return sorted(folder.glob("[!.]*"))


def cache_files(root: Path) -> list[Path]:
    return caches(root / ".semisup-cache")


def same(a: object, b: object) -> None:
    for field in ("train_images", "train_targets", "test_images", "test_targets"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert a.class_names == b.class_names
    assert (a.unlabeled_images is None) == (b.unlabeled_images is None)
    if a.unlabeled_images is not None:
        assert torch.equal(a.unlabeled_images, b.unlabeled_images)


def test_registered() -> None:
    assert DATASETS.get("folder") is load_folder


def test_research_layout_round_trips_png_pixels(tmp_path: Path) -> None:
    written = make_research(tmp_path)
    data = load_folder(tmp_path)
    assert data.class_names == ("cat", "dog")
    assert data.train_images.shape == (5, 3, 8, 8) and data.train_images.dtype == torch.uint8
    assert data.train_targets.tolist() == [0, 0, 0, 1, 1]
    assert data.train_targets.dtype == torch.int64
    assert data.test_targets.tolist() == [0, 1]
    assert torch.equal(data.train_images, torch.stack([chw(a) for a in written["train"]]))
    assert torch.equal(data.test_images, torch.stack([chw(a) for a in written["test"]]))
    assert not data.all_labeled and data.hflip
    assert data.unlabeled_images is None and data.skipped_files == ()


def test_practitioner_layout(tmp_path: Path) -> None:
    save(tmp_path / "labeled" / "b" / "1.png", rgb(1))
    save(tmp_path / "labeled" / "a" / "1.png", rgb(2))
    save(tmp_path / "labeled" / "a" / "2.png", rgb(3))
    save(tmp_path / "unlabeled" / "x.png", rgb(4))
    save(tmp_path / "unlabeled" / "deep" / "er" / "y.png", rgb(5))
    data = load_folder(tmp_path)
    assert data.all_labeled
    assert data.class_names == ("a", "b")
    assert data.train_targets.tolist() == [0, 0, 1]
    assert torch.equal(data.train_images[2], chw(rgb(1)))
    assert data.unlabeled_images.shape == (2, 3, 8, 8)
    assert torch.equal(data.unlabeled_images[0], chw(rgb(5)))  # deep/er/y.png sorts first
    assert data.test_images is None and data.test_targets is None


def test_practitioner_layout_with_test(tmp_path: Path) -> None:
    save(tmp_path / "labeled" / "a" / "1.png", rgb(1))
    save(tmp_path / "labeled" / "b" / "1.png", rgb(2))
    save(tmp_path / "test" / "b" / "1.png", rgb(3))
    data = load_folder(tmp_path)
    assert data.test_targets.tolist() == [1]
    assert data.unlabeled_images is None


def test_cache_is_written_then_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    make_research(tmp_path)
    first = load_folder(tmp_path)
    assert len(cache_files(tmp_path)) == 1

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("the images were decoded again")

    monkeypatch.setattr(folder_module, "iter_jobs", fail)
    with caplog.at_level(logging.INFO, logger="semisup.data"):
        second = load_folder(tmp_path)
    same(first, second)
    assert "loaded 7 images from cache" in caplog.text


def test_changed_file_invalidates_cache(tmp_path: Path) -> None:
    make_research(tmp_path)
    load_folder(tmp_path)
    changed = tmp_path / "train" / "cat" / "000.png"
    save(changed, rgb(99))
    os.utime(changed, ns=(1, 1))  # a different mtime even on coarse-clock file systems
    data = load_folder(tmp_path)
    assert torch.equal(data.train_images[0], chw(rgb(99)))
    assert len(cache_files(tmp_path)) == 1  # the stale cache file was deleted


def test_options_have_their_own_cache(tmp_path: Path) -> None:
    make_research(tmp_path)
    assert load_folder(tmp_path).image_shape == (3, 8, 8)
    assert load_folder(tmp_path, image_size=4).image_shape == (3, 4, 4)
    assert load_folder(tmp_path, grayscale=True).image_shape == (1, 8, 8)
    assert len(cache_files(tmp_path)) == 3


def test_corrupt_cache_is_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_research(tmp_path)
    first = load_folder(tmp_path)
    (cache,) = cache_files(tmp_path)
    (cache / "images.npy").unlink()  # a new file: `first` still maps the old one
    (cache / "images.npy").write_bytes(b"not an npy file")
    with caplog.at_level(logging.WARNING, logger="semisup.data"):
        second = load_folder(tmp_path)
    same(first, second)
    assert "deleting unreadable cache" in caplog.text
    assert load_folder(tmp_path).train_images.shape == (5, 3, 8, 8)


@pytest.mark.parametrize(("image_size", "grayscale"), [(None, None), (8, False)])
def test_corrupt_files_are_skipped(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    image_size: int | None,
    grayscale: bool | None,
) -> None:
    written = make_research(tmp_path)
    truncated = tmp_path / "train" / "cat" / "truncated.jpg"
    save(truncated, rgb(7, (64, 64)), quality=95)
    truncated.write_bytes(truncated.read_bytes()[:400])
    garbage = tmp_path / "train" / "dog" / "garbage.jpg"
    garbage.write_bytes(np.random.default_rng(0).bytes(500))
    with caplog.at_level(logging.WARNING, logger="semisup.data"):
        data = load_folder(tmp_path, image_size=image_size, grayscale=grayscale)
    assert data.train_images.shape == (5, 3, 8, 8)
    assert data.train_targets.tolist() == [0, 0, 0, 1, 1]
    assert torch.equal(data.train_images, torch.stack([chw(a) for a in written["train"]]))
    assert torch.equal(data.test_images, torch.stack([chw(a) for a in written["test"]]))
    assert sorted(data.skipped_files) == sorted([str(truncated), str(garbage)])
    assert "skipped 2 image file(s)" in caplog.text
    assert load_folder(tmp_path, image_size=image_size, grayscale=grayscale).skipped_files == (
        data.skipped_files
    )


def test_class_of_only_corrupt_files_raises(tmp_path: Path) -> None:
    make_research(tmp_path)
    (tmp_path / "train" / "bird").mkdir()
    (tmp_path / "train" / "bird" / "broken.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(UserError, match=r"train/bird holds no decodable images"):
        load_folder(tmp_path)


def test_non_image_and_hidden_files_are_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_research(tmp_path)
    (tmp_path / "train" / "cat" / "notes.txt").write_text("hello")
    (tmp_path / "train" / "cat" / ".DS_Store").write_bytes(b"\0\1")
    save(tmp_path / "train" / "cat" / ".hidden.png", rgb(50))
    save(tmp_path / "train" / ".thumbs" / "x.png", rgb(51))
    save(tmp_path / "train" / "dog" / "UPPER.PNG", rgb(52))
    with caplog.at_level(logging.INFO, logger="semisup.data"):
        data = load_folder(tmp_path)
    assert data.class_names == ("cat", "dog")
    assert data.train_targets.tolist() == [0, 0, 0, 1, 1, 1]
    assert "ignored 1 files without an image extension (e.g. train/cat/notes.txt)" in caplog.text


def test_empty_class_folder_raises(tmp_path: Path) -> None:
    make_research(tmp_path)
    (tmp_path / "train" / "bird").mkdir()
    (tmp_path / "train" / "bird" / "readme.txt").write_text("no images")
    with pytest.raises(UserError, match=r"train/bird holds no images"):
        load_folder(tmp_path)


def test_test_class_not_in_train_raises(tmp_path: Path) -> None:
    make_research(tmp_path)
    save(tmp_path / "test" / "fish" / "1.png", rgb(1))
    with pytest.raises(UserError, match=r"test/fish is not among the classes of train/"):
        load_folder(tmp_path)


def test_image_outside_class_folder_raises(tmp_path: Path) -> None:
    make_research(tmp_path)
    save(tmp_path / "train" / "stray.png", rgb(1))
    with pytest.raises(UserError, match=r"stray.png lies directly in train/"):
        load_folder(tmp_path)


def test_no_layout_raises(tmp_path: Path) -> None:
    save(tmp_path / "images" / "cat" / "1.png", rgb(1))
    with pytest.raises(UserError, match=r"(?s)no image folder layout.*labeled/.*train/.*images"):
        load_folder(tmp_path)


def test_both_layouts_raise(tmp_path: Path) -> None:
    make_research(tmp_path)
    save(tmp_path / "labeled" / "cat" / "1.png", rgb(1))
    with pytest.raises(UserError, match="both labeled/ and train/"):
        load_folder(tmp_path)


def test_missing_folder_and_bad_options_raise(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_folder(tmp_path / "nowhere")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(UserError, match="neither a directory nor a .zip"):
        load_folder(tmp_path / "file.txt")
    with pytest.raises(UserError, match="image_size"):
        load_folder(tmp_path, image_size=0)


def test_mixed_modes_and_sizes(tmp_path: Path) -> None:
    base = tmp_path / "train" / "a"
    transparent = np.zeros((8, 8, 4), np.uint8)
    transparent[:4, :, :3] = 200
    transparent[:4, :, 3] = 255  # top half opaque grey 200, bottom half fully transparent
    save(base / "rgba.png", transparent)
    save(base / "grey.png", np.full((8, 8), 77, np.uint8))
    deep = np.full((8, 8), 257 * 100, np.uint16)
    deep[0, 0] = 65535
    save(base / "sixteen.png", Image.fromarray(deep))
    save(base / "palette.gif", Image.fromarray(rgb(1, (10, 12))).convert("P"))
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([10, 20, 30, 40, 50, 60])
    palette.putpixel((0, 0), 1)
    save(base / "palette_transparent.png", palette, transparency=0)
    save(base / "bilevel.bmp", Image.new("1", (8, 8), 1))
    save(base / "cmyk.tiff", Image.new("CMYK", (8, 8), (0, 0, 0, 0)))
    save(base / "photo.jpg", rgb(2, (16, 8)))
    save(base / "photo.webp", rgb(3, (8, 8)), lossless=True)
    save(tmp_path / "test" / "a" / "1.png", rgb(4, (20, 30)))
    data = load_folder(tmp_path)
    assert data.skipped_files == ()
    assert data.train_images.shape == (9, 3, 8, 8)  # 8 is the most common shorter side
    assert data.test_images.shape == (1, 3, 8, 8)
    by_name = dict(zip(sorted(p.name for p in base.iterdir()), data.train_images, strict=True))
    assert (by_name["rgba.png"][:, :4] == 200).all() and (by_name["rgba.png"][:, 4:] == 255).all()
    assert (by_name["grey.png"] == 77).all()
    assert (by_name["sixteen.png"][:, 0, 0] == 255).all()
    assert (by_name["sixteen.png"][:, 1:] == 100).all()
    assert by_name["palette_transparent.png"][:, 0, 0].tolist() == [40, 50, 60]
    assert (by_name["palette_transparent.png"][:, 1:] == 255).all()
    assert (by_name["bilevel.bmp"] == 255).all()
    assert (by_name["cmyk.tiff"] == 255).all()
    assert torch.equal(by_name["photo.webp"], chw(rgb(3)))


def test_resize_takes_the_centre_square(tmp_path: Path) -> None:
    wide = np.zeros((8, 32, 3), np.uint8)
    wide[:, :8] = (255, 0, 0)
    wide[:, 8:24] = (0, 255, 0)  # the centre square plus the bicubic filter's reach
    wide[:, 24:] = (0, 0, 255)
    save(tmp_path / "train" / "a" / "wide.png", wide)
    data = load_folder(tmp_path, image_size=4)
    assert data.train_images.shape == (1, 3, 4, 4)
    assert torch.equal(data.train_images[0], chw(np.full((4, 4, 3), (0, 255, 0), np.uint8)))


def test_default_size_is_the_most_common_shorter_side_capped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    save(tmp_path / "a" / "train" / "x" / "1.png", rgb(1, (6, 10)))
    save(tmp_path / "a" / "train" / "x" / "2.png", rgb(2, (6, 10)))
    save(tmp_path / "a" / "train" / "x" / "3.png", rgb(3, (9, 9)))
    assert load_folder(tmp_path / "a").image_shape == (3, 6, 6)
    save(tmp_path / "b" / "train" / "x" / "1.png", rgb(1, (300, 300)))
    with caplog.at_level(logging.WARNING, logger="semisup.data"):
        assert load_folder(tmp_path / "b").image_shape == (3, 256, 256)
    assert "set image_size" in caplog.text


def test_undecodable_unlabeled_folder_gives_none(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    save(tmp_path / "labeled" / "a" / "1.png", rgb(1))
    (tmp_path / "unlabeled").mkdir()
    (tmp_path / "unlabeled" / "broken.png").write_bytes(b"broken")
    with caplog.at_level(logging.WARNING, logger="semisup.data"):
        data = load_folder(tmp_path)
    assert data.unlabeled_images is None
    assert "unlabeled holds no decodable images" in caplog.text


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 3  # rotated by 180 degrees
    save(tmp_path / "train" / "a" / "1.png", Image.fromarray(rgb(1)), exif=exif)
    data = load_folder(tmp_path)
    assert torch.equal(data.train_images[0], chw(np.ascontiguousarray(rgb(1)[::-1, ::-1])))


def test_grey_images_give_one_channel(tmp_path: Path) -> None:
    grey = np.random.default_rng(0).integers(0, 256, (6, 6), dtype=np.uint8)
    save(tmp_path / "train" / "a" / "1.png", grey)
    save(tmp_path / "train" / "b" / "1.jpg", grey)
    save(tmp_path / "train" / "b" / "2.png", Image.fromarray(grey).convert("LA"))
    data = load_folder(tmp_path)
    assert data.image_shape == (1, 6, 6)
    assert torch.equal(data.train_images[0, 0], torch.from_numpy(grey))
    forced = load_folder(tmp_path, grayscale=False)
    assert forced.image_shape == (3, 6, 6)
    assert torch.equal(forced.train_images[0], torch.from_numpy(grey).expand(3, 6, 6))
    make_research(tmp_path / "colour")
    assert load_folder(tmp_path / "colour", grayscale=True).image_shape == (1, 8, 8)


def zip_folder(folder: Path, archive: Path, prefix: str = "") -> None:
    with zipfile.ZipFile(archive, "w") as handle:
        for path in sorted(folder.rglob("*")):
            if ".semisup-cache" not in path.parts:
                handle.write(path, prefix + path.relative_to(folder).as_posix())


@pytest.mark.parametrize("prefix", ["", "my photos/"])
def test_zip_gives_the_same_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefix: str
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("SEMISUP_CACHE_DIR", str(cache))
    make_research(tmp_path / "data")
    (tmp_path / "data" / "train" / "cat" / "broken.png").write_bytes(b"broken")
    from_dir = load_folder(tmp_path / "data")
    archive = tmp_path / "data.zip"
    zip_folder(tmp_path / "data", archive, prefix)
    with zipfile.ZipFile(archive, "a") as handle:  # what macOS's Finder adds to a zip
        handle.writestr(f"__MACOSX/{prefix}train/cat/._000.png", b"resource fork")
    from_zip = load_folder(archive)
    same(from_dir, from_zip)
    assert from_zip.skipped_files == (str(archive / prefix / "train/cat/broken.png"),)
    assert len(caches(cache)) == 1  # beside neither the zip nor inside it
    same(from_zip, load_folder(archive))


def test_read_only_folder_caches_in_cache_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    make_research(data_dir)
    data_dir.chmod(0o555)
    try:
        if os.access(data_dir, os.W_OK):
            pytest.skip("running as root: chmod cannot make the folder read-only")
        first = load_folder(data_dir, cache_dir=tmp_path / "cache")
        assert len(caches(tmp_path / "cache")) == 1
        same(first, load_folder(data_dir, cache_dir=tmp_path / "cache"))
    finally:
        data_dir.chmod(0o755)


def test_unwritable_cache_folder_falls_back_to_cache_dir(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_research(tmp_path / "data")
    (tmp_path / "data" / ".semisup-cache").write_text("a file where the cache folder would go")
    first = load_folder(tmp_path / "data", cache_dir=tmp_path / "cache")
    (cache,) = caches(tmp_path / "cache")
    with caplog.at_level(logging.INFO, logger="semisup.data"):
        same(first, load_folder(tmp_path / "data", cache_dir=tmp_path / "cache"))
    assert f"from cache {cache}" in caplog.text


def test_process_pool_gives_the_same_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_research(tmp_path)
    (tmp_path / "train" / "dog" / "broken.jpg").write_bytes(b"broken")
    serial = load_folder(tmp_path, cache_dir=tmp_path / "c1")
    for path in cache_files(tmp_path):
        shutil.rmtree(path)
    monkeypatch.setattr(folder_decode, "POOL_MIN_FILES", 2)
    monkeypatch.setattr(folder_decode, "_CHUNK", 2)
    monkeypatch.setattr(folder_decode, "_num_workers", lambda num_jobs: 2)
    pooled = load_folder(tmp_path)
    same(serial, pooled)
    assert pooled.skipped_files == serial.skipped_files


def extract_cifar_subset(shared: Path, target: Path, per_class: int) -> None:
    with zipfile.ZipFile(shared / "cifar10-jpeg" / "cifar10_jpeg_q75.zip") as archive:
        for name in archive.namelist():
            if name.endswith(".jpg") and int(Path(name).stem) < per_class:
                archive.extract(name, target)


def test_cifar_subset(shared_datasets: Path, tmp_path: Path) -> None:
    extract_cifar_subset(shared_datasets, tmp_path, per_class=20)
    data = load_folder(tmp_path)
    assert data.class_names == CIFAR_CLASSES
    assert data.train_images.shape == (200, 3, 32, 32)
    assert data.test_images.shape == (200, 3, 32, 32)
    assert data.train_targets.tolist() == [c for c in range(10) for _ in range(20)]
    assert data.test_targets.tolist() == data.train_targets.tolist()
    direct = np.array(Image.open(tmp_path / "train" / "bird" / "0003.jpg").convert("RGB"))
    assert torch.equal(data.train_images[43], chw(direct))
    assert data.skipped_files == ()
    # decoding while reading the headers gives the same pixels as decoding with known options
    same(data, load_folder(tmp_path, image_size=32, grayscale=False))


@pytest.mark.slow
def test_full_cifar_zip(
    shared_datasets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEMISUP_CACHE_DIR", str(tmp_path))
    archive = shared_datasets / "cifar10-jpeg" / "cifar10_jpeg_q75.zip"
    start = time.perf_counter()
    data = load_folder(archive)
    decoded = time.perf_counter() - start
    start = time.perf_counter()
    cached = load_folder(archive)
    from_cache = time.perf_counter() - start
    print(f"decoded 60,000 CIFAR JPEGs in {decoded:.1f} s; loaded the cache in {from_cache:.1f} s")
    assert data.class_names == CIFAR_CLASSES
    assert data.train_images.shape == (50000, 3, 32, 32)
    assert data.test_images.shape == (10000, 3, 32, 32)
    assert data.train_targets.bincount().tolist() == [5000] * 10
    assert data.test_targets.bincount().tolist() == [1000] * 10
    assert data.skipped_files == ()
    same(data, cached)


needs_proc_maps = pytest.mark.skipif(
    not Path("/proc/self/maps").is_file(), reason="reads the memory map in /proc (Linux)"
)


def mapped_file(tensor: torch.Tensor) -> str:
    """The file whose mapping holds the tensor's first byte ('' for anonymous memory)."""
    address = tensor.data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        start, end = (int(bound, 16) for bound in fields[0].split("-"))
        if start <= address < end:
            return fields[5] if len(fields) == 6 else ""
    raise AssertionError(f"address {address:#x} is not mapped")


@needs_proc_maps
def test_images_are_memory_mapped_from_the_cache(tmp_path: Path) -> None:
    written = make_research(tmp_path)
    built = load_folder(tmp_path)  # decoded into the cache, then mapped from it
    (cache,) = cache_files(tmp_path)
    for data in (built, load_folder(tmp_path)):
        assert mapped_file(data.train_images) == str(cache / "images.npy")
        assert mapped_file(data.test_images) == str(cache / "images.npy")
        assert torch.equal(data.train_images, torch.stack([chw(a) for a in written["train"]]))
        assert torch.equal(data.test_images, torch.stack([chw(a) for a in written["test"]]))
    built.train_images[0] = 0  # copy-on-write: the cache file keeps the decoded pixels
    assert torch.equal(load_folder(tmp_path).train_images[0], chw(written["train"][0]))


@pytest.mark.parametrize("options", [{}, {"image_size": 8, "grayscale": False}])
def test_cache_content_leaves_out_skipped_files(tmp_path: Path, options: dict) -> None:
    make_research(tmp_path)
    save(tmp_path / "unlabeled" / "u.png", rgb(20))
    (tmp_path / "train" / "cat" / "001b.png").write_bytes(b"broken")
    data = load_folder(tmp_path, **options)
    (cache,) = cache_files(tmp_path)
    images = np.load(cache / "images.npy")
    assert images.shape == (8, 3, 8, 8)  # the broken file takes no row
    expected = torch.cat([data.train_images, data.unlabeled_images, data.test_images])
    assert torch.equal(torch.from_numpy(images), expected)
    assert np.load(cache / "targets.npy").tolist() == [0, 0, 0, 1, 1, -1, 0, 1]
    meta = json.loads((cache / "meta.json").read_text())
    assert meta["counts"] == {"train": 5, "unlabeled": 1, "test": 2}
    assert meta["class_names"] == ["cat", "dog"]
    assert meta["skipped"] == ["train/cat/001b.png"]


def test_training_pool_is_a_view_of_the_cache(tmp_path: Path) -> None:
    save(tmp_path / "labeled" / "a" / "1.png", rgb(1))
    save(tmp_path / "labeled" / "b" / "1.png", rgb(2))
    save(tmp_path / "unlabeled" / "x.png", rgb(3))
    data = load_folder(tmp_path)
    ssl = build_ssl_data(data, None, seed=0)
    assert ssl.images.data_ptr() == data.train_images.data_ptr()  # not copied
    assert torch.equal(ssl.images, torch.cat([data.train_images, data.unlabeled_images]))
    assert ssl.targets.tolist() == [0, 1, -1]


def test_join_images_copies_tensors_that_are_not_adjacent() -> None:
    pool = torch.arange(4 * 3, dtype=torch.uint8).reshape(4, 3, 1, 1)
    assert join_images(pool[:1], pool[1:]).data_ptr() == pool.data_ptr()
    for first, second in ((pool[:1], pool[2:]), (pool[2:], pool[:2]), (pool[:2], pool[2:].clone())):
        joined = join_images(first, second)
        assert torch.equal(joined, torch.cat([first, second]))
        assert joined.data_ptr() != pool.data_ptr()


@needs_proc_maps
def test_training_gathers_batches_from_the_mapped_cache(tmp_path: Path) -> None:
    make_research(tmp_path)
    settings = {
        "data.name": "folder",
        "data.dir": str(tmp_path),
        "data.num_labels": 2,
        "train.device": "cpu",
        "train.steps": 2,
        "train.batch_size": 2,
        "train.progress": False,
        "algorithm.mu": 1,
    }
    trainer = build_trainer(build_config(None, settings), None)
    (cache,) = cache_files(tmp_path)
    assert mapped_file(trainer.batches.images) == str(cache / "images.npy")
    for _ in range(2):
        trainer.train_step()


class Interrupted(BaseException):
    """Like Ctrl-C or a kill: nothing catches it on the way."""


@pytest.mark.parametrize("options", [{}, {"image_size": 8, "grayscale": False}])
def test_interrupted_build_leaves_no_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, options: dict
) -> None:
    written = make_research(tmp_path)
    real_iter_jobs = folder_module.iter_jobs

    def interrupted(*args: object, **kwargs: object) -> Iterator[object]:
        for count, outcome in enumerate(real_iter_jobs(*args, **kwargs)):  # type: ignore[arg-type]
            if count == 3:
                raise Interrupted
            yield outcome

    monkeypatch.setattr(folder_module, "iter_jobs", interrupted)
    with pytest.raises(Interrupted):
        load_folder(tmp_path, **options)
    assert list((tmp_path / ".semisup-cache").iterdir()) == []  # neither cache nor temp files
    monkeypatch.undo()
    data = load_folder(tmp_path, **options)
    assert torch.equal(data.train_images, torch.stack([chw(a) for a in written["train"]]))


@pytest.mark.parametrize("damage", ["truncated images", "no meta", "other format"])
def test_incomplete_cache_is_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    written = make_research(tmp_path)
    load_folder(tmp_path)
    (cache,) = cache_files(tmp_path)
    images, meta = cache / "images.npy", cache / "meta.json"
    if damage == "truncated images":
        content = images.read_bytes()
        images.unlink()
        images.write_bytes(content[: len(content) // 2])
    elif damage == "no meta":
        meta.unlink()
    else:
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "format": 1}))
    with caplog.at_level(logging.WARNING, logger="semisup.data"):
        data = load_folder(tmp_path)
    assert "deleting unreadable cache" in caplog.text
    assert torch.equal(data.train_images, torch.stack([chw(a) for a in written["train"]]))
    assert len(cache_files(tmp_path)) == 1


def test_new_cache_replaces_the_older_format(tmp_path: Path) -> None:
    make_research(tmp_path)
    options = {"image_size": None, "grayscale": None}
    slot = hashlib.sha256(json.dumps([1, options], separators=(",", ":")).encode()).hexdigest()
    legacy = tmp_path / ".semisup-cache" / f"{slot[:12]}-{'0' * 24}.npz"  # a format 1 cache
    legacy.parent.mkdir()
    legacy.write_bytes(b"format 1")
    load_folder(tmp_path)
    assert not legacy.exists() and len(cache_files(tmp_path)) == 1


@needs_proc_maps
def test_unwritable_cache_locations_give_a_scratch_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    written = make_research(tmp_path / "data")
    (tmp_path / "data" / ".semisup-cache").write_text("a file where the cache folder would go")
    (tmp_path / "cache").write_text("and another one")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    with caplog.at_level(logging.WARNING, logger="semisup.data"):
        data = load_folder(tmp_path / "data", cache_dir=tmp_path / "cache")
    assert "could not write the image cache" in caplog.text
    assert torch.equal(data.train_images, torch.stack([chw(a) for a in written["train"]]))
    assert mapped_file(data.train_images).endswith("images.npy (deleted)")
    assert list((tmp_path / "tmp").iterdir()) == []


def test_pool_too_large_for_the_gpu_stays_on_the_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_research(tmp_path)
    images = load_folder(tmp_path).train_images
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (images.nbytes, 2**34))
    assert place_pool(images, torch.device("cuda")) is images  # would take all free memory
    assert place_pool(images, torch.device("cpu")) is images
