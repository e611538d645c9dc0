"""The control plane's durable state, in SQLite: actors (with their owner and
generation fence), sandboxes, activations, reported losses and scheduled wake-ups.
Snapshots are not recorded here: the snapshot store is their only source of truth
(``store.py``).

A restarted control plane reads it to know which actors exist, which sandboxes may
still be running (to save them first) and the newest generation of every actor, so
generations keep increasing and a stale sandbox can never commit. Every write
commits with ``synchronous=FULL``; the driver runs them on one worker thread
(:meth:`StateDB.offload`), off its event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ParamSpec, TypeVar

from backends.state import ActorExists, ActorRow, LossRow, SandboxRow, StaleGeneration, WakeRow

SCHEMA_VERSION = 3  # 3: actors.owner, wakes (a version 2 database is migrated)
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS actors (
    id TEXT PRIMARY KEY,
    template TEXT NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0,   -- newest activation: the fence
    created_unix REAL NOT NULL,
    owner TEXT NOT NULL DEFAULT ''           -- its tenant ('' for none)
);
CREATE TABLE IF NOT EXISTS wakes (
    id INTEGER PRIMARY KEY,
    actor TEXT NOT NULL,
    at_unix REAL NOT NULL          -- when it is due (wall clock: it survives restarts)
);
CREATE TABLE IF NOT EXISTS sandboxes (
    id TEXT PRIMARY KEY,
    actor TEXT NOT NULL,
    worker TEXT NOT NULL,
    netns TEXT NOT NULL,
    generation INTEGER NOT NULL,
    status TEXT NOT NULL,          -- starting, running (served), stopping, stopped
    started_unix REAL NOT NULL,
    stopped_unix REAL
);
CREATE TABLE IF NOT EXISTS activations (
    sandbox TEXT PRIMARY KEY,
    actor TEXT NOT NULL,
    worker TEXT NOT NULL,
    kind TEXT NOT NULL,            -- cold or restore
    version INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    seconds REAL NOT NULL,
    finished_unix REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS losses (
    id INTEGER PRIMARY KEY,
    actor TEXT NOT NULL,
    generation INTEGER NOT NULL,
    version INTEGER NOT NULL,      -- the snapshot the actor continues from
    reason TEXT NOT NULL,
    requests TEXT NOT NULL,        -- JSON list of acknowledged request ids lost (if known)
    known INTEGER NOT NULL,        -- 1: that list is complete
    at_unix REAL NOT NULL
);
"""

P = ParamSpec("P")
T = TypeVar("T")


class StateDBError(RuntimeError):
    """The database is not one this version of actormux can use."""


