"""The data plane against everything a client can send, and sandboxes that die or
freeze mid-request, with real gVisor sandboxes: no request may destroy acknowledged
state, every request ends, and what is lost with a dead sandbox is reported exactly."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import pytest
from gvisor_harness import harness

from backends.gvisor.httpclient import request
from backends.local.router import RouterLimits
from control.controller import RecoverySettings
from control.messages import SuspendRequested

pytestmark = pytest.mark.usefixtures("gvisor")


async def raw(port: int, data: bytes, *, wait_s: float = 5.0) -> bytes:
    """Send raw bytes to the router; everything it answers until it closes (or ``wait_s``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    got = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), wait_s):
            got += chunk
    except TimeoutError:
        pass
    writer.close()
    return got


def count_of(data: bytes) -> int:
    return int(json.loads(data)["count"])


def test_methods_actors_do_not_serve_are_answered_by_the_router_and_harm_nothing(tmp_path):
    """The original bug: three acknowledged POSTs, then HEAD / (or OPTIONS /), then a
    checkpoint destroyed the sandbox and the three increments with it."""

    async def body():
        async with harness(tmp_path) as h:
            h.backend.create_actor("c1", "counter")
            for i in range(3):
                status, data, _ = await h.call("c1")
                assert status == 200 and count_of(data) == i + 1
            for method in ("HEAD", "OPTIONS", "TRACE", "PATCH", "BREW"):
                status, _, headers = await h.call("c1", method)
                assert status == 405, method
                assert headers["Allow"] == "GET, POST, PUT, DELETE"
            await h.suspend("c1")  # the checkpoint that used to fail
            assert h.backend.records.losses == []
            status, data, _ = await h.call("c1", "GET")
            assert status == 200 and count_of(data) == 3
            # CONNECT and absolute-form requests are refused before any actor is involved
            answer = await raw(
                h.port, b"CONNECT c1.actors.local:80 HTTP/1.1\r\nHost: c1.actors.local\r\n\r\n"
            )
            assert answer.startswith((b"HTTP/1.1 405", b"HTTP/1.1 400")), answer[:40]

    asyncio.run(body())


def test_a_router_timeout_followed_by_a_suspend_loses_nothing(tmp_path):
    async def body():
        async with harness(tmp_path, request_timeout_s=1.0) as h:
            h.backend.create_actor("c1", "counter")
            for _ in range(3):
                assert (await h.call("c1"))[0] == 200
            # The actor takes 3 s; the router gives up after 1 s and resets the connection.
            status, data, _ = await h.call("c1", **{"X-Actormux-Service": "3"})
            assert status == 504 and data == b"gateway timeout\n"  # nothing internal shown
            await h.suspend("c1")  # the connection was reset, not half-closed: no harm
            assert h.backend.records.losses == []
            status, data, _ = await h.call("c1", "GET")
            # The 3 acknowledged updates are there; the timed-out one may have been
            # applied (at least once) but was never acknowledged.
            assert status == 200 and count_of(data) in (3, 4)

    asyncio.run(body())


def test_a_sandbox_killed_mid_request_reports_exactly_which_acknowledged_requests_are_lost(
    tmp_path,
):
    async def body():
        async with harness(tmp_path) as h:
            h.backend.create_actor("c1", "counter")
            for rid in ("r1", "r2"):
                assert (await h.call("c1", **{"X-Request-Id": rid}))[0] == 200
            await h.suspend("c1")  # v1 holds r1 and r2
            for rid in ("r3", "r4"):
                assert (await h.call("c1", **{"X-Request-Id": rid}))[0] == 200
            sandbox = h.backend._running["c1"]
            slow = asyncio.ensure_future(
                h.call("c1", **{"X-Request-Id": "r5", "X-Actormux-Service": "3"})
            )
            await asyncio.sleep(0.5)
            assert h.backend.runsc.kill_process(sandbox)  # kill -9, mid-request
            status, data, _ = await slow
            assert status == 502 and data == b"bad gateway\n"
            await h.until(lambda: h.backend.records.losses, timeout_s=30)
            (loss,) = h.backend.records.losses
            assert (loss.actor, loss.version, loss.known) == ("c1", 1, True)
            assert loss.requests == ("r3", "r4")  # exactly the acknowledged ones since v1
            status, data, _ = await h.call("c1", "GET")
            assert status == 200 and count_of(data) == 2  # restored from v1, as reported

    asyncio.run(body())


def test_a_sandbox_frozen_mid_request_is_not_checkpointed_until_it_answers_again(tmp_path):
    recovery = RecoverySettings(checkpoint_retry_s=0.5, checkpoint_retry_max_s=1.0,
                                forward_deadline_s=60.0)  # fmt: skip

    async def body():
        async with harness(tmp_path, request_timeout_s=1.0, recovery=recovery) as h:
            h.backend.create_actor("c1", "counter")
            for _ in range(2):
                assert (await h.call("c1"))[0] == 200
            pid = h.backend.runsc.pid(h.backend._running["c1"])
            os.kill(pid, signal.SIGSTOP)
            try:
                status, _, _ = await h.call("c1")
                assert status == 504  # the router gives up; the connection is reset
                assert h.backend.admin(SuspendRequested("c1")).ok
                await h.until(
                    lambda: "does not answer" in (h.backend.ctl.actor("c1").failure or ""),
                    timeout_s=30,
                )
                assert h.backend.ctl.actor("c1").state == "running"  # declined, untouched
            finally:
                os.kill(pid, signal.SIGCONT)
            await h.until(lambda: h.backend.ctl.actor("c1").state == "suspended", timeout_s=60)
            assert h.backend.records.losses == []
            status, data, _ = await h.call("c1", "GET")
            assert status == 200 and count_of(data) in (2, 3)  # 2 acknowledged (+1 maybe)

    asyncio.run(body())


