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

import json
import shlex
from pathlib import Path
from typing import Any

from backends.local.proc import Result, run, run_sync

_ENTER = 'mount -t tmpfs -o size=4k,ro none /proc/sys/net/core && exec {runsc} --root {root} "$@"'


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

    async def run(self, cid: str, bundle: Path, netns_path: str, log: Path) -> None:
        """Start a sandbox from ``bundle`` (cold), detached; its output goes to ``log``."""
        await run(
            self.command(netns_path, "run", "--bundle", str(bundle), "--detach", cid), output=log
        )

    async def restore(
        self, cid: str, image: Path, bundle: Path, netns_path: str, log: Path
    ) -> None:
        """Start a sandbox from the checkpoint in ``image``, detached, as container ``cid``."""
        args = ["restore", "--image-path", str(image), "--bundle", str(bundle), "--detach", cid]
        await run(self.command(netns_path, *args), output=log)

    async def checkpoint(self, cid: str, image: Path, netns_path: str) -> None:
        """Checkpoint ``cid`` into ``image``; the sandbox stops. A failure destroys it."""
        await run(self.command(netns_path, "checkpoint", "--image-path", str(image), cid))

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

    def _state_file(self, cid: str) -> dict[str, Any] | None:
        for path in self.root.glob(f"{cid}_sandbox:*.state"):
            try:
                data: dict[str, Any] = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if data.get("id") == cid:
                return data
        return None

    def pid(self, cid: str) -> int | None:
        """The sandbox's pid, from runsc's state file (readable from any namespace)."""
        data = self._state_file(cid)
        pid = None if data is None else data.get("sandbox", {}).get("pid")
        return pid if isinstance(pid, int) and pid > 0 else None

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
