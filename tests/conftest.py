"""Shared fixtures: a loopback HTTP file server (no test touches the internet), paths to shared data."""

from __future__ import annotations

import email.utils
import hashlib
import http.server
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@dataclass
class FileServer:
    """A threaded HTTP server on 127.0.0.1 serving files from ``root``, with Range support and fault injection.

    Attributes:
        requests: ``(path, Range header or None)`` of every request, in order.
        cut_after: if set, the next response body is cut after this many bytes (the connection is closed).
        ignore_range: answer every request with the whole file (200).
        ignore_if_range: serve ranges even when ``If-Range`` names another version of the file.
        send_length: send ``Content-Length`` (off: the body ends when the connection closes).
        headers: all request headers of every request, in order.
        on_request: called with the request path before each response (to hold or count requests).

    Every file is served with an ``ETag`` (a hash of its bytes) and ``Last-Modified``; ``If-Range`` is honoured.
    """

    root: Path
    port: int = 0
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    cut_after: int | None = None
    ignore_range: bool = False
    ignore_if_range: bool = False
    send_length: bool = True
    headers: list[dict[str, str]] = field(default_factory=list)
    on_request: Callable[[str], None] | None = None

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"


def _handler(server: FileServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:
            rng = self.headers.get("Range")
            server.requests.append((self.path, rng))
            server.headers.append(dict(self.headers.items()))
            if server.on_request is not None:
                server.on_request(self.path)
            path = server.root / self.path.lstrip("/")
            if not path.is_file():
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = path.read_bytes()
            etag = f'"{hashlib.sha256(data).hexdigest()[:16]}"'
            modified = email.utils.formatdate(path.stat().st_mtime, usegmt=True)
            if_range = self.headers.get("If-Range")
            if if_range is not None and if_range not in (etag, modified) and not server.ignore_if_range:
                rng = None  # another version of the file: send all of it
            start = 0
            if rng and not server.ignore_range:
                start = int(rng.split("=", 1)[1].split("-", 1)[0])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            if server.send_length:
                self.send_header("Content-Length", str(len(body)))
            else:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", modified)
            self.end_headers()
            if server.cut_after is not None:
                self.wfile.write(body[: server.cut_after])
                self.wfile.flush()
                server.cut_after = None
                self.close_connection = True
                return
            self.wfile.write(body)

    return Handler


@pytest.fixture(scope="module")
def detector() -> torch.nn.Module:
    """A randomly initialised 3-class YOLO-n for 64 px inputs (classes ``a``, ``b``, ``c``), in eval mode."""
    import vision

    torch.manual_seed(0)
    model = vision.create_model("yolo_n", num_classes=3, imgsz=64).eval()
    model.categories = ["a", "b", "c"]
    return model


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[FileServer]:
    """Serve ``tmp_path / "served"`` over loopback HTTP for the duration of a test."""
    root = tmp_path / "served"
    root.mkdir()
    state = FileServer(root=root)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def vision_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty ``VISION_HOME`` for the test; offline mode off."""
    home = tmp_path / "vision_home"
    monkeypatch.setenv("VISION_HOME", str(home))
    monkeypatch.delenv("VISION_OFFLINE", raising=False)
    return home


@pytest.fixture
def bccd_dir() -> Path:
    """The shared BCCD folder, or skip when it is absent."""
    path = SHARED_DATA / "bccd"
    if not (path / "annotations" / "train.json").is_file():
        pytest.skip(f"shared BCCD data not found at {path}")
    return path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


os.environ.setdefault("VISION_OFFLINE", "1")  # a test that would reach the internet fails instead


@pytest.fixture
def two_threads() -> Iterator[None]:
    """Two intra-op threads for the test, the caller's count restored after it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)
