"""The gVisor runtime, runsc, driven the way it works on these machines.

runsc 20221219 refuses to start a networked sandbox from the root network namespace
(gVisor issue 10704), so every command for a sandbox runs inside its worker's network
namespace, in a private mount namespace with a read-only tmpfs over
``/proc/sys/net/core``. Its control socket lives in that namespace too, so *every*
command for that sandbox (state, checkpoint, kill, delete) takes the same path. A
sandbox whose namespace name is gone can still be reached through
``/proc/<pid>/ns/net``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backends.gvisor.proc import Result, run, run_sync

# /proc/<pid>/stat states of a process that has not exited: running, sleeping, disk
# sleep, idle, stopped (SIGSTOP), traced, waking, parked; Z (zombie) and X (dead) have.
_ALIVE_STATES = frozenset("RSDITtWP")
CHECKPOINT_TIMEOUT_S = 600.0  # the controller's deadline acts long before this


def process_alive(pid: int) -> bool:
    """True if process ``pid`` exists and is not a zombie (it has not exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]  # the field after the command name
    return state in _ALIVE_STATES


_ENTER = 'mount -t tmpfs -o size=4k,ro none /proc/sys/net/core && exec {runsc} --root {root} "$@"'
# Checkpoint into "$1" as container "$2". The shell holds an flock on "$1/.lock" while
# runsc runs and creates "$1/.complete" only if runsc succeeded: a control plane that
# dies meanwhile (the shell and runsc do not) still learns the verdict on restart.
_CHECKPOINT = (
    "mount -t tmpfs -o size=4k,ro none /proc/sys/net/core && "
    'exec 9>"$1/.lock" && flock 9 && '
    '{runsc} --root {root} checkpoint --image-path "$1" "$2" && : > "$1/.complete"'
)


@dataclass(frozen=True)
class Container:
    """A container as runsc's state file records it."""

    id: str
    pid: int | None
    netns_path: str | None


def _netns(state: dict[str, Any]) -> str | None:
    for ns in state.get("spec", {}).get("linux", {}).get("namespaces", []):
        if ns.get("type") == "network" and ns.get("path"):
            return str(ns["path"])
    return None


