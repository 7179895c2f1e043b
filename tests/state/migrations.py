"""A state database taken back to what an older schema version made, for migration tests."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from aso.state.store import Store


def rewound_database(path: Path, version: int, *statements: str) -> str:
    """Create a current SQLite state database at ``path``, undo the later versions' changes
    with ``statements`` and forget their migrations (those after ``version``), so that the
    next opening migrates it again; answers its URL."""
    url = f"sqlite:///{path}"
    Store(url).close()
    with sqlite3.connect(path) as db:
        for statement in statements:
            db.execute(statement)
        db.execute("DELETE FROM schema_version WHERE version > ?", (version,))
    return url
