"""Worker agents as separate processes with real gVisor sandboxes, and snapshots in a
real S3-compatible server (moto's server mode) on loopback: an actor moves from one
agent to another through S3 with its state, orders are carried out once however often
they are sent, a stale generation is fenced, a damaged snapshot is refused, an agent
killed with -9 loses no actor, and every input a client can send is checked."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import aiohttp
import pytest
from gvisor_harness import AGENT_TOKEN as TOKEN
from gvisor_harness import INSTANCE, RUN_DIR, agent

from backends.agent.api import Activate, Checkpoint, Outcome, Stop
from backends.agent.client import AgentClient, AgentRefused
from backends.gvisor.httpclient import request
from backends.gvisor.names import WorkerNames

pytestmark = pytest.mark.usefixtures("gvisor")


def kill9(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


async def count_at(worker: int, method: str = "GET") -> dict:
    w = WorkerNames(INSTANCE, worker)
    response = await request(w.actor_ip, 8080, method, "/", timeout=10)
    assert response.status == 200, response
    return json.loads(response.body)


def test_an_actor_moves_between_agents_through_s3_with_its_state(tmp_path, s3):
    import s3fs

    prefix = f"s3://{s3.bucket}/{uuid.uuid4().hex}/c1"
    v1, v2 = f"{prefix}/v000001-g1", f"{prefix}/v000002-g2"

    async def body(url_a: str, url_b: str) -> None:
        async with AgentClient(url_a, TOKEN) as a, AgentClient(url_b, TOKEN) as b:
            start = Activate("t:1", "c1", 1, "counter")
            # the same order twice at once (a retry after a lost answer): one sandbox
            first, again = await asyncio.gather(a.order(start), a.order(start))
            assert first.outcome is Outcome.OK, first.reason
            assert again == first
            assert [(s.actor, s.generation) for s in (await a.state()).sandboxes] == [("c1", 1)]
            for expected in (1, 2, 3):
                assert (await count_at(0, "POST"))["count"] == expected

            busy = await a.order(Activate("t:busy", "c2", 1, "counter"))
            assert busy.outcome is Outcome.FAILED and "busy with c1" in busy.reason

            save = Checkpoint("t:2", "c1", 1, 1, v1, ("r1", "r2", "r3"))
            saved = await a.order(save)
            assert saved.outcome is Outcome.OK, saved.reason
            assert saved.snapshot == v1 and saved.bytes > 0
            assert await a.order(save) == saved  # a repeat is answered, not re-run
            assert (await a.state()).sandboxes == ()

            moved = await b.order(Activate("t:3", "c1", 2, "counter", v1, 1))
            assert moved.outcome is Outcome.OK, moved.reason
            reply = await count_at(1)
            assert reply == {"count": 3, "generation": 2}

            stale = await b.order(Activate("t:4", "c1", 1, "counter", v1, 1))
            assert stale.outcome is Outcome.STALE, stale
            assert [(s.actor, s.generation) for s in (await b.state()).sandboxes] == [("c1", 2)]

            # bit rot in the store: refused with the reason, nothing started
            fs = s3fs.S3FileSystem(**s3.options["s3"])
            names = sorted(p for p in fs.ls(v1.removeprefix("s3://")) if "manifest" not in p)
            fs.pipe_file(names[-1], b"rotten")
            rotten = await a.order(Activate("t:5", "c1", 3, "counter", v1, 1))
            assert rotten.outcome is Outcome.UNUSABLE and "bytes" in rotten.reason, rotten
            assert (await a.state()).sandboxes == ()

    async def after_restart(url_b: str) -> None:
        async with AgentClient(url_b, TOKEN) as b:
            assert [(s.actor, s.generation) for s in (await b.state()).sandboxes] == [("c1", 2)]
            assert (await count_at(1, "POST"))["count"] == 4
            saved = await b.order(Checkpoint("t:6", "c1", 2, 2, v2, ("r4",)))
            assert saved.outcome is Outcome.OK, saved.reason
            fs = s3fs.S3FileSystem(**s3.options["s3"])
            written = json.loads(fs.cat_file(f"{v2.removeprefix('s3://')}/manifest.json"))
            assert (written["generation"], written["requests"]) == (2, ["r4"])
            back = await b.order(Activate("t:7", "c1", 3, "counter", v2, 2))
            assert back.outcome is Outcome.OK, back.reason
            assert await count_at(1) == {"count": 4, "generation": 3}
            assert (await b.order(Stop("t:8", "c1", 3))).outcome is Outcome.OK
            assert (await b.state()).sandboxes == ()

    with agent(0, tmp_path, s3.options) as (_, url_a), agent(1, tmp_path, s3.options) as (
        proc_b, url_b,
    ):  # fmt: skip
        asyncio.run(body(url_a, url_b))
        kill9(proc_b)  # the agent dies; its actor must not
        assert (asyncio.run(count_at(1)))["count"] == 3
    with agent(1, tmp_path, s3.options) as (_, url_b):  # a new agent adopts it
        asyncio.run(after_restart(url_b))


def test_a_file_snapshot_round_trip_and_the_agent_refuses_bad_clients(tmp_path):
    store = tmp_path / "store"
    uri = f"file://{store}/c1/v000001-g1"

    async def body(url: str) -> None:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/healthz") as r:
                assert r.status == 200 and (await r.json())["worker"] == "w2"
            for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"},
                            {"Authorization": TOKEN}):  # fmt: skip
                async with http.get(f"{url}/v1/state", headers=headers) as r:
                    assert r.status == 401
            auth = {"Authorization": f"Bearer {TOKEN}"}
            for raw in (b"{", b"\xff\xfe", b"[]", b'{"op": "x"}'):
                async with http.post(f"{url}/v1/activate", data=raw, headers=auth) as r:
                    assert r.status == 400, raw
                    assert "error" in await r.json()
            async with http.post(f"{url}/v1/stop", data=b"x" * (2 << 20), headers=auth) as r:
                assert r.status == 413
        async with AgentClient(url, TOKEN) as client:
            started = await client.order(Activate("f:1", "c1", 1, "counter"))
            assert started.outcome is Outcome.OK, started.reason
            assert (await count_at(2, "POST"))["count"] == 1
            # the same activation under a new op id (a restarted controller): not restarted
            again = await client.order(Activate("f:1b", "c1", 1, "counter"))
            assert again.outcome is Outcome.OK and "already runs" in again.reason
            assert (await count_at(2))["count"] == 1
            with pytest.raises(AgentRefused) as refused:  # same op id, different order
                await client.order(Activate("f:1", "c9", 1, "counter"))
            assert refused.value.status == 409
            saved = await client.order(Checkpoint("f:2", "c1", 1, 1, uri))
            assert saved.outcome is Outcome.OK, saved.reason
            lost = await client.order(Checkpoint("f:3", "c1", 1, 2, uri + "x"))
            assert lost.outcome is Outcome.LOST  # nothing runs: nothing to save
            restored = await client.order(Activate("f:4", "c1", 2, "counter", uri, 1))
            assert restored.outcome is Outcome.OK, restored.reason
            assert await count_at(2) == {"count": 1, "generation": 2}
        modes = {oct(p.stat().st_mode & 0o777) for p in (store / "c1" / "v000001-g1").iterdir()}
        assert modes == {"0o600"}

    with agent(2, tmp_path) as (proc, url):
        asyncio.run(body(url))
        deadline = time.monotonic() + 60
        proc.send_signal(signal.SIGTERM)  # a clean stop removes its sandbox and namespace
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    assert not Path(WorkerNames(INSTANCE, 2).netns_path).exists()


def test_removing_a_checkpointed_sandbox_leaves_the_next_actors_connections_alone(tmp_path):
    """Found by the 250-on-8 run through agents: the agent removes a checkpointed sandbox
    after answering (runsc delete takes 1.5-2 s here), and that removal cut the host's
    sockets to the worker's actor address, which by then were the next actor's."""
    from backends.gvisor.runsc import Runsc

    snapshots = tmp_path / "snapshots"
    runsc = Runsc(RUN_DIR / "runsc")
    worker = WorkerNames(INSTANCE, 0)

    async def body(url: str) -> None:
        async with AgentClient(url, TOKEN) as a:
            for actor in ("n2", "n1"):  # n2 gets a snapshot first; n1 then runs
                assert (
                    await a.order(Activate(f"{actor}:1", actor, 1, "counter"))
                ).outcome is Outcome.OK
                assert (await count_at(0, "POST"))["count"] == 1
                uri = f"file://{snapshots}/{actor}/v000001"
                for attempt in range(50):  # declined while our last connection closes
                    saved = await a.order(Checkpoint(f"{actor}:2:{attempt}", actor, 1, 1, uri))
                    if saved.outcome is not Outcome.DECLINED:
                        break
                    await asyncio.sleep(0.1)
                assert saved.outcome is Outcome.OK, saved.reason
                if actor == "n2":
                    await wait_gone(f"n2_g1_i{INSTANCE}")
            n2 = await a.order(
                Activate("n2:3", "n2", 2, "counter", f"file://{snapshots}/n2/v000001", 1)
            )
            assert n2.outcome is Outcome.OK, n2.reason
            reader, writer = await asyncio.open_connection(worker.actor_ip, 8080)
            assert runsc.known(f"n1_g1_i{INSTANCE}")  # n1's removal has not finished yet
            await wait_gone(f"n1_g1_i{INSTANCE}")  # ... now it has
            await asyncio.sleep(0.5)  # and whatever the agent does after it is done
            writer.write(b"GET / HTTP/1.1\r\nHost: n2\r\n\r\n")
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200"), head
            writer.close()

    async def wait_gone(sandbox: str) -> None:
        deadline = time.monotonic() + 30
        while runsc.known(sandbox):
            assert time.monotonic() < deadline, f"{sandbox} was never removed"
            await asyncio.sleep(0.02)

    with agent(0, tmp_path) as (_, url):
        asyncio.run(body(url))
