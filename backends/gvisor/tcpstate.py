"""TCP connection states as the host's kernel sees them (``/proc/net/tcp``).

Every connection to an actor starts on the host (the router, the readiness probe),
so the host end tells whether the actor's end can be checkpointed: the router
closes first, and a host socket in TIME_WAIT means the actor's end is closed too.
Any other state (ESTABLISHED, FIN_WAIT*, CLOSE_WAIT, ...) means the actor still has
a connection that would make ``runsc checkpoint`` fail and destroy the sandbox.

A sandbox that dies sends nothing (its TCP stack dies with it), so host sockets it
was connected to linger, orphaned, for up to a minute; the next sandbox on that
worker address would see them. :func:`destroy_connections` removes them (the
kernel's SOCK_DESTROY, via ``ss -K``) once the sandbox is gone.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from pathlib import Path

from backends.gvisor.proc import run_sync

STATES = {
    "01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
    "05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT",
    "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING", "0C": "NEW_SYN_RECV",
}  # fmt: skip


def _hex_endpoint(ip: str, port: int) -> str:
    """How /proc/net/tcp writes ``ip:port`` (the address in host byte order)."""
    packed = socket.inet_aton(str(ipaddress.IPv4Address(ip)))
    return f"{int.from_bytes(packed, 'little'):08X}:{port:04X}"


def connections_to(ip: str, port: int, table: Path = Path("/proc/net/tcp")) -> list[str]:
    """States of this network namespace's TCP sockets whose peer is ``ip:port``."""
    want = _hex_endpoint(ip, port)
    found = []
    with table.open() as f:
        next(f, None)  # header
        for line in f:
            fields = line.split()
            if len(fields) > 3 and fields[2] == want:
                found.append(STATES.get(fields[3], fields[3]))
    return found


# The host closed first and the actor's FIN or last ACK is on its way: these end on
# their own within a round trip of the actor's netstack (slower on a loaded machine).
CLOSING = frozenset({"FIN_WAIT1", "FIN_WAIT2", "CLOSING", "LAST_ACK"})
SETTLE_S = 1.0  # how long a checkpoint waits for those before it is declined


async def open_connections(
    ip: str,
    port: int,
    *,
    settle_s: float = SETTLE_S,
    poll_s: float = 0.02,
    table: Path = Path("/proc/net/tcp"),
) -> list[str]:
    """States (sorted, distinct) of the connections to ``ip:port`` that are not closed.

    TIME_WAIT counts as closed (the actor's end is gone). While every open one is
    merely closing (:data:`CLOSING`), wait up to ``settle_s`` for it to finish: right
    after an answer the actor's FIN may still be in flight (a checkpoint declined for
    that failed once in CI). An ESTABLISHED or CLOSE_WAIT one is returned at once."""
    deadline = asyncio.get_running_loop().time() + settle_s
    while True:
        states = await asyncio.to_thread(connections_to, ip, port, table)
        open_ = sorted({state for state in states if state != "TIME_WAIT"})
        if not open_ or not CLOSING.issuperset(open_):
            return open_
        if asyncio.get_running_loop().time() >= deadline:
            return open_
        await asyncio.sleep(poll_s)


def destroy_connections(ip: str, port: int) -> None:
    """Destroy this namespace's TCP sockets connected to ``ip:port`` (those of a sandbox
    that is gone; never call it while one serves on that address)."""
    address = str(ipaddress.IPv4Address(ip))
    run_sync(["ss", "-K", "-tn", "dst", address, "dport", "=", f":{port}"], check=False)
