"""Worker pods end to end, with the EMULATED Kubernetes API server (``kube_emulator.py``)
and a stand-in for the nodes (``kubelet.py``) that runs a real worker agent (real runsc)
per pod: the control plane's Kubernetes client scales the StatefulSet and discovers the
workers by watching pods; a request goes Kubernetes client -> emulated API -> real worker
agent -> real gVisor actor. A pod that disappears mid-restore loses nothing that was
checkpointed, and the actor goes on elsewhere from its snapshot."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import pytest
from gvisor_harness import AGENT_TOKEN, INSTANCE, RUN_DIR
from kube_emulator import emulated_api
from kubelet import StandInKubelet, create_worker_statefulset

from backends.agent.api import Activate, Checkpoint, Outcome
from backends.agent.client import AgentClient, AgentUnreachable
from backends.gvisor.httpclient import request
from backends.gvisor.names import parse_sandbox_id
from backends.gvisor.runsc import Runsc
from backends.kube.api import connect
from backends.kube.pool import Change, PodPool, PoolSettings

pytestmark = pytest.mark.usefixtures("gvisor")
NAMESPACE = "actormux"
WORKERS = "actormux-worker"


def wait_until(predicate, timeout_s: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


async def call_actor(url: str, method: str = "GET") -> dict:
    async with AgentClient(url, AGENT_TOKEN) as agent:
        host, port = (await agent.state()).actor_address.rsplit(":", 1)
    response = await request(host, int(port), method, "/", timeout=10)
    assert response.status == 200, response
    return json.loads(response.body)


def live_sandboxes_of(actor: str) -> list[str]:
    runsc = Runsc(RUN_DIR / "runsc")
    return [
        c.id for c in runsc.containers() or []
        if (parsed := parse_sandbox_id(c.id)) and parsed[0] == actor and parsed[2] == INSTANCE
        and runsc.alive(c.id)
    ]  # fmt: skip


def test_worker_pods_serve_actors_and_a_pod_lost_mid_restore_loses_nothing(tmp_path: Path):
    snapshots = tmp_path / "snapshots"
    snapshots.mkdir()
    v1 = f"file://{snapshots}/c1/v000001"
    with emulated_api(tmp_path) as api_server:
        apis = connect(api_server.url)
        create_worker_statefulset(apis, NAMESPACE, WORKERS)
        kubelet = StandInKubelet(apis, NAMESPACE, WORKERS, tmp_path).start()
        pool = PodPool(apis.core, apis.apps, PoolSettings(NAMESPACE, WORKERS, watch_timeout_s=5))
        changes: list = []
        watcher = threading.Thread(target=pool.run, args=(changes.append,), daemon=True)
        watcher.start()
        try:
            pool.scale(2)  # the scaling policy's decision, through the API
            wait_until(lambda: len(pool.workers) == 2, what="two ready workers")
            w0, w1 = pool.workers[f"{WORKERS}-0"], pool.workers[f"{WORKERS}-1"]

            async def serve_then_checkpoint() -> None:
                async with AgentClient(w0.url, AGENT_TOKEN) as agent:
                    started = await agent.order(Activate("k:1", "c1", 1, "counter"))
                    assert started.outcome is Outcome.OK, started.reason
                    for expected in (1, 2, 3):
                        assert (await call_actor(w0.url, "POST"))["count"] == expected
                    for attempt in range(50):  # declined while our last connection closes
                        saved = await agent.order(
                            Checkpoint(f"k:2:{attempt}", "c1", 1, 1, v1, ("r1", "r2"))
                        )
                        if saved.outcome is not Outcome.DECLINED:
                            break
                        await asyncio.sleep(0.1)
                    assert saved.outcome is Outcome.OK, saved.reason

            asyncio.run(serve_then_checkpoint())

            async def restore_while_the_pod_goes() -> Outcome | None:
                async with AgentClient(w1.url, AGENT_TOKEN, give_up_s=3) as agent:
                    order = asyncio.create_task(
                        agent.order(Activate("k:3", "c1", 2, "counter", v1, 1))
                    )
                    await asyncio.sleep(0.05)
                    await asyncio.to_thread(
                        apis.core.delete_namespaced_pod, f"{WORKERS}-1", NAMESPACE
                    )
                    try:
                        return (await order).outcome
                    except AgentUnreachable:
                        return None  # the agent died with its pod

            outcome = asyncio.run(restore_while_the_pod_goes())
            assert outcome in (None, Outcome.FAILED), outcome  # cut short, never "ok"
            wait_until(lambda: pool.workers.get(f"{WORKERS}-1") not in (None, w1), what="a new pod")
            gone = [c for c in changes if c.change is Change.REMOVED]
            assert [c.worker for c in gone] == [w1]  # reported once, however it was seen
            assert live_sandboxes_of("c1") == []  # the restore died with its pod

            async def go_on_elsewhere() -> None:
                async with AgentClient(w0.url, AGENT_TOKEN) as agent:
                    back = await agent.order(Activate("k:4", "c1", 3, "counter", v1, 1))
                    assert back.outcome is Outcome.OK, back.reason
                    assert await call_actor(w0.url) == {"count": 3, "generation": 3}

            asyncio.run(go_on_elsewhere())
            assert len(live_sandboxes_of("c1")) == 1
            # The watch drops: the pool lists again; the repeats change nothing.
            before, relists = len(changes), pool.relists
            api_server.drop_watches()
            wait_until(lambda: pool.relists > relists, what="a new list")
            time.sleep(0.3)
            assert len(changes) == before
            assert kubelet.errors == []
        finally:
            pool.close()
            watcher.join(timeout=10)
            kubelet.close()