class Runsc:
    """runsc with one state root (``root``) for all of a backend's sandboxes."""

    def __init__(self, root: Path, binary: str = "runsc") -> None:
        self.root = root
        self.binary = binary
        root.mkdir(parents=True, exist_ok=True)

    def command(self, netns_path: str, *args: str) -> list[str]:
        """The argv that runs ``runsc ARGS`` for a sandbox in ``netns_path``."""
        script = _ENTER.format(runsc=shlex.quote(self.binary), root=shlex.quote(str(self.root)))
        return [
            "nsenter", f"--net={netns_path}", "unshare", "-m", "--propagation", "private",
            "sh", "-c", script, "runsc", *args,
        ]  # fmt: skip

    async def run(
        self, cid: str, bundle: Path, netns_path: str, log: Path,
        *, started: Callable[[], None] | None = None,
    ) -> None:  # fmt: skip
        """Start a sandbox from ``bundle`` (cold), detached; its output goes to ``log``."""
        args = ["run", "--bundle", str(bundle), "--detach", cid]
        await run(self.command(netns_path, *args), output=log, started=started)

    async def restore(
        self, cid: str, image: Path, bundle: Path, netns_path: str, log: Path,
        *, started: Callable[[], None] | None = None,
    ) -> None:  # fmt: skip
        """Start a sandbox from the checkpoint in ``image``, detached, as container ``cid``."""
        args = ["restore", "--image-path", str(image), "--bundle", str(bundle), "--detach", cid]
        await run(self.command(netns_path, *args), output=log, started=started)

    async def checkpoint(
        self, cid: str, image: Path, netns_path: str, *, started: Callable[[], None] | None = None
    ) -> None:
        """Checkpoint ``cid`` into ``image`` (see ``_CHECKPOINT``); the sandbox stops.
        A failure may destroy it. ``started`` is called once runsc is running."""
        script = _CHECKPOINT.format(
            runsc=shlex.quote(self.binary), root=shlex.quote(str(self.root))
        )
        argv = [
            "nsenter", f"--net={netns_path}", "unshare", "-m", "--propagation", "private",
            "sh", "-c", script, "checkpoint", str(image), cid,
        ]  # fmt: skip
        await run(argv, timeout=CHECKPOINT_TIMEOUT_S, started=started)

    async def kill(self, cid: str, netns_path: str) -> Result:
        """Send SIGKILL to the sandbox's processes (no error if it is already gone)."""
        return await run(self.command(netns_path, "kill", cid, "KILL"), check=False)

    async def delete(self, cid: str, netns_path: str) -> Result:
        """Remove the container, forcibly (no error if it is already gone)."""
        return await run(self.command(netns_path, "delete", "-force", cid), check=False)

    async def state(self, cid: str, netns_path: str) -> dict[str, Any] | None:
        """runsc's view of ``cid`` (status, pid, ...), or None if it does not know it."""
        result = await run(self.command(netns_path, "state", cid), check=False)
        if result.returncode != 0:
            return None
        state: dict[str, Any] = json.loads(result.stdout)
        return state

    def ids(self) -> list[str]:
        """Ids of every container under this root (from any namespace)."""
        result = run_sync([self.binary, "--root", str(self.root), "list", "-quiet"], check=False)
        return [line.strip() for line in result.stdout.splitlines() if line.strip()]

    def containers(self) -> list[Container] | None:
        """Every container under this root, from runsc's state files (None if one of
        them could not be read whole: runsc may be rewriting it; look again later)."""
        found = []
        for path in sorted(self.root.glob("*_sandbox:*.state")):
            try:
                data = json.loads(path.read_text())
            except FileNotFoundError:
                continue  # deleted meanwhile
            except (OSError, ValueError):
                return None
            cid = data.get("id")
            if not isinstance(cid, str):
                return None
            pid = data.get("sandbox", {}).get("pid")
            found.append(
                Container(cid, pid if isinstance(pid, int) and pid > 0 else None, _netns(data))
            )
        return found

    def _state_file(self, cid: str) -> dict[str, Any] | None:
        for path in self.root.glob(f"{cid}_sandbox:*.state"):
            try:
                data: dict[str, Any] = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if data.get("id") == cid:
                return data
        return None

    def known(self, cid: str) -> bool:
        """Whether runsc has state for ``cid`` under this root (from its state file)."""
        return self._state_file(cid) is not None

    def pid(self, cid: str) -> int | None:
        """The sandbox's pid, from runsc's state file (readable from any namespace)."""
        data = self._state_file(cid)
        pid = None if data is None else data.get("sandbox", {}).get("pid")
        return pid if isinstance(pid, int) and pid > 0 else None

    def alive(self, cid: str) -> bool:
        """True while ``cid``'s sandbox process exists and has not exited. A checkpointed
        sandbox has exited when ``checkpoint`` returns (a zombie until it is reaped)."""
        pid = self.pid(cid)
        return pid is not None and process_alive(pid)

    def memory_bytes(self, cid: str) -> int | None:
        """Bytes of application memory the sandbox holds (the resident part of its
        ``runsc-memory`` file): an upper bound on its checkpoint image's memory."""
        pid = self.pid(cid)
        if pid is None:
            return None
        total = 0
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if "runsc-memory" in os.readlink(f"/proc/{pid}/fd/{fd}"):
                        total += os.stat(f"/proc/{pid}/fd/{fd}").st_blocks * 512
                except OSError:
                    continue
        except OSError:
            return None
        return total

    def kill_process(self, cid: str) -> bool:
        """SIGKILL ``cid``'s sandbox process directly (by the pid runsc recorded for that
        id): works when the sandbox is stopped and cannot answer ``runsc kill``."""
        pid = self.pid(cid)
        if pid is None or not process_alive(pid):
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        return True

    def netns_of(self, cid: str) -> str | None:
        """A path to ``cid``'s network namespace: the one in its spec if it still exists,
        else its sandbox process's (``/proc/<pid>/ns/net``); None if neither does."""
        data = self._state_file(cid)
        if data is None:
            return None
        for ns in data.get("spec", {}).get("linux", {}).get("namespaces", []):
            if ns.get("type") == "network" and ns.get("path") and Path(ns["path"]).exists():
                return str(ns["path"])
        pid = self.pid(cid)
        if pid is not None and Path(f"/proc/{pid}/ns/net").exists():
            return f"/proc/{pid}/ns/net"
        return None
