"""Delegated credentials of the embedded FTS service, in SQLite.

Two tables, as FTS3 has them: pending delegation requests (the CSR and its private key,
keyed by delegation id and DN, re-served while cached) and delegated proxies (certificate the
client signed + our key + the client's chain, with the chain's earliest expiry).
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS t_credential_cache (
    dlg_id       TEXT NOT NULL,
    dn           TEXT NOT NULL,
    cert_request TEXT NOT NULL,
    priv_key     TEXT NOT NULL,
    created      REAL NOT NULL,
    PRIMARY KEY (dlg_id, dn)
);
CREATE TABLE IF NOT EXISTS t_credential (
    dlg_id           TEXT NOT NULL,
    dn               TEXT NOT NULL,
    proxy            TEXT NOT NULL,
    voms_attrs       TEXT NOT NULL,
    termination_time REAL NOT NULL,
    PRIMARY KEY (dlg_id, dn)
);
"""


@dataclass(frozen=True)
class PendingRequest:
    dlg_id: str
    dn: str
    csr_pem: str
    key_pem: str = field(repr=False)


@dataclass(frozen=True)
class StoredCredential:
    dlg_id: str
    dn: str
    #: grid proxy file layout: delegated certificate, its private key, the client's chain
    proxy_pem: str = field(repr=False)
    voms_attrs: tuple[str, ...]
    #: aware UTC; the earliest notAfter of the delegated chain
    termination_time: dt.datetime

    def remaining(self, now: dt.datetime | None = None) -> dt.timedelta:
        return self.termination_time - (now or dt.datetime.now(dt.UTC))


class CredentialStore:
    """Thread-safe (one short-lived connection per call); shares the service's database file."""

    def __init__(self, db_path: str | Path):
        self.db_path = str(db_path)
        with self._connect() as conn:
            conn.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout = 30000")
            yield conn
        finally:
            conn.close()

    # -- delegation requests -------------------------------------------------------------

    def pending_request(self, dlg_id: str, dn: str) -> PendingRequest | None:
        with self._connect() as conn:
            row = conn.execute(
                "SELECT cert_request, priv_key FROM t_credential_cache WHERE dlg_id = ? AND dn = ?",
                (dlg_id, dn),
            ).fetchone()
        return PendingRequest(dlg_id, dn, row[0], row[1]) if row else None

    def save_request(self, dlg_id: str, dn: str, csr_pem: str, key_pem: str) -> PendingRequest:
        """Record a request unless one is already cached; returns the one that is cached, so
        two concurrent first requests end up serving the same CSR."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT OR IGNORE INTO t_credential_cache (dlg_id, dn, cert_request, priv_key, created)"
                " VALUES (?, ?, ?, ?, ?)",
                (dlg_id, dn, csr_pem, key_pem, dt.datetime.now(dt.UTC).timestamp()),
            )
            row = conn.execute(
                "SELECT cert_request, priv_key FROM t_credential_cache WHERE dlg_id = ? AND dn = ?",
                (dlg_id, dn),
            ).fetchone()
            conn.execute("COMMIT")
        return PendingRequest(dlg_id, dn, row[0], row[1])

    # -- delegated credentials -----------------------------------------------------------

    def save(self, dlg_id: str, dn: str, proxy_pem: str, voms_attrs: tuple[str, ...], termination_time: dt.datetime) -> StoredCredential:
        if termination_time.tzinfo is None:
            raise ValueError("termination_time must be timezone-aware")
        with self._connect() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO t_credential (dlg_id, dn, proxy, voms_attrs, termination_time)"
                " VALUES (?, ?, ?, ?, ?)",
                (dlg_id, dn, proxy_pem, json.dumps(list(voms_attrs)), termination_time.timestamp()),
            )
        return StoredCredential(dlg_id, dn, proxy_pem, tuple(voms_attrs), termination_time)

    def get(self, dlg_id: str, dn: str | None = None) -> StoredCredential | None:
        """The credential delegated under ``dlg_id`` (by ``dn`` when given)."""
        query = "SELECT dlg_id, dn, proxy, voms_attrs, termination_time FROM t_credential WHERE dlg_id = ?"
        args: tuple = (dlg_id,)
        if dn is not None:
            query += " AND dn = ?"
            args += (dn,)
        with self._connect() as conn:
            row = conn.execute(query + " ORDER BY termination_time DESC LIMIT 1", args).fetchone()
        if row is None:
            return None
        return StoredCredential(
            row[0], row[1], row[2], tuple(json.loads(row[3])),
            dt.datetime.fromtimestamp(row[4], dt.UTC),
        )

    def delete(self, dlg_id: str, dn: str) -> bool:
        """Forget a delegated credential and its pending request; False if there was none."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            gone = conn.execute("DELETE FROM t_credential WHERE dlg_id = ? AND dn = ?", (dlg_id, dn)).rowcount
            conn.execute("DELETE FROM t_credential_cache WHERE dlg_id = ? AND dn = ?", (dlg_id, dn))
            conn.execute("COMMIT")
        return gone > 0
