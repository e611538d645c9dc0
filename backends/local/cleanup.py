"""Remove everything the local backend created, also after a crash.

Sandboxes are found in the runsc state roots under the run directory and removed by
container id (killed, then deleted, from inside their own network namespace); network
namespaces and veths by their actormux names; then the run directories. Nothing is
ever looked up or killed by process name. Snapshots and the state database (the
actors' saved state) are kept unless ``purge_state`` names their directory.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from backends.local import netns
from backends.local.proc import run_sync
from backends.local.runsc import Runsc

RUN_BASE = Path("/run/actormux")


@dataclass
class CleanupReport:
    """What was removed."""

    sandboxes: list[str] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    veths: list[str] = field(default_factory=list)
    directories: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"removed {len(self.sandboxes)} sandboxes, {len(self.namespaces)} network namespaces, "
            f"{len(self.veths)} veths, {len(self.directories)} directories"
        )


def runtime_dirs(instance: int | None = None, base: Path = RUN_BASE) -> list[Path]:
    """Run directories of one instance, or of all."""
    if instance is not None:
        return [base / str(instance)] if (base / str(instance)).exists() else []
    return sorted(p for p in base.iterdir() if p.is_dir()) if base.exists() else []


def cleanup(
    instance: int | None = None, *, base: Path = RUN_BASE, purge_state: Path | None = None
) -> CleanupReport:
    """Remove actormux's sandboxes, namespaces, veths and run directories."""
    report = CleanupReport()
    for directory in runtime_dirs(instance, base):
        root = directory / "runsc"
        if root.is_dir():
            runsc = Runsc(root)
            for cid in runsc.ids():
                path = runsc.netns_of(cid)
                if path is not None:
                    asyncio.run(runsc.kill(cid, path))
                    asyncio.run(runsc.delete(cid, path))
                else:  # no namespace left to reach it in: the sandbox is gone already
                    run_sync(["runsc", "--root", str(root), "delete", "-force", cid], check=False)
                report.sandboxes.append(cid)
        shutil.rmtree(directory, ignore_errors=True)
        report.directories.append(str(directory))
    for veth in netns.our_veths(instance):
        run_sync(["ip", "link", "del", veth], check=False)
        report.veths.append(veth)
    for name in netns.ours(instance):
        run_sync(["ip", "netns", "del", name], check=False)
        report.namespaces.append(name)
    if purge_state is not None and purge_state.exists():
        shutil.rmtree(purge_state)
        report.directories.append(str(purge_state))
    return report


def leftovers(instance: int | None = None, base: Path = RUN_BASE) -> list[str]:
    """Anything of actormux's still present (empty after a successful cleanup)."""
    found = [f"netns {n}" for n in netns.ours(instance)]
    found += [f"veth {v}" for v in netns.our_veths(instance)]
    for directory in runtime_dirs(instance, base):
        root = directory / "runsc"
        ids = Runsc(root).ids() if root.is_dir() else []
        found += [f"sandbox {cid}" for cid in ids] + [f"dir {directory}"]
    return found
