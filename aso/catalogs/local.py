"""The embedded catalog: datasets, blocks and files in an SQLite (or any SQLAlchemy) database."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    insert,
    select,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError

from aso.catalogs.base import Block, Catalog
from aso.errors import ValidationError

metadata = MetaData()
datasets = Table(
    "datasets",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(500), nullable=False, unique=True),
    Column("created", BigInteger, nullable=False),
)
blocks = Table(
    "blocks",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(600), nullable=False, unique=True),
    Column("dataset_id", Integer, ForeignKey("datasets.id"), nullable=False, index=True),
    Column("file_count", Integer, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("created", BigInteger, nullable=False),
)
files = Table(
    "files",
    metadata,
    Column("lfn", String(1000), primary_key=True),
    Column("block_id", Integer, ForeignKey("blocks.id"), nullable=False, index=True),
    Column("dataset_id", Integer, ForeignKey("datasets.id"), nullable=False, index=True),
    Column("size", BigInteger, nullable=False),
    Column("adler32", String(8), nullable=False),
    Column("metadata", Text, nullable=False),
)


def _create_tables(engine, attempts: int = 5) -> None:
    """Create the catalog's tables unless they exist. Several publishers (one per host)
    may open a new catalog at the same instant: between one's check and its CREATE another
    may have made the table, so a failed attempt is repeated, and the check then sees it."""
    for attempt in range(attempts):
        try:
            metadata.create_all(engine, checkfirst=True)
            return
        except DBAPIError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


class LocalCatalog(Catalog):
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_engine(url)
        #: the publisher's threads write blocks one at a time, on any database: a block's
        #: check that its dataset exists and the dataset's insert must not interleave with
        #: another thread's; and on SQLite they queue here instead of in its busy handler,
        #: which sleeps up to 100 ms between tries (at 300,000 files the threads slept
        #: through 50 of a pass's 60 s)
        self._writing = threading.Lock()
        if self.engine.dialect.name == "sqlite":
            @event.listens_for(self.engine, "connect")
            def _pragmas(dbapi_conn, _record) -> None:
                # SQLAlchemy's "begin" event issues BEGIN, so a block's write can take the
                # write lock at its start (another process's writer: the busy handler)
                dbapi_conn.isolation_level = None
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.close()

            @event.listens_for(self.engine, "begin")
            def _begin(conn) -> None:
                conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.pop("immediate", False) else "BEGIN")
        _create_tables(self.engine)

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """One block's transaction, holding the write lock from its first statement: the
        check that the block and its dataset are new and their inserts are one step (two
        threads publishing a dataset's first blocks both found it missing, and one failed)."""
        with self._writing, self.engine.connect() as conn:
            conn.info["immediate"] = True
            with conn.begin():
                yield conn

    def publish_block(self, block: Block) -> bool:
        if not block.files:
            raise ValidationError("files", "a block needs at least one file")
        if not block.name.startswith(block.dataset + "#"):
            raise ValidationError("block", f"{block.name!r} is not named <dataset>#<id>")
        now = int(time.time())
        try:
            with self._write() as conn:
                if conn.execute(select(blocks.c.id).where(blocks.c.name == block.name)).first():
                    return False
                ds_id = conn.execute(select(datasets.c.id).where(datasets.c.name == block.dataset)).scalar()
                if ds_id is None:
                    ds_id = conn.execute(insert(datasets).values(name=block.dataset, created=now)).inserted_primary_key[0]
                block_id = conn.execute(
                    insert(blocks).values(
                        name=block.name,
                        dataset_id=ds_id,
                        file_count=len(block.files),
                        size=sum(f.size for f in block.files),
                        created=now,
                    )
                ).inserted_primary_key[0]
                conn.execute(
                    insert(files),
                    [
                        {
                            "lfn": f.lfn,
                            "block_id": block_id,
                            "dataset_id": ds_id,
                            "size": f.size,
                            "adler32": f.adler32,
                            "metadata": json.dumps(f.metadata, sort_keys=True),
                        }
                        for f in block.files
                    ],
                )
        except IntegrityError as exc:
            # A concurrent publisher committed the same block first; ours rolled back whole.
            with self.engine.connect() as conn:
                if conn.execute(select(blocks.c.id).where(blocks.c.name == block.name)).first():
                    return False
            raise ValidationError("files", f"a file of block {block.name} is already in the catalog: {exc.orig}") from None
        return True

    def dataset_files(self, dataset: str) -> dict[str, str]:
        query = (
            select(files.c.lfn, blocks.c.name)
            .join(blocks, files.c.block_id == blocks.c.id)
            .join(datasets, files.c.dataset_id == datasets.c.id)
            .where(datasets.c.name == dataset)
        )
        with self.engine.connect() as conn:
            return {lfn: name for lfn, name in conn.execute(query)}

    def listing(self, dataset: str | None = None) -> list[dict[str, Any]]:
        """Datasets with their blocks and files (for ``aso catalog list``)."""
        query = (
            select(datasets.c.name.label("dataset"), blocks.c.name.label("block"), files.c.lfn, files.c.size, files.c.adler32)
            .join(blocks, files.c.block_id == blocks.c.id)
            .join(datasets, files.c.dataset_id == datasets.c.id)
            .order_by(datasets.c.name, blocks.c.name, files.c.lfn)
        )
        if dataset is not None:
            query = query.where(datasets.c.name == dataset)
        out: dict[str, dict[str, Any]] = {}
        with self.engine.connect() as conn:
            for row in conn.execute(query):
                ds = out.setdefault(row.dataset, {"dataset": row.dataset, "blocks": {}})
                blk = ds["blocks"].setdefault(row.block, {"block": row.block, "files": []})
                blk["files"].append({"lfn": row.lfn, "size": row.size, "adler32": row.adler32})
        return [{"dataset": d["dataset"], "blocks": list(d["blocks"].values())} for d in out.values()]

    def close(self) -> None:
        self.engine.dispose()
