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
            workers = {row.worker for row in h.backend.records.activations}
            assert workers == {"w0", "w1"}  # they moved
            # the agents' own measures of each restore's parts: the snapshot checked in
            # the store on this machine (a cache hit), then the restore
            restores = [row for row in h.backend.records.activations if not row.cold]
            assert len(restores) == 6
            assert all(r.cache_hit and r.download_s > 0 and r.control_plane_s > 0
                       and r.restore_s > r.download_s for r in restores)  # fmt: skip
            checkpoints = h.backend.records.checkpoints
            assert len(checkpoints) == 9
            assert all(c.upload_s > 0 and c.checkpoint_s > c.upload_s for c in checkpoints)
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


def test_agents_left_by_a_crashed_run_are_killed_by_pid_file_and_nothing_else(tmp_path: Path):
    """No sandbox needed: a real agent process (it starts without touching runsc), and
    a decoy process whose pid is written into an agent's pid file: only the agent dies."""
    import subprocess
    import sys

    from backends.local.agents import kill_leftover_agents

    instance = 9
    run_dir = tmp_path / str(instance)
    (run_dir / "agents").mkdir(parents=True)
    token = tmp_path / "token"
    token.write_text("x" * 32)
    agent = subprocess.Popen(
        [sys.executable, "-m", "backends.agent", "--instance", str(instance), "--worker", "0",
         "--runtime-dir", str(run_dir / "agents" / "w0"), "--runsc-root", str(run_dir / "runsc"),
         "--token-file", str(token), "--no-netns"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    decoy = subprocess.Popen(["sleep", "60"])
    try:
        assert "listening on" in agent.stdout.readline()
        (run_dir / "agents" / "w0.pid").write_text(f"{agent.pid}\n")
        (run_dir / "agents" / "w1.pid").write_text(f"{decoy.pid}\n")  # not an agent
        assert kill_leftover_agents(run_dir, instance) == [agent.pid]
        assert agent.wait(timeout=10) == -9
        assert decoy.poll() is None  # untouched
        assert list((run_dir / "agents").glob("*.pid")) == []
        assert kill_leftover_agents(run_dir, instance) == []
    finally:
        for proc in (agent, decoy):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
