"""Downloads through a local HTTP server: md5 checks, atomic files and clear network errors."""

from __future__ import annotations

import functools
import os
import socket
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from semisup.data import download, standard
from semisup.errors import UserError

MNIST_FILES = tuple(standard.SOURCES["mnist"].md5s)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class _TruncatingHandler(_QuietHandler):
    """Promises 1000 bytes, sends 10, and hangs up."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"0123456789")
        self.close_connection = True


def _serve(directory: Path, handler_class: type = _QuietHandler) -> Iterator[str]:
    handler = functools.partial(handler_class, directory=str(directory))
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{server.server_address[1]}"
        server.shutdown()
        thread.join()


@pytest.fixture(scope="module")
def shared_server(shared_datasets: Path) -> Iterator[str]:
    """The base URL of an HTTP server serving the shared data sets folder."""
    yield from _serve(shared_datasets)


@pytest.fixture
def tmp_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, folder) of an HTTP server serving a fresh temporary folder."""
    folder = tmp_path / "served"
    folder.mkdir()
    for url in _serve(folder):
        yield url, folder


@pytest.fixture
def closed_port() -> int:
    """A local port nothing listens on (connections to it are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(autouse=True)
def _no_env_mirror(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(download.MIRROR_ENV, raising=False)


def test_mnist_through_mirror(shared_server: str, shared_datasets: Path, tmp_path: Path) -> None:
    data = standard.load_mnist(tmp_path, mirror=f"{shared_server}/mnist")
    for name in MNIST_FILES:
        assert download.file_md5(tmp_path / name) == standard.SOURCES["mnist"].md5s[name]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(MNIST_FILES)  # no temp files

    direct = standard.load_mnist(shared_datasets, download=False)
    assert torch.equal(data.train_images, direct.train_images)
    assert torch.equal(data.train_targets, direct.train_targets)
    assert data.test_images is not None and direct.test_images is not None
    assert torch.equal(data.test_images, direct.test_images)


def test_mirror_from_environment(
    shared_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(download.MIRROR_ENV, f"{shared_server}/mnist/")
    name = "t10k-labels-idx1-ubyte.gz"
    md5s = {name: standard.SOURCES["mnist"].md5s[name]}
    (path,) = download.ensure_files(tmp_path / "new", md5s, base_urls=["http://invalid./"])
    assert path == tmp_path / "new" / name and download.file_md5(path) == md5s[name]


def test_local_directory_mirror(shared_datasets: Path, tmp_path: Path) -> None:
    name = "t10k-labels-idx1-ubyte.gz"
    md5s = {name: standard.SOURCES["fashion_mnist"].md5s[name]}
    mirror = str(shared_datasets / "fashion-mnist")
    download.ensure_files(tmp_path, md5s, base_urls=[], mirror=mirror)
    download.check_md5(tmp_path / name, md5s[name])


def test_md5_mismatch_leaves_no_file(tmp_server: tuple[str, Path], tmp_path: Path) -> None:
    url, served = tmp_server
    (served / "data.bin").write_bytes(b"not what was expected")
    dest = tmp_path / "out" / "data.bin"
    with pytest.raises(UserError, match="0123456789abcdef0123456789abcdef") as info:
        download.fetch(f"{url}/data.bin", dest, "0123456789abcdef0123456789abcdef")
    message = str(info.value)
    assert download.file_md5(served / "data.bin") in message and f"{url}/data.bin" in message
    assert list(dest.parent.iterdir()) == []


def test_loader_md5_mismatch(
    tmp_server: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, served = tmp_server
    (served / "cifar-10-python.tar.gz").write_bytes(b"an impostor")
    with pytest.raises(UserError, match="c58f30108f718f92721af3b95e74349a"):
        standard.load_cifar10(tmp_path / "data", mirror=url)
    assert list((tmp_path / "data").iterdir()) == []


def test_first_working_url_wins(
    tmp_server: tuple[str, Path], tmp_path: Path, closed_port: int
) -> None:
    url, served = tmp_server
    (served / "a.txt").write_bytes(b"hello")
    md5 = download.file_md5(served / "a.txt")
    urls = [f"http://127.0.0.1:{closed_port}/a.txt", f"{url}/missing.txt", f"{url}/a.txt"]
    assert download.fetch(urls, tmp_path / "a.txt", md5).read_bytes() == b"hello"


def test_unreachable_server(tmp_path: Path, closed_port: int) -> None:
    mirror = f"http://127.0.0.1:{closed_port}/mnist"
    with pytest.raises(UserError) as info:
        standard.load_mnist(tmp_path, mirror=mirror)
    message = str(info.value)
    assert f"{mirror}/train-images-idx3-ubyte.gz" in message
    assert "refused" in message.lower() and str(tmp_path) in message
    assert "SEMISUP_MIRROR" in message and list(tmp_path.iterdir()) == []


def test_http_error_names_status(tmp_server: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = tmp_server
    with pytest.raises(UserError, match=f"{url}/nothing.bin \\(HTTP 404"):
        download.fetch(f"{url}/nothing.bin", tmp_path / "nothing.bin", None)


def test_connection_closed_early(tmp_path: Path) -> None:
    for url in _serve(tmp_path, _TruncatingHandler):
        with pytest.raises(UserError, match="closed before the whole file arrived"):
            download.fetch(f"{url}/big.bin", tmp_path / "out" / "big.bin", None)
    assert list((tmp_path / "out").iterdir()) == []


def test_read_only_directory(
    tmp_server: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, served = tmp_server
    (served / "train_32x32.mat").write_bytes(b"x")
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    read_only.chmod(0o555)
    if os.geteuid() == 0:  # root ignores permission bits: make the temp file fail as they would

        def refuse(*args: object, **kwargs: object) -> None:
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(download.tempfile, "mkstemp", refuse)
    try:
        with pytest.raises(UserError, match=f"into {read_only} \\(Permission denied\\)"):
            standard.load_svhn(read_only, mirror=url)
    finally:
        read_only.chmod(0o755)
    assert list(read_only.iterdir()) == []
