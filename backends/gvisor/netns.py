"""Worker network namespaces: one per worker, joined to the host by a veth pair.

runsc's netstack takes the worker-side address over when a sandbox starts or is
restored (the address disappears from the kernel's view of the namespace), so the
address is put back before every run and restore, and never while a sandbox runs.
"""

from __future__ import annotations

from backends.gvisor.names import NETNS_PREFIX, VETH_PREFIX, WorkerNames
from backends.gvisor.proc import run, run_sync


async def create(w: WorkerNames) -> None:
    """Create ``w``'s namespace and veth pair (removing a stale one of the same name)."""
    await delete(w)
    await run(["ip", "netns", "add", w.netns])
    await run(["ip", "link", "add", w.veth_host, "type", "veth", "peer", "name", w.veth_worker])
    await run(["ip", "link", "set", w.veth_worker, "netns", w.netns])
    await run(["ip", "addr", "add", f"{w.host_ip}/30", "dev", w.veth_host])
    await run(["ip", "link", "set", w.veth_host, "up"])
    await run(["ip", "-n", w.netns, "link", "set", "lo", "up"])
    await run(["ip", "-n", w.netns, "link", "set", w.veth_worker, "up"])
    await restore_address(w)


async def restore_address(w: WorkerNames) -> None:
    """Give the worker-side veth its address again (before a sandbox starts)."""
    await run(["ip", "-n", w.netns, "addr", "replace", f"{w.actor_ip}/30", "dev", w.veth_worker])


async def delete(w: WorkerNames) -> None:
    """Remove ``w``'s veth pair and namespace if they exist."""
    await run(["ip", "link", "del", w.veth_host], check=False)
    await run(["ip", "netns", "del", w.netns], check=False)


def ours(instance: int | None = None) -> list[str]:
    """Names of the namespaces actormux created (of one instance, or all)."""
    prefix = NETNS_PREFIX if instance is None else f"{NETNS_PREFIX}{instance}-"
    listed = run_sync(["ip", "netns", "list"], check=False).stdout.split("\n")
    return sorted({line.split()[0] for line in listed if line.startswith(prefix)})


def our_veths(instance: int | None = None) -> list[str]:
    """Names of host-side veths actormux created."""
    prefix = VETH_PREFIX if instance is None else f"{VETH_PREFIX}{instance}h"
    out = run_sync(["ip", "-o", "link", "show", "type", "veth"], check=False).stdout
    names = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]
    return sorted(n for n in names if n.startswith(prefix) and "h" in n[len(VETH_PREFIX) :])
