"""The state store: every query on transfers, tasks and file metadata.

One package owns the SQL (SQLAlchemy Core), so SQLite and PostgreSQL run the same code.
Every operation works on a batch: one statement, or one ``executemany``, per batch (IN
lists are chunked to stay under the databases' parameter limits). State changes are checked
against ``aso.state.states`` before anything is written, and a call is all-or-nothing.

Read it top-down: ``engine`` (connections, transactions, migrations, shared helpers), then
one module per resource: ``injection``, ``transfers`` (reads and the pipeline), ``kills``
(kills and operator retries), ``publication``, ``tasks`` (tasks and file metadata),
``archive`` (finished rows out of the live table).
:class:`Store` is all of them together.
"""

from aso.state.store.archive import Archive
from aso.state.store.engine import StoreEngine
from aso.state.store.heartbeats import Heartbeats
from aso.state.store.injection import Injection
from aso.state.store.kills import Kills
from aso.state.store.passes import Passes
from aso.state.store.publication import Publication
from aso.state.store.tasks import Tasks
from aso.state.store.transfers import Transfers


class Store(Injection, Transfers, Kills, Publication, Tasks, Passes, Heartbeats, Archive):
    """The store behind both backends; ``worker``/``owner`` are explicit arguments.

    ``Store(url, max_retry=..., publication_max_retry=...)`` opens (and migrates) the
    database; each base class adds the queries of one resource on the shared
    :class:`StoreEngine`.
    """


__all__ = ["Store", "StoreEngine"]
