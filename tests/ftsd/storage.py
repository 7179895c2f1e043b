"""A real HTTP storage for the copy tests: serves a folder with Range reads, HEAD, PUT and
DELETE, and lets a test slow it down, make it fail, or hold requests, while it records what
it was asked (so a test can see that a copy resumed with a Range request)."""

from __future__ import annotations

import contextlib
import http.server
import os
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path


@dataclass
class Behaviour:
    #: bytes per second for GET bodies (0: as fast as possible)
    rate: int = 0
    #: path -> number of GETs still to answer with 503
    fail_gets: Counter = field(default_factory=Counter)
    #: GETs wait for this event before answering (set by default)
    gate: threading.Event = field(default_factory=threading.Event)
    #: (method, path, Range header or None), in arrival order
    requests: list = field(default_factory=list)
    active_gets: int = 0
    max_active_gets: int = 0
    #: concurrent GETs per Host header (the host part: one link per name) and their peaks
    per_host_active: Counter = field(default_factory=Counter)
    per_host_max: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: answer HEAD with ``Want-Digest: adler32`` by ``Digest: adler32=<hex>`` (as dCache, EOS)
    digests: bool = False
    #: store every PUT body with its first byte flipped (a storage that damages data)
    corrupt_puts: bool = False

    def __post_init__(self):
        self.gate.set()

    def gets(self, path: str) -> list[str | None]:
        """Range headers of the GETs of ``path`` (None for a GET without Range)."""
        with self.lock:
            return [r for m, p, r in self.requests if m == "GET" and p == path]


class StorageHandler(http.server.SimpleHTTPRequestHandler):
    behaviour: Behaviour
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _record(self, method: str) -> None:
        with self.behaviour.lock:
            self.behaviour.requests.append((method, self.path, self.headers.get("Range")))

    def _empty(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self):
        self._record("HEAD")
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            self._empty(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(os.path.getsize(path)))
        self.send_header("Accept-Ranges", "bytes")
        if self.behaviour.digests and "adler32" in (self.headers.get("Want-Digest") or "").lower():
            with open(path, "rb") as fh:
                self.send_header("Digest", f"adler32={zlib.adler32(fh.read()):08x}")
        self.end_headers()

    def do_GET(self):
        b = self.behaviour
        self._record("GET")
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
        with b.lock:
            b.active_gets += 1
            b.max_active_gets = max(b.max_active_gets, b.active_gets)
            b.per_host_active[host] += 1
            b.per_host_max[host] = max(b.per_host_max[host], b.per_host_active[host])
        try:
            b.gate.wait(60)
            with b.lock:
                failing = b.fail_gets[self.path] > 0
                if failing:
                    b.fail_gets[self.path] -= 1
            if failing:
                self._empty(503)
                return
            path = self.translate_path(self.path)
            if not os.path.isfile(path):
                self._empty(404)
                return
            size = os.path.getsize(path)
            start = 0
            if "Range" in self.headers:
                start = int(self.headers["Range"].split("=", 1)[1].split("-", 1)[0])
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(size - start))
            self.end_headers()
            with open(path, "rb") as fh:
                fh.seek(start)
                chunk = 64 * 1024
                began, sent = time.monotonic(), 0
                while data := fh.read(chunk):
                    self.wfile.write(data)
                    sent += len(data)
                    if b.rate:
                        ahead = sent / b.rate - (time.monotonic() - began)
                        if ahead > 0:
                            time.sleep(ahead)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            with b.lock:
                b.active_gets -= 1
                b.per_host_active[host] -= 1

    def do_PUT(self):
        self._record("PUT")
        path = self.translate_path(self.path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".uploading"
        with open(tmp, "wb") as fh:
            length = self.headers.get("Content-Length")
            if length is not None:
                remaining = int(length)
                while remaining:
                    data = self.rfile.read(min(remaining, 1 << 20))
                    if not data:
                        break
                    fh.write(data)
                    remaining -= len(data)
            else:  # chunked
                while True:
                    size = int(self.rfile.readline().strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        break
                    fh.write(self.rfile.read(size))
                    self.rfile.readline()
        if self.behaviour.corrupt_puts and os.path.getsize(tmp):
            with open(tmp, "r+b") as fh:
                first = fh.read(1)
                fh.seek(0)
                fh.write(bytes([first[0] ^ 0xFF]))
        os.replace(tmp, path)
        self._empty(201)

    def do_DELETE(self):
        self._record("DELETE")
        path = self.translate_path(self.path)
        if os.path.isfile(path):
            os.unlink(path)
            self._empty(204)
        else:
            self._empty(404)


@dataclass
class Storage:
    root: Path
    url: str
    behaviour: Behaviour


@contextlib.contextmanager
def http_storage(root: Path, rate: int = 0) -> Iterator[Storage]:
    root.mkdir(parents=True, exist_ok=True)
    behaviour = Behaviour(rate=rate)
    handler = type("Handler", (StorageHandler,), {"behaviour": behaviour})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Storage(root, f"http://127.0.0.1:{server.server_address[1]}", behaviour)
    finally:
        behaviour.gate.set()
        server.shutdown()
        server.server_close()
