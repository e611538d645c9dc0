"""The control plane's durable state, in SQLite: actors, workers, snapshots, sandboxes,
activations. A restarted control plane reads it to know which actors exist, which
snapshot each has, and which sandboxes may still be running (to save them first)."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS actors (
    id TEXT PRIMARY KEY,
    template TEXT NOT NULL,
    snapshot_version INTEGER NOT NULL DEFAULT 0,
    created_unix REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshots (
    actor TEXT NOT NULL,
    version INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    created_unix REAL NOT NULL,
    PRIMARY KEY (actor, version)
);
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY,
    netns TEXT NOT NULL,
    actor_ip TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sandboxes (
    id TEXT PRIMARY KEY,
    actor TEXT NOT NULL,
    worker TEXT NOT NULL,
    netns TEXT NOT NULL,
    status TEXT NOT NULL,          -- starting, running, stopped
    started_unix REAL NOT NULL,
    stopped_unix REAL
);
CREATE TABLE IF NOT EXISTS activations (
    sandbox TEXT PRIMARY KEY,
    actor TEXT NOT NULL,
    worker TEXT NOT NULL,
    kind TEXT NOT NULL,            -- cold or restore
    version INTEGER NOT NULL,
    ok INTEGER NOT NULL,
    seconds REAL NOT NULL,
    finished_unix REAL NOT NULL
);
"""


@dataclass(frozen=True)
class ActorRow:
    """An actor as stored."""

    id: str
    template: str
    snapshot_version: int


@dataclass(frozen=True)
class SandboxRow:
    """A sandbox that was not known to be stopped."""

    id: str
    actor: str
    worker: str
    netns: str
    status: str


class StateDB:
    """The SQLite database at ``path`` (WAL mode: readers never block the control plane)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(SCHEMA)

    def close(self) -> None:
        """Close the database."""
        self.conn.close()

    # actors and snapshots
    def add_actor(self, actor: str, template: str, version: int = 0) -> None:
        """Record a new actor."""
        self.conn.execute(
            "INSERT INTO actors (id, template, snapshot_version, created_unix) VALUES (?,?,?,?)",
            (actor, template, version, time.time()),
        )

    def actors(self) -> list[ActorRow]:
        """Every actor, in creation order."""
        rows = self.conn.execute(
            "SELECT id, template, snapshot_version FROM actors ORDER BY rowid"
        ).fetchall()
        return [ActorRow(*row) for row in rows]

    def snapshot_committed(self, actor: str, version: int, size: int) -> None:
        """A complete snapshot is in place and is now the actor's latest."""
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.execute(
                "INSERT OR REPLACE INTO snapshots VALUES (?,?,?,?)",
                (actor, version, size, time.time()),
            )
            self.conn.execute("UPDATE actors SET snapshot_version=? WHERE id=?", (version, actor))

    def delete_actor(self, actor: str) -> None:
        """Forget an actor and its snapshots."""
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.execute("DELETE FROM snapshots WHERE actor=?", (actor,))
            self.conn.execute("DELETE FROM actors WHERE id=?", (actor,))

    # workers and sandboxes
    def set_workers(self, rows: list[tuple[str, str, str]]) -> None:
        """The current workers as (id, netns, actor ip)."""
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.execute("DELETE FROM workers")
            self.conn.executemany("INSERT INTO workers VALUES (?,?,?)", rows)

    def sandbox_started(self, sandbox: str, actor: str, worker: str, netns: str) -> None:
        """A sandbox is being started or restored."""
        self.conn.execute(
            "INSERT OR REPLACE INTO sandboxes VALUES (?,?,?,?,'running',?,NULL)",
            (sandbox, actor, worker, netns, time.time()),
        )

    def sandbox_stopped(self, sandbox: str) -> None:
        """A sandbox is gone (checkpointed, failed or killed)."""
        self.conn.execute(
            "UPDATE sandboxes SET status='stopped', stopped_unix=? WHERE id=?",
            (time.time(), sandbox),
        )

    def live_sandboxes(self) -> list[SandboxRow]:
        """Sandboxes not known to be stopped (after a crash: maybe still running)."""
        rows = self.conn.execute(
            "SELECT id, actor, worker, netns, status FROM sandboxes WHERE status != 'stopped'"
        ).fetchall()
        return [SandboxRow(*row) for row in rows]

    def activation(
        self, sandbox: str, *, actor: str, worker: str, kind: str, version: int, ok: bool,
        secs: float,
    ) -> None:  # fmt: skip
        """Record how an activation went."""
        self.conn.execute(
            "INSERT OR REPLACE INTO activations VALUES (?,?,?,?,?,?,?,?)",
            (sandbox, actor, worker, kind, version, int(ok), secs, time.time()),
        )
