"""Store-and-forward outbox: sightings wait here until the server has them.

Why SQLite (WAL, ``synchronous=FULL``): a committed ``put`` survives a daemon
crash, ``kill -9`` and a power cut, and the file needs no server. Delivery is
at-least-once (an entry is deleted only after the server answered for it);
the server makes it exactly-once in effect, because every sighting carries a
deterministic client id and a re-sent one is stored only once.

Disk use is bounded by ``max_bytes``. Drop policy when full: the *oldest*
entries go first (a stale sighting is worth less than a fresh one to the
recurrence rule, which looks at recent days), and every dropped entry is
counted in a persistent counter that the heartbeat reports. Entries the server
rejects as invalid (a 4xx for that item) move to a ``dead`` table instead of
being retried forever or deleted silently.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from edge.wire import SightingIn

log = logging.getLogger(__name__)

MAX_DEAD = 10_000
"""Rejected sightings kept for inspection; older ones are deleted (and counted)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    size INTEGER NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_created ON outbox (created_at);
CREATE TABLE IF NOT EXISTS dead (
    id TEXT PRIMARY KEY,
    failed_at REAL NOT NULL,
    error TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    id: str
    attempts: int
    sighting: SightingIn


@dataclass(frozen=True, slots=True)
class OutboxStats:
    depth: int
    bytes: int
    dropped: int
    dead: int
    delivered: int
    queued: int = 0
    """Sightings ever accepted by :meth:`Outbox.put` (a persistent counter)."""


class Outbox:
    """A durable FIFO of sightings, safe to share between threads."""

    def __init__(self, path: Path, *, max_bytes: int = 512 * 1024 * 1024) -> None:
        if max_bytes < 64 * 1024:
            raise ValueError("max_bytes must be at least 64 KiB")
        self.path = path
        self.max_bytes = max_bytes
        path.parent.mkdir(parents=True, exist_ok=True)
        # One connection guarded by a lock: the outbox sees a few writes a
        # second at most, and this keeps sqlite3's threading rules simple.
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @staticmethod
    def _bump(conn: sqlite3.Connection, name: str, by: int) -> None:
        conn.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            (name, by),
        )

    def put(self, sighting: SightingIn) -> bool:
        """Store one sighting durably; False if its id was already queued."""
        payload = sighting.model_dump_json()
        size = len(payload)
        if size > self.max_bytes:
            raise ValueError(f"sighting {sighting.id} ({size} bytes) exceeds the outbox size")
        with self._tx() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO outbox (id, created_at, size, payload) VALUES (?, ?, ?, ?)",
                (str(sighting.id), time.time(), size, payload),
            )
            if cur.rowcount == 0:
                return False
            # Every sighting ever queued, in the same transaction as the row:
            # queued == delivered + depth + dropped + dead always holds.
            self._bump(conn, "queued", 1)
            self._enforce_limit(conn)
        return True

    def _enforce_limit(self, conn: sqlite3.Connection) -> None:
        (total,) = conn.execute("SELECT COALESCE(SUM(size), 0) FROM outbox").fetchone()
        if total <= self.max_bytes:
            return
        excess = total - self.max_bytes
        dropped = 0
        freed = 0
        for row_id, size in conn.execute(
            "SELECT id, size FROM outbox ORDER BY created_at, id"
        ).fetchall():
            if freed >= excess:
                break
            conn.execute("DELETE FROM outbox WHERE id = ?", (row_id,))
            freed += size
            dropped += 1
        self._bump(conn, "dropped", dropped)
        log.warning("outbox full (%d bytes): dropped the %d oldest sightings", total, dropped)

    def peek(self, limit: int) -> list[OutboxEntry]:
        """The oldest ``limit`` entries, left in place until acked."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, attempts, payload FROM outbox ORDER BY created_at, id LIMIT ?",
                (limit,),
            ).fetchall()
        return [
            OutboxEntry(id=r[0], attempts=r[1], sighting=SightingIn.model_validate_json(r[2]))
            for r in rows
        ]

    def ack(self, ids: list[str]) -> None:
        """The server has these: delete them."""
        if not ids:
            return
        with self._tx() as conn:
            cur = conn.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])
            # rowcount, not len(ids): an id acked twice is delivered once.
            self._bump(conn, "delivered", max(0, cur.rowcount))

    def fail(self, ids: list[str]) -> None:
        """A delivery attempt for these failed in a retryable way."""
        with self._tx() as conn:
            conn.executemany(
                "UPDATE outbox SET attempts = attempts + 1 WHERE id = ?", [(i,) for i in ids]
            )

    def bury(self, item_errors: dict[str, str]) -> None:
        """Move entries the server rejected as invalid to the dead table."""
        if not item_errors:
            return
        now = time.time()
        with self._tx() as conn:
            for entry_id, error in item_errors.items():
                row = conn.execute(
                    "SELECT payload FROM outbox WHERE id = ?", (entry_id,)
                ).fetchone()
                if row is None:
                    continue
                conn.execute(
                    "INSERT OR REPLACE INTO dead (id, failed_at, error, payload) "
                    "VALUES (?, ?, ?, ?)",
                    (entry_id, now, error, row[0]),
                )
                conn.execute("DELETE FROM outbox WHERE id = ?", (entry_id,))
            # The dead table is for an operator to inspect, not an archive: keep
            # the newest MAX_DEAD so a server that rejects everything cannot
            # fill the disk through it.
            cur = conn.execute(
                "DELETE FROM dead WHERE id IN "
                "(SELECT id FROM dead ORDER BY failed_at DESC, id LIMIT -1 OFFSET ?)",
                (MAX_DEAD,),
            )
            if cur.rowcount > 0:
                self._bump(conn, "dead_dropped", cur.rowcount)

    def stats(self) -> OutboxStats:
        with self._lock:
            depth, nbytes = self._conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox"
            ).fetchone()
            (dead,) = self._conn.execute("SELECT COUNT(*) FROM dead").fetchone()
            counters = dict(self._conn.execute("SELECT name, value FROM counters").fetchall())
        return OutboxStats(
            depth=depth,
            bytes=nbytes,
            dropped=counters.get("dropped", 0),
            dead=dead,
            delivered=counters.get("delivered", 0),
            queued=counters.get("queued", 0),
        )
