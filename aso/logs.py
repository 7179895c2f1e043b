"""Log lines that can be followed: one line per event, text or JSON, each stamped with the
context it happened in (component, pass, user, task, FTS job).

The context lives in :mod:`contextvars`, set with :func:`log_context` around the code it
applies to; :class:`ContextFilter` copies it onto every record, so a line logged deep in a
transfer tool still says which user and FTS job it was about, and one ``grep <job id>``
follows a file through the transfer, monitor and reporter logs.

Threads: a ``ThreadPoolExecutor`` worker does not inherit the submitting thread's
contextvars, so the per-user (per-job) function sets its own context; the component and
pass id are process-wide for one pass (:func:`set_pass`), which pool threads see too.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

#: the context keys, in the order the text format shows them
FIELDS = ("component", "pass_id", "user", "task", "fts_job", "rows")
#: short names in the text format's trailer (``[component=transfer pass=1a2b user=alice job=...]``)
_TEXT_NAMES = {"component": "component", "pass_id": "pass", "user": "user", "task": "task", "fts_job": "job",
               "rows": "rows"}
FORMATS = ("text", "json")

_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("aso_log_context", default={})  # noqa: B039 (never mutated)
#: the running component and its pass: process-wide, so pool threads carry them without
#: any help (one process runs one component's passes, one at a time)
_process: dict[str, Any] = {}


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Stamp ``fields`` (user=, task=, fts_job=, rows=, component=) on every line logged in
    this block, in this thread (or asyncio task). None values are left out."""
    current = _context.get()
    token = _context.set({**current, **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def new_pass_id() -> str:
    """A short id, new per pass: enough to tell the passes of one log file apart."""
    return uuid.uuid4().hex[:12]


def set_pass(component: str | None, pass_id: str | None = None) -> str | None:
    """Make ``component`` and a pass id (new unless given) the process-wide context of
    every line until the next call; ``set_pass(None)`` clears them. Returns the pass id."""
    global _process
    if component is None:
        _process = {}
        return None
    pass_id = pass_id or new_pass_id()
    # replaced whole, never changed in place: a pool thread reading it sees one or the other
    _process = {"component": component, "pass_id": pass_id}
    return pass_id


@contextlib.contextmanager
def pass_context(component: str) -> Iterator[str]:
    """One pass of ``component``: a new pass id for the lines logged inside."""
    global _process
    previous = _process
    pass_id = set_pass(component)
    try:
        yield pass_id or ""
    finally:
        _process = previous


class ContextFilter(logging.Filter):
    """Copies the log context onto every record (two dict lookups: cheap). A record that
    already has a field (``extra={"user": ...}``) keeps its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        for source in (_process, _context.get()):
            for key, value in source.items():
                if key not in record.__dict__:
                    record.__dict__[key] = value
        return True


def _context_of(record: logging.LogRecord) -> dict[str, Any]:
    return {key: record.__dict__[key] for key in FIELDS if record.__dict__.get(key) is not None}


class TextFormatter(logging.Formatter):
    """``2024-05-01 12:00:00,123 INFO aso.transfer: message [component=transfer pass=... user=alice job=...]``:
    the trailer names only the keys that are set."""

    def __init__(self, fmt: str = "%(asctime)s %(levelname)s %(name)s: %(message)s"):
        super().__init__(fmt)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = _context_of(record)
        if not fields:
            return text
        trailer = " ".join(f"{_TEXT_NAMES[k]}={_text_value(v)}" for k, v in fields.items())
        # the trailer goes on the message's line, before any traceback
        head, sep, tail = text.partition("\n")
        return f"{head} [{trailer}]{sep}{tail}"


def _text_value(value: Any) -> str:
    if isinstance(value, (list, tuple, set, frozenset)):
        return ",".join(str(v) for v in value)
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (ISO-8601, UTC), level, logger, message, the context
    fields that are set, and ``exception`` (the traceback text) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        data.update(_context_of(record))
        for key in REQUEST_FIELDS:
            if record.__dict__.get(key) is not None:
                data[key] = record.__dict__[key]
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["exception"] = record.exc_text
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return json.dumps(data, default=str, ensure_ascii=False)


def configure(level: str = "INFO", log_format: str = "text", *, rich_console: Any = None) -> logging.Handler:
    """Make the root logger write ``log_format`` lines to stderr at ``level`` (once: a
    second call changes the level, or the format by replacing aso's handler). Used by the
    command line and by gunicorn's entry point, so every process logs alike."""
    root = logging.getLogger()
    handler = getattr(root, "_aso_handler", None)
    if handler not in root.handlers:  # taken away (tests restore the handlers they found)
        handler = None
    if handler is not None and getattr(handler, "stream", sys.stderr) is not sys.stderr:
        # stderr was replaced since (a command run in process, as tests and embedders do):
        # lines must go where stderr is now, not to a stream that may be closed
        root.removeHandler(handler)
        handler = None
    if handler is not None and getattr(handler, "_aso_format", None) == log_format:
        root.setLevel(level.upper())
        return handler
    if handler is not None:  # configured before the configuration named another format
        root.removeHandler(handler)
    handler = make_handler(log_format, sys.stderr, rich_console=rich_console)
    handler._aso_format = log_format  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    root._aso_handler = handler  # type: ignore[attr-defined]
    root._aso_configured = True  # type: ignore[attr-defined]
    return handler


def make_handler(log_format: str = "text", stream: Any = None, *, rich_console: Any = None) -> logging.Handler:
    """A handler writing ``log_format`` lines to ``stream`` (stderr), stamped with the
    context. ``rich_console``: on a terminal, rich's handler for the text format (the
    context trailer stays in the message)."""
    if log_format not in FORMATS:
        raise ValueError(f"log format {log_format!r} is not one of {', '.join(FORMATS)}")
    handler: logging.Handler
    if log_format == "text" and rich_console is not None:
        from rich.logging import RichHandler

        handler = RichHandler(console=rich_console, show_path=False)
        handler.setFormatter(TextFormatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
        handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    return handler


#: fields of a request line (:func:`log_requests`): in the JSON object, and in the text message
REQUEST_FIELDS = ("method", "path", "status", "duration_ms", "identity")


def set_component(component: str) -> None:
    """A long-running service (``aso server``, ``aso fts-server``): its lines carry the
    component, and no pass id."""
    global _process
    _process = {"component": component}


def log_requests(app: Any, logger: logging.Logger, identity: Any) -> None:
    """One INFO line per request of Flask ``app``: method, path, status, duration and the
    caller (``identity()``, None when unknown), in the message and as fields. Registered
    first, so its clock starts before authentication."""
    import time

    from flask import g, request

    @app.before_request
    def _start() -> None:
        g.aso_started = time.monotonic()

    @app.after_request
    def _line(response: Any) -> Any:
        started = g.get("aso_started")
        duration = round((time.monotonic() - started) * 1000, 1) if started is not None else None
        try:
            who = identity()
        except Exception:  # noqa: BLE001 - a request line must never fail the request
            who = None
        # scrapes and health checks come every few seconds: not worth an INFO line each
        level = logging.DEBUG if request.path in ("/metrics", "/healthz") else logging.INFO
        logger.log(level, "%s %s %d %s ms by %s", request.method, request.path, response.status_code, duration,
                   who or "-", extra={"method": request.method, "path": request.path,
                                      "status": response.status_code, "duration_ms": duration, "identity": who})
        return response
