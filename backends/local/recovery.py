"""Recovery after a crash: make the snapshot store and the sandboxes agree again,
saving everything that can be saved and reporting precisely what cannot.

Run before a restarted backend serves, and by ``actormux cleanup``. In order:

1. wait for checkpoints that outlived the crashed control plane (each holds the flock
   of its temporary directory; see ``store.py``);
2. for every sandbox the database does not know to be stopped:
   a. if a checkpoint of exactly that activation completed, commit it;
   b. else if it still runs and is the actor's newest activation, checkpoint it now,
      after resetting the dead control plane's connections to it and waiting until it
      answers (a half-open connection makes a checkpoint destroy the sandbox);
   c. else if it is an older activation (fenced), kill it: its state is not the actor's;
   d. else (it died) report a loss if it had served and was not ended on purpose
      (``stopping``: abandoned, failed, or its loss already recorded) and the actor's
      newest snapshot is not its own checkpoint, then remove it;
3. finish every other complete, unfenced, newer interrupted checkpoint; discard the rest.

Nothing here decides by process name: sandboxes by container id, from the database
and runsc's own state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from backends.gvisor import tcpstate
from backends.gvisor.httpclient import ActorHTTPError
from backends.gvisor.names import WorkerNames
from backends.gvisor.probe import wait_idle, wait_ready
from backends.gvisor.proc import CommandError
from backends.gvisor.runsc import Runsc
from backends.local.db import StateDB
from backends.local.store import PendingCheckpoint, SnapshotStore, wait_for_writer
from backends.state import SandboxRow

log = logging.getLogger("actormux.local")
SETTLE_TIMEOUT_S = 60.0  # how long a sandbox may stay "creating" (an orphaned restore)
IDLE_TIMEOUT_S = 75.0  # the longest request an actor works on (60 s) and some
QUIESCE_S = 1.5  # after an outlived sandbox answers, before its checkpoint (as DIRTY_SETTLE_S)


@dataclass
class RecoveryReport:
    """What recovery did, one line per action, and the losses it reported."""

    actions: list[str] = field(default_factory=list)
    losses: list[str] = field(default_factory=list)

    def note(self, line: str) -> None:
        """Record (and log) one action."""
        log.warning("recovery: %s", line)
        self.actions.append(line)


def netns_path(runsc: Runsc, row: SandboxRow) -> str | None:
    """A way into the sandbox's network namespace, if one still exists."""
    named = Path(f"/var/run/netns/{row.netns}")
    return str(named) if named.exists() else runsc.netns_of(row.id)


