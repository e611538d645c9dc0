"""Remove everything the local backend created, also after a crash, losing nothing.

For each instance's run directory: take its lock (a running ``serve`` keeps it, so
cleanup refuses to pull the floor from under it), then save every sandbox that still
runs into the instance's state dir, exactly as a restarted ``serve`` would
(``recovery.py``: checkpoint, commit, fenced by generation), and only then remove
sandboxes (by container id, from inside their own network namespace), network
namespaces and veths (by their actormux names) and the run directory. With
``discard`` running sandboxes are killed instead, and the state they held is lost.
Nothing is ever looked up or killed by process name. Snapshots and the state
database are kept; ``purge_state`` deletes a state dir, but only one that is an
actormux state dir and not in use.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from backends.gvisor import firewall, netns
from backends.gvisor.proc import run_sync
from backends.gvisor.runsc import Runsc
from backends.local.agents import kill_leftover_agents
from backends.local.db import StateDB
from backends.local.lock import DirectoryLock
from backends.local.recovery import recover
from backends.local.statedir import is_state_dir
from backends.local.store import SnapshotStore

RUN_BASE = Path("/run/actormux")


class CleanupRefused(RuntimeError):  # noqa: N818
    """Cleanup would lose data or touch something that is not actormux's."""


@dataclass
class CleanupReport:
    """What was saved and removed."""

    saved: list[str] = field(default_factory=list)
    losses: list[str] = field(default_factory=list)
    sandboxes: list[str] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    veths: list[str] = field(default_factory=list)
    directories: list[str] = field(default_factory=list)
    agents: list[int] = field(default_factory=list)  # pids of leftover agents killed

    def __str__(self) -> str:
        lines = [f"saved: {line}" for line in self.saved]
        lines += [f"LOST: {line}" for line in self.losses]
        lines.append(
            f"removed {len(self.agents)} agents, {len(self.sandboxes)} sandboxes, "
            f"{len(self.namespaces)} network "
            f"namespaces, {len(self.veths)} veths, {len(self.directories)} directories"
        )
        return "\n".join(lines)


def runtime_dirs(instance: int | None = None, base: Path = RUN_BASE) -> list[Path]:
    """Run directories of one instance, or of all."""
    if instance is not None:
        return [base / str(instance)] if (base / str(instance)).exists() else []
    return sorted(p for p in base.iterdir() if p.is_dir()) if base.exists() else []


def state_dir_of(run_dir: Path) -> Path | None:
    """The state dir the instance in ``run_dir`` used (recorded when it started)."""
    try:
        path = Path((run_dir / "state_dir").read_text().strip())
    except OSError:
        return None
    return path if is_state_dir(path) else None


def actor_port_of(run_dir: Path) -> int:
    """The port the instance in ``run_dir`` ran its actors on (recorded when it started)."""
    try:
        return int((run_dir / "actor_port").read_text())
    except (OSError, ValueError):
        return 8080  # the default, and what instances before this record used


def cleanup(
    instance: int | None = None,
    *,
    base: Path = RUN_BASE,
    purge_state: Path | None = None,
    discard: bool = False,
) -> CleanupReport:
    """Save, then remove, actormux's sandboxes, namespaces, veths and run directories."""
    report = CleanupReport()
    if purge_state is not None and not is_state_dir(purge_state):
        raise CleanupRefused(
            f"{purge_state} is not an actormux state dir (no actormux-state.json); "
            "refusing to delete it"
        )
    for directory in runtime_dirs(instance, base):
        lock = DirectoryLock(directory, "backend instance run dir").acquire()
        try:
            _clean_run_dir(directory, report, discard=discard)
        finally:
            lock.release()
    for veth in netns.our_veths(instance):
        run_sync(["ip", "link", "del", veth], check=False)
        report.veths.append(veth)
    for name in netns.ours(instance):
        run_sync(["ip", "netns", "del", name], check=False)
        report.namespaces.append(name)
    firewall.remove(instance)
    if purge_state is not None:
        lock = DirectoryLock(purge_state, "state dir").acquire()
        try:
            shutil.rmtree(purge_state)  # the lock file goes with it, while still held
        finally:
            lock.release()
        report.directories.append(str(purge_state))
    return report


def _clean_run_dir(directory: Path, report: CleanupReport, *, discard: bool) -> None:
    if directory.name.isdigit():  # worker agents a crashed run left (their pid files)
        report.agents += kill_leftover_agents(directory, int(directory.name))
    root = directory / "runsc"
    runsc = Runsc(root) if root.is_dir() else None
    if runsc is not None and runsc.ids() and not discard:
        state_dir = state_dir_of(directory)
        if state_dir is None:
            raise CleanupRefused(
                f"sandboxes still run in {directory} and the state dir they belong to is "
                "unknown, so they cannot be saved; run `actormux serve` on that instance "
                "to save them, or `actormux cleanup --discard` to drop their state"
            )
        state_lock = DirectoryLock(state_dir, "state dir").acquire()
        try:
            store = SnapshotStore(state_dir / "snapshots")
            db = StateDB(state_dir / "state.sqlite")
            try:
                port = actor_port_of(directory)
                recovered = asyncio.run(recover(runsc, store, db, actor_port=port))
            finally:
                db.close()
        finally:
            state_lock.release()
        report.saved += [a for a in recovered.actions if a.startswith(("saved", "committed"))]
        report.losses += recovered.losses
    if runsc is not None:
        for cid in runsc.ids():
            path = runsc.netns_of(cid)
            runsc.kill_process(cid)
            if path is not None:
                asyncio.run(runsc.kill(cid, path))
                asyncio.run(runsc.delete(cid, path))
            else:  # no namespace left to reach it in: the sandbox is gone already
                run_sync(["runsc", "--root", str(root), "delete", "-force", cid], check=False)
            report.sandboxes.append(cid)
    shutil.rmtree(directory, ignore_errors=True)  # with its lock file, still held
    report.directories.append(str(directory))


def leftovers(instance: int | None = None, base: Path = RUN_BASE) -> list[str]:
    """Anything of actormux's still present (empty after a successful cleanup)."""
    found = [f"netns {n}" for n in netns.ours(instance)]
    found += [f"veth {v}" for v in netns.our_veths(instance)]
    found += [f"firewall table {t}" for t in firewall.tables(instance)]
    for directory in runtime_dirs(instance, base):
        root = directory / "runsc"
        ids = Runsc(root).ids() if root.is_dir() else []
        found += [f"sandbox {cid}" for cid in ids] + [f"dir {directory}"]
    return found
