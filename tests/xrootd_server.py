"""A real ``xrootd`` daemon for the tests: one exported folder on a free loopback port.

The daemon serves ``root://127.0.0.1:<port>//<path>`` from its folder with adler32
checksums (``xrootd.chksum adler32``). xrootd refuses to run as root, so under root it runs
as the system user ``xrootd`` (``-R``), and its folders are made that user's. The folders live
in a temporary folder of their own (not a test's tmp_path, whose parents only root may
enter) and are removed when the daemon stops.

There is no skip: without the ``xrootd`` binary the fixture fails, saying what to install.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.procs import free_port, wait_for_port

#: the user xrootd runs as when the tests run as root (Debian's xrootd-server package makes it)
RUN_AS = "xrootd"


def _binary() -> str:
    found = shutil.which("xrootd")
    if found is None:
        raise RuntimeError("the xrootd server is not installed (apt-get install xrootd-server xrootd-client; "
                           ".ci/run does this)")
    return found


def _owner() -> tuple[int, int] | None:
    """(uid, gid) the daemon's files must belong to; None when not running as root."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(RUN_AS)
    except KeyError:
        raise RuntimeError(f"running as root, xrootd needs the user {RUN_AS!r} to run as "
                           f"(useradd --system {RUN_AS})") from None
    return entry.pw_uid, entry.pw_gid


@dataclass
class XrootdServer:
    #: the exported folder: root://127.0.0.1:<port>//<root>/x is the file <root>/x
    root: Path
    port: int
    log: Path
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """The URL of the exported folder, without a trailing slash."""
        return f"root://127.0.0.1:{self.port}/{self.root}"

    def url_of(self, relative: str) -> str:
        return f"{self.url}/{relative.lstrip('/')}"

    def give(self, path: Path) -> None:
        """Make ``path`` and the folders between it and the export the daemon's own."""
        owner = _owner()
        if owner is None:
            return
        path = Path(path)
        while True:
            os.chown(path, *owner)
            if path == self.root or self.root not in path.parents:
                return
            path = path.parent

    def path_of(self, relative: str) -> Path:
        """The file below the export that ``relative`` (an LFN, say) names."""
        path = self.root / relative.lstrip("/")
        assert self.root in path.parents or path == self.root, relative
        return path

    def mkdir(self, relative: str) -> Path:
        """A folder below the export that the daemon may write."""
        folder = self.path_of(relative)
        folder.mkdir(parents=True, exist_ok=True)
        self.give(folder)
        return folder

    def put(self, relative: str, data: bytes) -> Path:
        """A file below the export, as if an earlier copy had put it there."""
        path = self.path_of(relative)
        self.mkdir(str(path.parent.relative_to(self.root)))
        path.write_bytes(data)
        self.give(path)
        return path

    def tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def _config(port: int, data: Path, admin: Path, rate: int, checksums: bool) -> str:
    throttle = [
        # XRootD's own bandwidth limiter (reads and writes): a copy slow enough to be
        # interrupted halfway
        "xrootd.fslib throttle default",
        f"throttle.throttle data {rate}",
    ] if rate else []
    return "\n".join([*throttle,
        f"xrd.port {port}",
        "all.role server",
        # URL paths are paths on this machine, and only the test's folder is served
        f"all.export {data}",
        f"all.adminpath {admin}",
        f"all.pidpath {admin}",
        *(["xrootd.chksum adler32"] if checksums else []),
        # no reverse DNS lookups of clients (all on loopback): no login waits for a resolver
        "xrd.network nodnr",
        "",
    ])


@contextlib.contextmanager
def xrootd_server(name: str = "site", rate: int = 0, checksums: bool = True) -> Iterator[XrootdServer]:
    """Start a daemon exporting a fresh folder; stop it and remove its folders at the end.
    ``rate``: bytes per second the daemon reads and writes at most (0: no limit);
    ``checksums``: the daemon computes adler32 when asked (else it answers no checksum)."""
    binary = _binary()
    owner = _owner()
    base = Path(tempfile.mkdtemp(prefix=f"aso-xrootd-{name}-"))
    os.chmod(base, 0o755)  # the daemon's user enters it
    data, admin = base / "data", base / "admin"
    for folder in (data, admin):
        folder.mkdir()
        if owner is not None:
            os.chown(folder, *owner)
    if owner is not None:
        os.chown(base, *owner)  # the daemon writes its log below it
    try:
        server = _start(binary, base, name, owner, rate, checksums)
        try:
            yield server
        finally:
            _stop(server.proc)
    finally:
        shutil.rmtree(base, ignore_errors=True)


#: starts tried before the fixture fails: once in a CI run, a fresh machine's first daemon died
#: of SIGSEGV before it wrote a line of log, and the next starts in that run went well
STARTS = 3


def _start(binary: str, base: Path, name: str, owner: tuple[int, int] | None, rate: int,
           checksums: bool) -> XrootdServer:
    """A listening daemon. A start that dies of a signal before listening is tried again on a
    new port; one that exits with a status (a bad configuration, say) fails at once."""
    for attempt in range(1, STARTS + 1):
        port = free_port()
        config = base / "xrootd.cfg"
        config.write_text(_config(port, data=base / "data", admin=base / "admin", rate=rate, checksums=checksums))
        # with -n NAME the daemon writes its log to <folder of -l>/NAME/xrootd.log
        log = base / name / "xrootd.log"
        args = [binary, "-c", str(config), "-l", str(base / "xrootd.log"), "-n", name]
        if owner is not None:
            args += ["-R", RUN_AS]
        # what the daemon prints before its log is open (a crash, a refused option) goes here
        with open(base / f"start-{attempt}.log", "wb") as output:
            proc = subprocess.Popen(args, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for_port(port, timeout=30, proc=proc)
        except (RuntimeError, TimeoutError) as exc:
            died_of_a_signal = (proc.poll() or 0) < 0
            _stop(proc)
            if died_of_a_signal and attempt < STARTS:
                continue
            raise RuntimeError(f"xrootd did not start (try {attempt} of {STARTS}): {exc}\n{_all_logs(base)}") from None
        return XrootdServer(root=base / "data", port=port, log=log, proc=proc)
    raise AssertionError("unreachable")


def _all_logs(base: Path) -> str:
    return "\n".join(p.read_text(errors="replace")[-3000:] for p in base.rglob("*.log*") if p.is_file())


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    # the daemon may have forked helpers into its session: none may outlive the test
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, 9)