class StateDB:
    """The SQLite database at ``path`` (created 0600; WAL; synchronous=FULL)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(path, 0o600)
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.executescript(SCHEMA)
        row = self.conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if row is None:
            if self.conn.execute("SELECT count(*) FROM actors").fetchone()[0]:
                raise StateDBError(f"{path} was written by an older actormux; use a new state dir")
            self.conn.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) == 2:  # version 2 had no owners (its wakes table is new above)
            with self.conn:
                self.conn.execute("BEGIN IMMEDIATE")
                self.conn.execute("ALTER TABLE actors ADD COLUMN owner TEXT NOT NULL DEFAULT ''")
                self.conn.execute("UPDATE meta SET value=? WHERE key='schema'",
                                  (str(SCHEMA_VERSION),))  # fmt: skip
        elif int(row[0]) != SCHEMA_VERSION:
            raise StateDBError(f"{path} has schema {row[0]}, this actormux needs {SCHEMA_VERSION}")
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="statedb")

    def close(self) -> None:
        """Finish pending writes and close the database."""
        self._thread.shutdown(wait=True)
        self.conn.close()

    async def offload(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn`` (a method of this database) on its own thread, off the event loop;
        writes stay in the order they were issued."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, lambda: fn(*args, **kwargs))

    # ------------------------------------------------------------ actors

    def add_actor(self, actor: str, template: str, owner: str = "") -> None:
        """Record a new actor (:class:`ActorExists` if its id is taken)."""
        try:
            self.conn.execute(
                "INSERT INTO actors (id, template, generation, created_unix, owner) "
                "VALUES (?,?,0,?,?)",
                (actor, template, time.time(), owner),
            )
        except sqlite3.IntegrityError:
            raise ActorExists(f"actor {actor!r} already exists") from None

    def actors(self) -> list[ActorRow]:
        """Every actor, in creation order."""
        rows = self.conn.execute(
            "SELECT id, template, generation, owner FROM actors ORDER BY rowid"
        ).fetchall()
        return [ActorRow(*row) for row in rows]

    def has_actor(self, actor: str) -> bool:
        """True if ``actor`` is recorded."""
        return self.conn.execute("SELECT 1 FROM actors WHERE id=?", (actor,)).fetchone() is not None

    def generation(self, actor: str) -> int:
        """The newest generation of ``actor`` (the fence a checkpoint must match)."""
        row = self.conn.execute("SELECT generation FROM actors WHERE id=?", (actor,)).fetchone()
        if row is None:
            raise KeyError(actor)
        return int(row[0])

    def raise_generation(self, actor: str, generation: int) -> None:
        """Make ``generation`` at least the actor's newest (e.g. found in the store)."""
        self.conn.execute(
            "UPDATE actors SET generation=max(generation, ?) WHERE id=?", (generation, actor)
        )

    def delete_actor(self, actor: str) -> None:
        """Forget an actor (and its wake-ups)."""
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute("DELETE FROM actors WHERE id=?", (actor,))
            self.conn.execute("DELETE FROM wakes WHERE actor=?", (actor,))

    # ------------------------------------------------------------ wake-ups

    def add_wake(self, actor: str, at_unix: float) -> int:
        """Record a wake-up ``actor`` scheduled for ``at_unix``; its id."""
        cursor = self.conn.execute(
            "INSERT INTO wakes (actor, at_unix) VALUES (?,?)", (actor, at_unix)
        )
        assert cursor.lastrowid is not None
        return int(cursor.lastrowid)

    def remove_wake(self, wake: int) -> None:
        """A wake-up was delivered (or refused): forget it."""
        self.conn.execute("DELETE FROM wakes WHERE id=?", (wake,))

    def wakes(self) -> list[WakeRow]:
        """Every wake-up not yet delivered, soonest first."""
        rows = self.conn.execute(
            "SELECT id, actor, at_unix FROM wakes ORDER BY at_unix, id"
        ).fetchall()
        return [WakeRow(*row) for row in rows]

    # ------------------------------------------------------------ sandboxes

    def begin_activation(
        self, actor: str, generation: int, sandbox: str, worker: str, netns: str
    ) -> None:
        """Fence and record a sandbox before it starts: ``generation`` becomes the actor's
        newest, or :class:`StaleGeneration` if a newer one exists."""
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            updated = self.conn.execute(
                "UPDATE actors SET generation=? WHERE id=? AND generation<?",
                (generation, actor, generation),
            ).rowcount
            if updated != 1:
                why = f"{actor}: generation {generation} is not newer than the fence"
                raise StaleGeneration(why)
            self.conn.execute(
                "INSERT OR REPLACE INTO sandboxes VALUES (?,?,?,?,?,'starting',?,NULL)",
                (sandbox, actor, worker, netns, generation, time.time()),
            )

    def sandbox_running(self, sandbox: str) -> None:
        """A sandbox answered its readiness probe: from now on it may acknowledge requests."""
        self.conn.execute("UPDATE sandboxes SET status='running' WHERE id=?", (sandbox,))

    def sandbox_stopping(self, sandbox: str) -> None:
        """The control plane ends a sandbox whose state is not needed (an abandoned or
        failed activation) or whose loss it has recorded: after a crash, its absence is
        no news."""
        self.conn.execute("UPDATE sandboxes SET status='stopping' WHERE id=?", (sandbox,))

    def sandbox_stopped(self, sandbox: str) -> None:
        """A sandbox is gone (checkpointed, failed or killed)."""
        self.conn.execute(
            "UPDATE sandboxes SET status='stopped', stopped_unix=? WHERE id=?",
            (time.time(), sandbox),
        )

    def live_sandboxes(self) -> list[SandboxRow]:
        """Sandboxes not known to be stopped (after a crash: maybe still running)."""
        rows = self.conn.execute(
            "SELECT id, actor, worker, netns, generation, status FROM sandboxes "
            "WHERE status != 'stopped' ORDER BY started_unix"
        ).fetchall()
        return [SandboxRow(*row) for row in rows]

    def netns_of(self, sandbox: str) -> str | None:
        """The network namespace a sandbox was started in."""
        row = self.conn.execute("SELECT netns FROM sandboxes WHERE id=?", (sandbox,)).fetchone()
        return None if row is None else str(row[0])

    def activation(
        self, sandbox: str, *, actor: str, worker: str, kind: str, version: int, outcome: str,
        seconds: float,
    ) -> None:  # fmt: skip
        """Record how an activation went."""
        self.conn.execute(
            "INSERT OR REPLACE INTO activations VALUES (?,?,?,?,?,?,?,?)",
            (sandbox, actor, worker, kind, version, outcome, seconds, time.time()),
        )

    # ------------------------------------------------------------ losses

    def record_loss(
        self, actor: str, generation: int, version: int, reason: str,
        requests: Sequence[str], *, known: bool,
    ) -> None:  # fmt: skip
        """Report that what ``actor`` acknowledged after snapshot ``version`` is lost."""
        self.conn.execute(
            "INSERT INTO losses (actor, generation, version, reason, requests, known, at_unix) "
            "VALUES (?,?,?,?,?,?,?)",
            (actor, generation, version, reason, json.dumps(list(requests)), int(known),
             time.time()),
        )  # fmt: skip

    def losses(self) -> list[LossRow]:
        """Every reported loss, oldest first."""
        rows = self.conn.execute(
            "SELECT actor, generation, version, reason, requests, known, at_unix FROM losses "
            "ORDER BY id"
        ).fetchall()
        return [
            LossRow(a, g, v, r, tuple(json.loads(q)), bool(k), t) for a, g, v, r, q, k, t in rows
        ]