async def _status(runsc: Runsc, cid: str, path: str | None) -> str:
    """runsc's status of ``cid`` once it is no longer being created ("gone" if unknown)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        state = await runsc.state(cid, path) if path else None
        status = str(state.get("status")) if state else "gone"
        if status != "creating" or time.monotonic() > deadline:
            return status
        await asyncio.sleep(0.2)


async def recover(
    runsc: Runsc, store: SnapshotStore, db: StateDB, *, writer_timeout_s: float = 300.0,
    actor_port: int = 8080,
) -> RecoveryReport:  # fmt: skip
    """Bring ``store`` and the sandboxes under ``runsc`` back in line (module docstring)."""
    ctx = _Context(runsc, store, db, RecoveryReport(), actor_port)
    for pending in store.pending():
        if not await asyncio.to_thread(wait_for_writer, pending.path, writer_timeout_s):
            ctx.report.note(f"checkpoint writer of {pending.path.name} still busy; left alone")
    for row in db.live_sandboxes():
        await _settle(ctx, row)
    for pending in store.pending():
        _finish_or_discard(ctx, pending)
    return ctx.report


@dataclass
class _Context:
    runsc: Runsc
    store: SnapshotStore
    db: StateDB
    report: RecoveryReport
    actor_port: int


async def _settle(ctx: _Context, row: SandboxRow) -> None:
    db, runsc = ctx.db, ctx.runsc
    fence = db.generation(row.actor) if db.has_actor(row.actor) else None
    newest = fence is not None and row.generation == fence
    path = netns_path(runsc, row)
    saved = False
    for pending in ctx.store.pending():
        if (pending.actor, pending.generation) == (row.actor, row.generation) and newest:
            saved = _finish_or_discard(ctx, pending) or saved
    status = "gone" if saved else await _status(runsc, row.id, path)
    if status == "running" and newest and path is not None:
        saved = await _checkpoint_now(ctx, row, path)
    elif status == "running":
        ctx.report.note(f"killed {row.id}: an older activation of {row.actor} (fenced)")
    elif saved or not newest or row.status != "running":
        pass  # saved, not the actor's state, never served, or ended on purpose
    elif _saved_before_the_crash(ctx, row):
        ctx.report.note(
            f"{row.id} was checkpointed before the crash (v{ctx.store.latest(row.actor)})"
        )
    else:
        _lose(ctx, row, f"its sandbox {row.id} was gone when the control plane restarted")
    if path is not None:
        runsc.kill_process(row.id)
        await runsc.kill(row.id, path)
        await runsc.delete(row.id, path)
    db.sandbox_stopped(row.id)


def _saved_before_the_crash(ctx: _Context, row: SandboxRow) -> bool:
    """The actor's newest snapshot is this activation's own checkpoint (committed; the
    crash came before the database heard that its sandbox stopped)."""
    latest = ctx.store.latest(row.actor)
    snapshot = ctx.store.manifest(row.actor, latest) if latest else None
    return snapshot is not None and snapshot.generation == row.generation


async def _quiesce(ctx: _Context, row: SandboxRow) -> None:
    """Make a sandbox that outlived its control plane safe to checkpoint: reset the
    dead control plane's connections to it (a half-open one makes runsc checkpoint fail
    and destroy the sandbox: "encoding error at object tcp.endpoint"), wait until it
    answers, and let what is left inside its netstack play out (as the driver does)."""
    worker = WorkerNames.from_netns(row.netns)
    if worker is None:
        return
    ip, port = worker.actor_ip, ctx.actor_port
    await asyncio.to_thread(tcpstate.destroy_connections, ip, port)
    try:
        await wait_ready(ip, port, actor=row.actor, generation=row.generation, timeout_s=10.0)
    except (ActorHTTPError, TimeoutError) as e:  # frozen or broken: checkpoint it anyway
        ctx.report.note(f"{row.id} does not answer before its checkpoint ({e})")
    # A request still being worked on holds its (now reset) connection inside the
    # sandbox until the actor answers it; a checkpoint meanwhile fails on it.
    if not await wait_idle(ip, port, timeout_s=IDLE_TIMEOUT_S):
        ctx.report.note(f"{row.id} still holds connections open; checkpointing anyway")
    await asyncio.sleep(QUIESCE_S)
    await asyncio.to_thread(tcpstate.destroy_connections, ip, port)


async def _checkpoint_now(ctx: _Context, row: SandboxRow, path: str) -> bool:
    store = ctx.store
    await _quiesce(ctx, row)
    version = store.latest(row.actor) + 1
    tmp = store.begin(row.actor, version, row.generation)
    try:
        await ctx.runsc.checkpoint(row.id, tmp, path)
        snapshot = store.commit(row.actor, version, row.generation, tmp, fence=row.generation)
    except (CommandError, OSError) as e:
        store.abort(tmp)
        _lose(ctx, row, f"saving its running sandbox failed: {e}")
        return False
    ctx.report.note(f"saved {row.actor} v{version} ({snapshot.bytes} bytes) from running {row.id}")
    return True


def _finish_or_discard(ctx: _Context, pending: PendingCheckpoint) -> bool:
    """Commit an interrupted checkpoint if it may be (True), else discard it."""
    store, db, report = ctx.store, ctx.db, ctx.report
    fence = db.generation(pending.actor) if db.has_actor(pending.actor) else None
    why = None
    if not pending.complete:
        why = "runsc did not finish it"
    elif fence != pending.generation:
        why = f"generation {pending.generation} is stale (newest: {fence})"
    elif pending.version <= store.latest(pending.actor):
        why = f"v{store.latest(pending.actor)} is already newer"
    if why is None:
        assert fence is not None
        try:
            store.commit(pending.actor, pending.version, pending.generation, pending.path,
                         fence=fence)  # fmt: skip
        except OSError as e:
            report.note(f"could not commit {pending.path} ({e}); left in place")
            return False
        report.note(f"committed interrupted checkpoint v{pending.version} of {pending.actor}")
        return True
    store.abort(pending.path)
    report.note(f"discarded {pending.path.name} of {pending.actor}: {why}")
    return False


def _lose(ctx: _Context, row: SandboxRow, reason: str) -> None:
    report = ctx.report
    version = ctx.store.latest(row.actor)
    ctx.db.record_loss(row.actor, row.generation, version, reason, (), known=False)
    line = (
        f"{row.actor}: what activation {row.generation} acknowledged after v{version} is lost "
        f"({reason}; which requests is unknown after a crash)"
    )
    report.losses.append(line)
    report.note(line)
