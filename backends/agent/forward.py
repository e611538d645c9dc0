"""Actor traffic through the agent: a TCP forwarder from the worker's own address to its
actor's address inside the worker's network namespace.

On a cluster the actor's address (inside a worker pod) is not reachable from the router
(in the control plane's pod), so the router connects to the worker pod's forwarding
port and the agent carries the bytes. The forwarder keeps what the router does to a
connection, because the checkpoint's safety depends on it:

* a close (FIN) from the router becomes a close towards the actor, sent by the
  forwarder, so the actor never closes first and its side never lingers in TIME_WAIT;
* a reset from the router (an abandoned request) becomes a reset towards the actor;
* if the actor closes or resets first, the router sees the same.

Both sockets of a forwarded connection are on the worker's host side, where the agent's
own check before a checkpoint (``tcpstate``) sees them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from backends.gvisor.httpclient import reset

log = logging.getLogger("actormux.agent.forward")
CHUNK = 65536


class Forwarder:
    """Forwards every connection to ``listen`` to ``target`` (host, port)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.server: asyncio.Server | None = None
        self.connections = 0  # forwarded so far
        self._open: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen; the address actually bound."""
        self.server = await asyncio.start_server(self._serve, host, port)
        bound = self.server.sockets[0].getsockname()
        return str(bound[0]), int(bound[1])

    async def close(self) -> None:
        """Stop listening and reset what is still open."""
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        for task in list(self._open):
            task.cancel()
        await asyncio.gather(*self._open, return_exceptions=True)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._open.add(task)
        try:
            try:
                actor_r, actor_w = await asyncio.open_connection(*self.target)
            except OSError as e:
                log.info("actor %s:%d not reachable: %s", *self.target, e)
                reset(client_w)
                return
            self.connections += 1
            await self._pipe(client_r, client_w, actor_r, actor_w)
        except asyncio.CancelledError:
            reset(client_w)
            raise
        finally:
            self._open.discard(task)

    async def _pipe(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter,
        actor_r: asyncio.StreamReader, actor_w: asyncio.StreamWriter,
    ) -> None:  # fmt: skip
        upstream = asyncio.ensure_future(_copy(client_r, actor_w))
        downstream = asyncio.ensure_future(_copy(actor_r, client_w))
        try:
            done, _ = await asyncio.wait(
                {upstream, downstream}, return_when=asyncio.FIRST_COMPLETED
            )
            first = done.pop()
            if first.result() == "reset":  # one side reset: so is the other, at once
                reset(actor_w)
                reset(client_w)
                return
            await asyncio.wait({upstream, downstream})  # the other direction finishes
            if "reset" in (upstream.result(), downstream.result()):
                reset(actor_w)
                reset(client_w)
                return
            # Both directions ended with a FIN: the actor's side is closed by us only
            # after the router's FIN arrived (upstream finished), as the router would.
            actor_w.close()
            client_w.close()
            with contextlib.suppress(OSError):
                await actor_w.wait_closed()
            with contextlib.suppress(OSError):
                await client_w.wait_closed()
        except BaseException:
            upstream.cancel()
            downstream.cancel()
            reset(actor_w)
            reset(client_w)
            raise


async def _copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> str:
    """Copy until EOF ("eof": the FIN is passed on as a half-close) or a reset."""
    try:
        while True:
            data = await source.read(CHUNK)
            if not data:
                if sink.can_write_eof():
                    sink.write_eof()
                return "eof"
            sink.write(data)
            await sink.drain()
    except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError):
        return "reset"
    except OSError:
        return "reset"
