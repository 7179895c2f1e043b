"""Protocol plug-ins against real files and a real local HTTP server."""

from __future__ import annotations

import errno
import http.server
import os
import threading
import zlib
from functools import partial

import pytest

from aso.ftsd.protocols import CopyError, destination_for, source_for

#: the folders file:// URLs may use in a test: its tmp_path (set per test below)
ROOTS: tuple[str, ...] = ()


@pytest.fixture(autouse=True)
def _roots(tmp_path):
    global ROOTS
    ROOTS = (str(tmp_path),)
    yield
    ROOTS = ()


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder with Range support and accepts PUT, like a WebDAV-ish storage."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            self.send_error(404)
            return
        with open(path, "rb") as fh:
            data = fh.read()
        start = 0
        if "Range" in self.headers:
            start = int(self.headers["Range"].split("=")[1].rstrip("-"))
            self.send_response(206)
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def do_PUT(self):
        path = self.translate_path(self.path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        length = self.headers.get("Content-Length")
        with open(path, "wb") as fh:
            if length is not None:
                fh.write(self.rfile.read(int(length)))
            else:  # chunked
                while True:
                    size = int(self.rfile.readline().strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        break
                    fh.write(self.rfile.read(size))
                    self.rfile.readline()
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def web(tmp_path):
    root = tmp_path / "web"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def copy(src_url, dst_url, part="f1", offset=0, overwrite=False):
    src, dst = source_for(src_url, roots=ROOTS), destination_for(dst_url, part, roots=ROOTS)
    dst.write(src.read_from(offset, 64 * 1024), offset, lambda n: None)
    dst.commit(overwrite)
    return dst


def test_file_to_file_resumes_without_truncating(tmp_path):
    data = os.urandom(300_000)
    (tmp_path / "src").write_bytes(data)
    dst_path = tmp_path / "out" / "deep" / "dst"
    dst = destination_for(dst_path.as_uri(), "f1", roots=ROOTS)
    # an earlier attempt wrote the first 100 kB, then died
    dst.write(iter([data[:100_000]]), 0, lambda n: None)
    assert dst.partial_size() == 100_000 and not dst_path.exists()
    src = source_for((tmp_path / "src").as_uri(), roots=ROOTS)
    dst.write(src.read_from(100_000, 4096), 100_000, lambda n: None)
    assert dst.adler32() == f"{zlib.adler32(data):08x}"
    dst.commit(overwrite=False)
    assert dst_path.read_bytes() == data
    assert not any(p.name.endswith(".part") for p in dst_path.parent.iterdir())


def test_existing_destination_without_overwrite(tmp_path):
    (tmp_path / "src").write_bytes(b"new")
    (tmp_path / "dst").write_bytes(b"old")
    with pytest.raises(CopyError) as err:
        copy((tmp_path / "src").as_uri(), (tmp_path / "dst").as_uri())
    assert err.value.reason == "DESTINATION [17] Destination file exists and overwrite is not enabled"
    assert not err.value.recoverable
    assert (tmp_path / "dst").read_bytes() == b"old"
    copy((tmp_path / "src").as_uri(), (tmp_path / "dst").as_uri(), overwrite=True)
    assert (tmp_path / "dst").read_bytes() == b"new"


def test_missing_source_is_source_enoent(tmp_path):
    with pytest.raises(CopyError) as err:
        source_for((tmp_path / "nope").as_uri(), roots=ROOTS).size()
    assert err.value.scope == "SOURCE" and err.value.code == errno.ENOENT
    assert err.value.reason.startswith("SOURCE [2] ")


def test_http_source_with_range_and_put_destination(web, tmp_path):
    root, base = web
    data = os.urandom(200_000)
    (root / "a.bin").write_bytes(data)
    src = source_for(f"{base}/a.bin")
    assert src.size() == len(data)
    assert b"".join(bytes(c) for c in src.read_from(150_000, 8192)) == data[150_000:]
    (tmp_path / "local").write_bytes(data)
    dst = copy((tmp_path / "local").as_uri(), f"{base}/up/b.bin")
    assert (root / "up" / "b.bin").read_bytes() == data
    assert dst.adler32() == f"{zlib.adler32(data):08x}"
    with pytest.raises(CopyError) as err:
        source_for(f"{base}/missing").size()
    assert err.value.reason.startswith("SOURCE [2]")


def test_unsupported_scheme():
    with pytest.raises(CopyError, match=r"SOURCE \[93\]"):
        source_for("gsiftp://host/x")


def test_destination_folder_that_cannot_exist(tmp_path):
    (tmp_path / "blocker").write_text("a file")
    (tmp_path / "src").write_bytes(b"data")
    dst = destination_for((tmp_path / "blocker" / "sub" / "dst").as_uri(), "f1", roots=ROOTS)
    assert dst.partial_size() == 0 and not dst.exists()
    with pytest.raises(CopyError) as err:
        dst.copy_from_path(str(tmp_path / "src"), 0, lambda n: None)
    assert err.value.reason.startswith("DESTINATION [20] ") and not err.value.recoverable
    dst.discard()
