"""Which live worker owns a user's work: rendezvous (highest random weight) hashing.

Every worker of a component scores each user with a stable hash of (worker, user); the
highest score owns the user. When a worker joins or leaves, only the users whose highest
score was (or becomes) that worker's change owner: everybody else keeps theirs, so a host
that dies hands over exactly its own users and nobody else's. The hash is sha256, never
Python's ``hash()``, which differs between processes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def _score(worker: str, user: str) -> bytes:
    return hashlib.sha256(f"{worker}\0{user}".encode()).digest()


def owner(user: str, workers: Iterable[str]) -> str | None:
    """The worker of ``workers`` that owns ``user`` (None when there is no worker); ties,
    which need a sha256 collision, go to the smaller name."""
    best: tuple[bytes, str] | None = None
    for worker in workers:
        key = (_score(worker, user), worker)
        if best is None or key[0] > best[0] or (key[0] == best[0] and worker < best[1]):
            best = key
    return None if best is None else best[1]


def shares(users: Iterable[str], workers: Iterable[str]) -> dict[str, list[str]]:
    """Each worker's users (every worker of ``workers`` appears, perhaps with none)."""
    names = sorted(set(workers))
    out: dict[str, list[str]] = {w: [] for w in names}
    for user in users:
        who = owner(user, names)
        if who is not None:
            out[who].append(user)
    return out


def mine(users: Iterable[str], worker: str, workers: Iterable[str] | None) -> tuple[list[str], list[str]]:
    """(users ``worker`` owns, the others) among ``workers``, the live workers of a
    component; ``worker`` always counts as live (it asks), and ``workers`` None (no
    heartbeat data) means it is alone: it owns everyone, as a single host always did."""
    users = list(users)
    if workers is None:
        return users, []
    live = set(workers) | {worker}
    if len(live) == 1:
        return users, []
    own, others = [], []
    for user in users:
        (own if owner(user, live) == worker else others).append(user)
    return own, others
