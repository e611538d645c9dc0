"""The control plane on a cluster, end to end, with the EMULATED Kubernetes API server
(``kube_emulator.py``), a stand-in for the nodes running real worker agents with real
runsc (``kubelet.py``), a real redis-server and a real S3-compatible server (moto) on
loopback: actors are served through the router and the agents' forwarders, move
between worker pods through S3 with their state, and when the leader is paused past
its Lease a second control plane takes over, the first one's writes are refused, and
the actors go on from their snapshots."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import aiohttp
import pytest
from gvisor_harness import AGENT_TOKEN, INSTANCE, free_port
from kube_emulator import emulated_api
from kubelet import StandInKubelet, create_worker_statefulset

from backends.kube.api import connect
from backends.kube.backend import KubeBackend, KubeSettings
from backends.local.router import Router, RouterLimits
from backends.manifest import from_json as manifest_from_json
from backends.state import Deposed
from control.controller import Controller, RecoverySettings
from control.messages import SuspendRequested
from control.policies import EvictThenWait, Lazy, LruPlacement

pytestmark = pytest.mark.usefixtures("gvisor")
NAMESPACE = "actormux"
WORKERS = "actormux-worker"


def controller() -> Controller:
    return Controller(
        LruPlacement(), Lazy(), EvictThenWait(20.0), router_timeout_s=30.0,
        recovery=RecoverySettings(forward_deadline_s=90.0),
    )  # fmt: skip


async def until(condition, timeout_s: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def call(session: aiohttp.ClientSession, port: int, actor: str, request_id: str) -> dict:
    async with session.post(f"http://127.0.0.1:{port}/", headers={
        "Host": f"{actor}.actors.local", "X-Request-Id": request_id,
    }) as response:  # fmt: skip
        assert response.status == 200, await response.text()
        return json.loads(await response.read())


async def suspend(backend: KubeBackend, actor: str) -> None:
    assert backend.admin(SuspendRequested(actor)).ok
    await until(lambda: backend.ctl.actor(actor).state == "suspended", what=f"{actor} suspended")


def test_the_control_plane_serves_moves_and_fails_over_on_an_emulated_cluster(
    tmp_path: Path, redis_server, s3
):
    import s3fs

    snapshots = f"s3://{s3.bucket}/{uuid.uuid4().hex}"
    with emulated_api(tmp_path) as api_server:
        apis = connect(api_server.url)
        create_worker_statefulset(apis, NAMESPACE, WORKERS)
        kubelet = StandInKubelet(apis, NAMESPACE, WORKERS, tmp_path, s3.options, forward=True)
        kubelet.start()

        def settings(identity: str) -> KubeSettings:
            return KubeSettings(
                namespace=NAMESPACE, identity=identity, redis_url=redis_server.url,
                snapshots=snapshots, agent_token=AGENT_TOKEN, api_host=api_server.url,
                storage_options=s3.options, lease_duration_s=3.0, renew_deadline_s=2.0,
                instance=INSTANCE, observe_interval_s=0.5,
            )  # fmt: skip

        async def scenario() -> None:
            first = KubeBackend(settings("cp-a"), controller())
            await first.prepare()
            first.open()
            router = Router(first, domain="actors.local", limits=RouterLimits())
            port = free_port()
            await router.start(port)
            second = None
            router_b = None
            try:
                first.pool.scale(2)  # the scaling decision, through the API
                await until(lambda: len(first.ctl.workers()) == 2, what="two workers")
                counts = {"k1": 0, "k2": 0, "k3": 0}  # three actors, two worker pods
                for actor in counts:
                    await first.add_actor(actor, "counter")
                async with aiohttp.ClientSession() as session:
                    for round_ in range(2):
                        for actor, done in counts.items():
                            reply = await call(session, port, actor, f"{actor}-{round_}")
                            assert reply["count"] == done + 1
                            counts[actor] = done + 1
                            await suspend(first, actor)
                assert {row.worker for row in first.records.activations} == {
                    f"{WORKERS}-0", f"{WORKERS}-1",
                }  # fmt: skip
                # every restore downloaded its snapshot from S3 (no cache on the pods)
                restores = [row for row in first.records.activations if not row.cold]
                assert restores and all(not r.cache_hit and r.download_s > 0 for r in restores)
                assert all(c.upload_s > 0 for c in first.records.checkpoints)
                fs = s3fs.S3FileSystem(**s3.options["s3"])
                written = manifest_from_json(fs.cat_file(
                    f"{snapshots.removeprefix('s3://')}/k1/v000002/manifest.json"))  # fmt: skip
                assert written.requests == ("k1-1",) and written.generation == 2
                assert first.double_activations() == 0
                # k2 takes one more update and stays running: only its sandbox holds it.
                async with aiohttp.ClientSession() as session:
                    reply = await call(session, port, "k2", "k2-running")
                assert reply["count"] == counts["k2"] + 1
                counts["k2"] += 1
                assert first.ctl.actor("k2").state == "running"

                # The leader is paused (it stops renewing); a second control plane takes
                # the Lease once it has expired, and claims the state with a newer token.
                # Before it serves, it saves what the first one left running (k2's
                # sandbox, as a new snapshot), rather than restore k2 from an older one.
                first._loops[2].cancel()
                first._loops[1].cancel()  # paused: it does not observe either
                second = KubeBackend(settings("cp-b"), controller())
                await second.prepare()
                assert second.state.token == first.state.token + 1
                assert second.saved_on_takeover == {"k2": 3}
                assert second.records.losses == []
                second.open()
                # The paused leader wakes up and tries to write: refused, and it stops.
                with pytest.raises(Deposed):
                    await first.add_actor("k9", "counter")
                assert first.deposed.is_set()
                assert not second.state.has_actor("k9")
                await router.close()
                router_b = Router(second, domain="actors.local", limits=RouterLimits())
                await router_b.start(port)
                await until(lambda: len(second.ctl.workers()) == 2, what="workers, again")
                async with aiohttp.ClientSession() as session:
                    for actor, done in counts.items():  # from their S3 snapshots
                        reply = await call(session, port, actor, f"{actor}-after")
                        assert reply["count"] == done + 1
                        assert reply["generation"] > 2  # generations went on, fenced
                assert second.ctl.stats.evictions >= 1  # three actors, two workers
                assert second.double_activations() == 0
            finally:
                if router_b is not None:
                    await router_b.close()
                await router.close()
                await first.close(save=False)
                if second is not None:
                    await second.close(save=True)

        try:
            asyncio.run(scenario())
            assert kubelet.errors == []
        finally:
            kubelet.close()
