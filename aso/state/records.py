"""The data that crosses the backend boundary: a transfer row's columns, the changes a
caller asks for, and what each batch call answers.

Both backends (in process and over REST), the store and the server speak these types, so
they live apart from all of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from aso.state.states import PublicationState, TransferState


def __getattr__(name: str) -> Any:
    """``TRANSFER_COLUMNS``: the columns of a transfer row, in the schema's order (CRAB's,
    plus ours); REST reads answer with these. Read from the schema when first asked for, so
    that SQLAlchemy loads only where the columns are needed (the store, the server): a
    component on the REST backend starts without it."""
    if name == "TRANSFER_COLUMNS":
        from aso.state.schema import transfers

        columns = globals()[name] = [c.name for c in transfers.columns]
        return columns
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Acquired(int):
    """What ``acquire_transfers`` answers: the number of rows acquired (an int, as callers
    always used it), and ``held``: how many of the users' NEW rows wait because a site or
    link they need is full (0 without limits)."""

    held: int

    def __new__(cls, acquired: int, held: int = 0) -> Acquired:
        value = super().__new__(cls, acquired)
        value.held = held
        return value

    def __getnewargs__(self) -> tuple[int, int]:  # copy and pickle keep ``held``
        return (int(self), self.held)


@dataclass
class TransferUpdate:
    """One row's change in ``update_transfers``.

    ``expect_state`` / ``expect_fts_id`` are guards: a row that does not match them is
    *skipped* (reported in the result, not an error). This is how a late FTS result for a
    row that was killed, resolved or resubmitted meanwhile is ignored. A row that matches the
    guards but whose transition is not allowed makes the whole call fail (TransitionError).
    """

    id: str
    state: TransferState | str
    reason: str | None = None
    retry_increment: int = 0
    fts_id: str | None = None
    fts_instance: str | None = None
    expect_state: TransferState | str | None = None
    expect_fts_id: str | None = None
    #: the sites of the path submitted ("A>B>C"), recorded with SUBMITTED
    path: str | None = None


@dataclass
class PublicationUpdate:
    id: str
    state: PublicationState | str
    reason: str | None = None
    retry_increment: int = 0
    block_name: str | None = None
    publish_flag: int | None = None


@dataclass
class UpdateResult:
    updated: list[str] = field(default_factory=list)
    #: rows left alone because a guard did not match: {"id", "state", "reason"}
    skipped: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class InjectResult:
    inserted: list[str] = field(default_factory=list)
    #: finished rows re-initialised to NEW by a job retry
    reinitialised: list[str] = field(default_factory=list)
    #: rows left alone: {"id", "state", "reason"} (still in flight, or same job retry)
    skipped: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class KillResult:
    killed: list[str] = field(default_factory=list)
    #: {"id", "state", "reason"}: already terminal, unknown, or not the caller's
    failed_kill: list[dict[str, Any]] = field(default_factory=list)


#: the components whose passes are recorded (the names of their commands)
COMPONENTS = ("transfer", "stager", "monitor", "reporter", "retry-manager", "publisher", "receiver")
HOST_RE = re.compile(r"^[A-Za-z0-9_.-]{1,255}$")
#: the largest time (and count) a pass record takes: year 2286 in epoch milliseconds, far
#: inside every column's range and exact as a float of seconds
MAX_EPOCH_MS = 10**13


def _host_and_component(get: Any) -> tuple[str, str]:
    """The ``host`` and ``component`` parameters of an instance's records (passes and
    heartbeats); ValidationError naming the bad one."""
    from aso.errors import ValidationError

    host = get("host")
    if not isinstance(host, str) or not HOST_RE.fullmatch(host):
        raise ValidationError("host", f"{str(host)[:100]!r} is not a host name ([A-Za-z0-9_.-], 1 to 255 characters)")
    component = get("component")
    if component not in COMPONENTS:
        raise ValidationError("component", f"{str(component)[:100]!r} is not one of {', '.join(COMPONENTS)}")
    return host, component


@dataclass
class PassRecord:
    """One component instance's latest pass, as the state backend keeps it: one record per
    (host, component), written when a pass starts (``finished`` None: running) and again
    when it ends. ``last_success`` is the store's: when a pass of this instance last ended
    with exit code 0."""

    host: str
    component: str
    pid: int
    pass_id: str
    started: float
    finished: float | None = None
    exit_code: int | None = None
    files: int = 0
    failures: int = 0
    summary: str = ""
    last_success: float | None = None

    @property
    def running(self) -> bool:
        return self.finished is None

    @property
    def duration(self) -> float | None:
        return None if self.finished is None else max(0.0, self.finished - self.started)

    def to_params(self) -> dict[str, Any]:
        """The REST parameters of recordPass (times in milliseconds: integers both ways)."""
        return {"host": self.host, "component": self.component, "pid": self.pid, "pass_id": self.pass_id,
                "started_ms": int(self.started * 1000),
                "finished_ms": None if self.finished is None else int(self.finished * 1000),
                "exit_code": self.exit_code, "files": self.files, "failures": self.failures, "summary": self.summary}

    @classmethod
    def from_params(cls, get: Any) -> PassRecord:
        """From request parameters (``get(name)`` gives each one); ValidationError naming the
        first bad one."""
        from aso import validate
        from aso.errors import ValidationError

        host, component = _host_and_component(get)
        pass_id = validate.path_part(get("pass_id"), "pass_id")

        def number(name: str, nullable: bool = False, maximum: int = MAX_EPOCH_MS) -> int | None:
            value = get(name)
            if value in (None, "") and nullable:
                return None
            return validate.non_negative_int(value, name, maximum)

        started = number("started_ms")
        finished = number("finished_ms", nullable=True)
        if finished is not None and finished < started:
            raise ValidationError("finished_ms", "is before started_ms")
        summary = get("summary") or ""
        if not isinstance(summary, str) or len(summary) > 1000:
            raise ValidationError("summary", "must be text of at most 1000 characters")
        return cls(host, component, number("pid", maximum=validate.MAX_INT32), pass_id, started / 1000,
                   None if finished is None else finished / 1000, number("exit_code", nullable=True, maximum=255),
                   number("files"), number("failures"), summary)

    def as_dict(self) -> dict[str, Any]:
        return {"host": self.host, "component": self.component, "pid": self.pid, "pass_id": self.pass_id,
                "started": self.started, "finished": self.finished, "duration": self.duration,
                "exit_code": self.exit_code, "files": self.files, "failures": self.failures, "summary": self.summary,
                "last_success": self.last_success, "running": self.running}


#: the heartbeat timeouts a caller may send (seconds): at least 1, at most a week
MIN_HEARTBEAT_TIMEOUT = 1
MAX_HEARTBEAT_TIMEOUT = 7 * 86400
#: [aso] heartbeat_timeout's default, and what instances() assumes when asked without one
DEFAULT_HEARTBEAT_TIMEOUT = 600
#: the states of a worker
WORKER_LIVE, WORKER_TAKEN_OVER = "live", "taken-over"


@dataclass
class Heartbeat:
    """One component instance saying it is alive (its worker is the backend's). ``timeout``
    (seconds) is the caller's [aso] heartbeat_timeout: an instance silent for longer is
    dead, and a worker all of whose instances are dead is taken over."""

    host: str
    component: str
    pid: int
    started: float
    timeout: int

    def to_params(self) -> dict[str, Any]:
        return {"host": self.host, "component": self.component, "pid": self.pid,
                "started_ms": int(self.started * 1000), "timeout": self.timeout}

    @classmethod
    def from_params(cls, get: Any) -> Heartbeat:
        """From request parameters; ValidationError naming the first bad one."""
        from aso import validate
        from aso.errors import ValidationError

        host, component = _host_and_component(get)
        pid = validate.non_negative_int(get("pid"), "pid", validate.MAX_INT32)
        started = validate.non_negative_int(get("started_ms"), "started_ms", MAX_EPOCH_MS)
        timeout = validate.non_negative_int(get("timeout"), "timeout", MAX_HEARTBEAT_TIMEOUT)
        if timeout < MIN_HEARTBEAT_TIMEOUT:
            raise ValidationError("timeout", f"must be at least {MIN_HEARTBEAT_TIMEOUT} second")
        return cls(host, component, pid, started / 1000, timeout)


@dataclass
class TakenOver:
    """A worker declared dead in a heartbeat, and what became of its rows."""

    worker: str
    by: str
    #: its generation after the takeover (its writes with an older one are fenced)
    generation: int
    rows: int
    users: int

    def as_dict(self) -> dict[str, Any]:
        return {"worker": self.worker, "by": self.by, "generation": self.generation, "rows": self.rows,
                "users": self.users}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> TakenOver:
        return cls(str(doc["worker"]), str(doc["by"]), int(doc["generation"]), int(doc["rows"]), int(doc["users"]))


@dataclass
class Membership:
    """A heartbeat's answer: this worker's current generation (the fencing token its
    pipeline writes carry), the live workers of the component (those with an instance of
    it heard from within the timeout, this one included), and the workers this call took
    over."""

    worker: str
    generation: int
    live: list[str] = field(default_factory=list)
    taken_over: list[TakenOver] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"worker": self.worker, "generation": self.generation, "live": list(self.live),
                "taken_over": [t.as_dict() for t in self.taken_over]}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Membership:
        return cls(str(doc["worker"]), int(doc["generation"]), [str(w) for w in doc.get("live") or []],
                   [TakenOver.from_dict(t) for t in doc.get("taken_over") or []])


@dataclass
class Instance:
    """One component instance as ``instances()`` lists it: its last heartbeat, whether it
    is live (heard from within the timeout asked about), and its worker's generation and
    state."""

    worker: str
    host: str
    component: str
    pid: int
    started: float
    heartbeat: float
    live: bool
    generation: int
    state: str
    taken_over: float | None = None
    taken_over_by: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"worker": self.worker, "host": self.host, "component": self.component, "pid": self.pid,
                "started": self.started, "heartbeat": self.heartbeat, "live": self.live,
                "generation": self.generation, "state": self.state, "taken_over": self.taken_over,
                "taken_over_by": self.taken_over_by}

    def to_row(self) -> dict[str, Any]:
        """The REST table row (times in epoch milliseconds)."""
        return {"worker": self.worker, "host": self.host, "component": self.component, "pid": self.pid,
                "started_ms": int(self.started * 1000), "heartbeat_ms": int(self.heartbeat * 1000),
                "live": self.live, "generation": self.generation, "state": self.state,
                "taken_over_ms": None if self.taken_over is None else int(self.taken_over * 1000),
                "taken_over_by": self.taken_over_by}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Instance:
        over = row.get("taken_over_ms")
        return cls(row["worker"], row["host"], row["component"], int(row["pid"]), row["started_ms"] / 1000,
                   row["heartbeat_ms"] / 1000, bool(row["live"]), int(row["generation"]), row["state"],
                   None if over is None else over / 1000, row.get("taken_over_by"))