def test_a_sandbox_frozen_during_its_restore_is_abandoned_and_the_actor_served_elsewhere(
    tmp_path,
):
    recovery = RecoverySettings(activation_deadline_s=4.0, forward_deadline_s=60.0)

    async def body():
        async with harness(tmp_path, recovery=recovery, activation_timeout_s=3.0) as h:
            h.backend.create_actor("c1", "counter")
            assert (await h.call("c1"))[0] == 200
            await h.suspend("c1")
            generation = h.backend.ctl.actor("c1").generation + 1
            sandbox = h.backend._sandbox_id("c1", generation)
            pending = asyncio.ensure_future(h.call("c1"))
            frozen = None
            deadline = time.monotonic() + 20
            while frozen is None and time.monotonic() < deadline:
                frozen = h.backend.runsc.pid(sandbox)
                await asyncio.sleep(0.005)
            assert frozen is not None, "the restore never started"
            os.kill(frozen, signal.SIGSTOP)
            status, data, headers = await pending
            assert status == 200 and count_of(data) == 2
            assert int(headers["X-Actormux-Generation"]) > generation  # a later activation
            assert (
                h.backend.ctl.stats.activation_deadlines + h.backend.ctl.stats.failed_activations
                >= 1
            )
            assert not h.backend.runsc.alive(sandbox)  # the frozen one was killed, not resumed
            assert h.backend.double_activations() == 0

    asyncio.run(body())


def test_slow_partial_and_undecodable_requests_get_answers_not_hangs(tmp_path):
    limits = RouterLimits(header_timeout_s=1.0, body_timeout_s=1.0, idle_timeout_s=2.0,
                          max_connections=8, max_body_bytes=1024)  # fmt: skip

    async def body():
        async with harness(tmp_path, limits=limits) as h:
            h.backend.create_actor("c1", "counter")
            # A head that never ends: 408, then the router closes.
            started = time.monotonic()
            answer = await raw(h.port, b"POST / HTTP/1.1\r\nHost: c1.actors.local\r\n")
            assert answer.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 4
            # A body that never arrives in full: 408.
            answer = await raw(
                h.port,
                b"POST / HTTP/1.1\r\nHost: c1.actors.local\r\nContent-Length: 100\r\n\r\nabc",
            )
            assert answer.startswith(b"HTTP/1.1 408")
            # A connection that says nothing is closed quietly after the header timeout.
            assert await raw(h.port, b"") == b""
            # Bytes that are not ASCII in a header: 400, never a 500.
            answer = await raw(
                h.port, b"GET / HTTP/1.1\r\nHost: c1.actors.local\r\nX-Junk: \xff\xfe\r\n\r\n"
            )
            assert answer.startswith(b"HTTP/1.1 400"), answer[:60]
            answer = await raw(h.port, b"GET / HTTP/1.1\r\nHost: c1.act\xc3\xb6rs.local\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 400"), answer[:60]
            # Garbage: 400.
            assert (
                await raw(h.port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n")
            ).startswith(b"HTTP/1.1 400")
            # Too large a head: 431; too large a body: 413.
            answer = await raw(
                h.port,
                b"GET / HTTP/1.1\r\nHost: c1.actors.local\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n",
            )
            assert answer.startswith(b"HTTP/1.1 431"), answer[:60]
            status, _, _ = await h.call("c1", body=b"x" * 2048)
            assert status == 413
            # Actor ids are matched in full: a newline does not sneak through.
            answer = await raw(h.port, b"GET / HTTP/1.1\r\nHost: c1\n.actors.local\r\n\r\n")
            assert not answer.startswith(b"HTTP/1.1 200")
            # More connections than allowed: the extra ones get 503.
            idle = [await asyncio.open_connection("127.0.0.1", h.port) for _ in range(8)]
            await asyncio.sleep(0.1)
            answer = await raw(h.port, b"GET / HTTP/1.1\r\nHost: c1.actors.local\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 503"), answer[:60]
            for _, writer in idle:
                writer.close()
            await asyncio.sleep(0.2)
            # After all that, the actor is fine and checkpoints fine.
            status, data, _ = await h.call("c1")
            assert status == 200 and count_of(data) == 1
            await h.suspend("c1")
            assert h.backend.records.losses == []

    asyncio.run(body())


def test_a_stale_generation_cannot_be_served(tmp_path):
    async def body():
        async with harness(tmp_path) as h:
            h.backend.create_actor("c1", "counter")
            status, data, headers = await h.call("c1")
            generation = int(headers["X-Actormux-Generation"])
            assert status == 200 and json.loads(data)["generation"] == generation == 1
            ip, port = h.backend.address(h.backend.ctl.actor("c1").worker)
            stale = {"X-Actormux-Actor": "c1", "X-Actormux-Generation": str(generation - 1)}
            answer = await request(ip, port, "POST", "/", headers=stale)
            assert answer.status == 409  # not applied
            other = {"X-Actormux-Actor": "c2", "X-Actormux-Generation": str(generation)}
            assert (await request(ip, port, "POST", "/", headers=other)).status == 409
            status, data, _ = await h.call("c1", "GET")
            assert count_of(data) == 1  # neither was applied
            await h.suspend("c1")
            status, data, headers = await h.call("c1")
            assert json.loads(data)["generation"] == int(headers["X-Actormux-Generation"]) == 2

    asyncio.run(body())
