"""The local backend with real gVisor sandboxes (runsc), real namespaces, real HTTP.

These run for real in CI (``.ci/run`` installs runsc); elsewhere they skip, saying
why, when runsc cannot run (not Linux, not root, runsc missing). They use backend
instance 7, so they never touch a developer's instance 0.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from gvisor_harness import (
    ACTORMUX,
    INSTANCE,
    ROOT,
    TOKEN,
    admin,
    free_port,
    harness,
    post,
    serve_process,
    wait_for,
)

from backends.gvisor import netns
from backends.gvisor.names import BadActorId, WorkerNames, actor_from_host, check_actor_id
from backends.local.cleanup import leftovers
from control.policies import (
    AfterEachRequest,
    DemandScaler,
    IdleTimeout,
    KeepNewest,
    PauseFirst,
    PredictivePrewarm,
)
from control.timers import TimerSettings

pytestmark = pytest.mark.usefixtures("gvisor")


def test_counter_and_agent_survive_20_suspend_resume_cycles(tmp_path):
    async def body():
        async with harness(tmp_path) as h:
            h.backend.create_actor("c1", "counter")
            h.backend.create_actor("g1", "agent")
            sent = []
            for cycle in range(20):
                status, data, _ = await h.call("c1")
                assert status == 200 and json.loads(data)["count"] == cycle + 1
                entry = f"turn {cycle}: tool call".encode()
                sent.append(entry)
                status, data, _ = await h.call("g1", body=entry)
                assert status == 200 and json.loads(data)["count"] == cycle + 1
                await h.suspend("c1")
                await h.suspend("g1")
            status, data, _ = await h.call("g1", "GET")
            state = json.loads(data)
            digest = hashlib.sha256(b"".join(e + b"\n" for e in sent)).hexdigest()
            assert state == {"count": 20, "digest": digest, "generation": 21}  # 1 + 20 activations
            async with h.session.get(h.url + "/verify", headers={"Host": "g1.actors.local"}) as r:
                assert (await r.json())["ballast_ok"] is True
            status, data, _ = await h.call("c1", "GET")
            assert json.loads(data)["count"] == 20
            # one cold start, then a restore per cycle; a checkpoint per cycle
            acts = [a for a in h.backend.records.activations if a.actor == "c1"]
            assert [a.cold for a in acts] == [True] + [False] * 20
            assert len([c for c in h.backend.records.checkpoints if c.actor == "g1"]) == 20
            assert h.backend.double_activations() == 0

    asyncio.run(body())


def test_request_to_a_suspended_actor_is_held_and_answered(tmp_path):
    async def body():
        async with harness(tmp_path) as h:
            h.backend.create_actor("c1", "counter")
            await h.call("c1")
            await h.suspend("c1")
            before = len(h.backend.records.activations)
            status, data, headers = await h.call("c1")
            assert status == 200 and json.loads(data)["count"] == 2
            assert headers["X-Actormux-Activated"] == "1"
            # it was held for a restore (not a cold start) of this very actor
            (restore,) = h.backend.records.activations[before:]
            assert restore.actor == "c1" and restore.cold is False
            # its parts, measured: the admission and the generation's write (control
            # plane), checking the snapshot on this machine (a cache hit), the restore
            assert restore.cache_hit is True
            assert restore.control_plane_s > 0 and restore.download_s > 0
            assert restore.restore_s > restore.download_s
            parts = restore.control_plane_s + restore.download_s + restore.restore_s
            assert restore.total_s == pytest.approx(parts)
            (checkpoint,) = [c for c in h.backend.records.checkpoints if c.actor == "c1"]
            assert checkpoint.control_plane_s > 0 and checkpoint.upload_s > 0
            assert checkpoint.checkpoint_s > checkpoint.upload_s
            assert checkpoint.snapshot_bytes > 0
            # the controller knows the snapshot's size from the checkpoint, not a guess
            assert h.backend.ctl.actor("c1").snapshot_bytes == checkpoint.snapshot_bytes
            status, _, headers = await h.call("c1")
            assert status == 200 and headers["X-Actormux-Activated"] == "0"

    asyncio.run(body())


def test_a_resent_request_id_is_applied_once_across_a_restore(tmp_path):
    """An agent that lost its answer resends with the same X-Request-Id: the actor
    answers from what it did, also after it was checkpointed and restored elsewhere."""

    async def body():
        async with harness(tmp_path) as h:
            h.backend.create_actor("c1", "counter")
            _, first, _ = await h.call("c1", **{"X-Request-Id": "turn1.call1"})
            assert json.loads(first)["count"] == 1
            await h.suspend("c1")
            status, again, headers = await h.call("c1", **{"X-Request-Id": "turn1.call1"})
            assert status == 200 and headers["X-Actormux-Activated"] == "1"
            assert json.loads(again)["duplicate"] is True
            assert json.loads(again)["count"] == 1  # not carried out twice
            _, other, _ = await h.call("c1", **{"X-Request-Id": "turn1.call2"})
            assert json.loads(other)["count"] == 2 and "duplicate" not in json.loads(other)

    asyncio.run(body())


def test_substrate_router_asks_the_control_plane_on_every_request(tmp_path):
    """router=substrate on a real backend: every request, to a running actor too, makes
    a round trip to the control plane's state (SQLite here) before it is forwarded, and
    is counted as a control-plane call; the direct router asks only for a suspended one."""

    async def calls_and_reads(every: bool) -> tuple[int, int, int]:
        async with harness(tmp_path / str(every), resume_on_every_request=every) as h:
            state = h.backend.state
            reads = {"count": 0}
            real_generation = state.generation

            def counted(actor: str) -> int:
                reads["count"] += 1
                return real_generation(actor)

            state.generation = counted  # type: ignore[method-assign]
            h.backend.create_actor("c1", "counter")
            await h.call("c1")  # activates it
            calls, before = h.backend.control_plane_calls, reads["count"]
            for _ in range(5):  # to the running actor
                status, _, headers = await h.call("c1")
                assert status == 200 and headers["X-Actormux-Activated"] == "0"
            return (
                h.backend.control_plane_calls - calls,
                reads["count"] - before,
                len([r for r in h.backend.records.requests if r.actor == "c1"]),
            )

    assert asyncio.run(calls_and_reads(True)) == (5, 5, 6)
    assert asyncio.run(calls_and_reads(False)) == (0, 0, 6)


def test_twenty_concurrent_requests_to_a_suspended_actor_cause_one_activation(tmp_path):
    async def body():
        async with harness(tmp_path) as h:
            h.backend.create_actor("c1", "counter")
            await h.call("c1")
            await h.suspend("c1")
            before = len(h.backend.records.activations)
            results = await asyncio.gather(*(h.call("c1") for _ in range(20)))
            assert all(status == 200 for status, _, _ in results)
            counts = sorted(json.loads(data)["count"] for _, data, _ in results)
            assert counts == list(range(2, 22))  # every increment applied exactly once
            assert len(h.backend.records.activations) - before == 1

    asyncio.run(body())


def test_bad_input_is_refused_clearly(tmp_path):
    async def body():
        async with harness(tmp_path) as h:
            h.backend.create_actor("c1", "counter")
            assert (await h.call("nobody"))[0] == 404
            for host in ("c1", "c1.example.com", "C_1.actors.local", "..actors.local", "[::1]"):
                async with h.session.post(h.url + "/", headers={"Host": host}) as r:
                    assert r.status == 400, host
            status, _, _ = await h.call("c1", body=b"x" * 2048)  # limit: 1024 bytes
            assert status == 413
            auth = {"Authorization": f"Bearer {TOKEN}"}
            async with h.session.get(h.admin + "/actors") as r:
                assert r.status == 401  # no token
            for bad in ("../etc", "a;rm -rf /", "a b", "-a", "a" * 41, "A1", "x/y", "$(id)"):
                async with h.session.post(
                    h.admin + "/actors", json={"id": bad, "template": "counter"}, headers=auth
                ) as r:
                    assert r.status == 400, bad
                    assert "bad actor id" in (await r.json())["error"]
            async with h.session.post(h.admin + "/actors", json={"id": "c1"}, headers=auth) as r:
                assert r.status == 409
            async with h.session.post(
                h.admin + "/actors", json={"id": "c2", "template": "nope"}, headers=auth
            ) as r:
                assert r.status == 400
            async with h.session.post(h.admin + "/actors", json={"id": "c2"}, headers=auth) as r:
                assert r.status == 201 and (await r.json())["state"] == "suspended"
            assert not (Path(h.backend.store.root) / "..etc").exists()

    asyncio.run(body())


def test_actor_ids_and_hosts_are_checked():
    assert check_actor_id("a-1") == "a-1"
    assert actor_from_host("a-1.actors.local:8000", "actors.local") == "a-1"
    assert WorkerNames.from_netns("actormux-7-w12") == WorkerNames(7, 12)
    for other in ("actormux-7-w12\n", "actormux-7-w", "netns-7-w1", "actormux-99-w1"):
        assert WorkerNames.from_netns(other) is None
    # a trailing newline once passed (a regex matched with "$", not in full)
    for bad in ("", "a.b", "a/b", "a\x00", "é", "nl1\n", "a1\r\n", "-a", "a-", "A1", "a" * 41):
        with pytest.raises(BadActorId):
            check_actor_id(bad)


def test_idle_timeout_suspends_through_the_real_backend(tmp_path):
    async def body():
        async with harness(tmp_path, suspension=IdleTimeout(0.5)) as h:
            h.backend.create_actor("c1", "counter")
            await h.call("c1")
            deadline = time.monotonic() + 10
            while h.backend.ctl.actor("c1").state != "suspended":
                assert time.monotonic() < deadline, "the idle timer never suspended it"
                await asyncio.sleep(0.05)
            assert h.backend.store.versions("c1") == [1]

    asyncio.run(body())


def test_a_prewarm_restores_an_actor_before_its_next_call_and_retention_keeps_one(tmp_path):
    """Keep-alive through the real backend: the policy learns an idle time of ~3 s,
    suspends the actor as it goes idle and has it restored before the next call is
    due, which then finds it running; the store keeps only the newest snapshot."""

    async def body():
        policy = PredictivePrewarm(min_history=1, min_gap_s=1.0, lead_s=1.0, hold_s=30.0)
        async with harness(tmp_path, suspension=policy, retention=KeepNewest(keep=1)) as h:
            h.backend.create_actor("c1", "counter")
            await h.call("c1")
            await asyncio.sleep(3.0)
            await h.call("c1")  # an idle time of ~3 s on record: suspend, pre-warm
            deadline = time.monotonic() + 15
            while h.backend.ctl.stats.prewarms == 0 or not h.backend.ctl.is_running("c1"):
                assert time.monotonic() < deadline, "the actor was never pre-warmed"
                await asyncio.sleep(0.05)
            status, data, headers = await h.call("c1")
            assert status == 200 and json.loads(data)["count"] == 3  # no state lost
            assert headers["X-Actormux-Activated"] == "0"  # it was running already
            assert h.backend.ctl.stats.prewarms == 1
            assert len(h.backend.store.versions("c1")) == 1

    asyncio.run(body())


def test_an_actor_paused_then_uploaded_wakes_itself_and_no_header_trick_schedules_one(tmp_path):
    """Two tiers and wake-ups through the real backend: each call is checkpointed as a
    pause (one machine: the store is node-local), the idle paused snapshot is "uploaded"
    (verified in place), the actor's answer asks for a wake-up in 4 s, the controller
    restores it ahead and the router delivers POST /actormux/wake; no state is lost.
    Wake-up headers that are not a sane number of seconds schedule nothing."""

    async def body():
        locality = PauseFirst(wait_s=0.2, upload_after_s=1.0)
        timers = TimerSettings(lead_s=1.5, wait_s=30.0, max_after_s=3600.0)
        async with harness(
            tmp_path, suspension=AfterEachRequest(), locality=locality, timers=timers
        ) as h:
            ctl = h.backend.ctl
            h.backend.create_actor("w1", "counter")
            status, data, _ = await h.call("w1", path="/?wake_after=4")
            assert status == 200 and json.loads(data) == {
                "count": 1, "wake_after_s": "4", "generation": 1
            }  # fmt: skip
            assert len(ctl.pending_wakeups("w1")) == 1
            await h.until(lambda: ctl.stats.uploads == 1, 15)  # paused, then uploaded
            assert ctl.stats.pauses >= 1 and ctl.actor("w1").paused_on is None
            await h.until(lambda: ctl.stats.wakeups_delivered == 1, 15)
            await h.until(lambda: any(r.wake for r in h.backend.records.requests), 15)
            woken = [r for r in h.backend.records.requests if r.wake]
            assert [(r.outcome, r.activated) for r in woken] == [("ok", False)]  # pre-warmed
            assert ctl.stats.wake_prewarms == 1
            status, data, _ = await h.call("w1", method="GET")
            reply = json.loads(data)
            assert (reply["count"], reply["wakes"]) == (2, 1)  # the wake-up ran, nothing lost
            # Header tricks: not a number, not finite, past the bound, CR/LF smuggling.
            refused_before = ctl.stats.wakeups_refused
            for value in ("nan", "1e12", "%0d%0aX-Evil:%201"):
                status, _, headers = await h.call("w1", path=f"/?wake_after={value}")
                assert status == 200 and "X-Evil" not in headers
            assert ctl.pending_wakeups("w1") == []
            assert (
                h.backend.bad_wake_headers == 2 and ctl.stats.wakeups_refused == refused_before + 1
            )

    asyncio.run(body())


def test_a_stored_wakeup_and_the_owner_survive_a_restart_of_the_control_plane(tmp_path):
    """A wake-up is written to the state before the answer that asked for it is
    acknowledged; a new control plane on the same state dir delivers it (once) and
    knows each actor's owner."""

    async def body():
        timers = TimerSettings(lead_s=0.5, wait_s=30.0)
        async with harness(tmp_path, timers=timers) as h:
            auth = {"Authorization": f"Bearer {TOKEN}"}
            for bad in ("no spaces", "x" * 65, 7):  # an owner is a short name
                spec = {"id": "s1", "owner": bad}
                async with h.session.post(h.admin + "/actors", json=spec, headers=auth) as r:
                    assert r.status == 400, bad
            spec = {"id": "s1", "template": "counter", "owner": "tenant-a"}
            async with h.session.post(h.admin + "/actors", json=spec, headers=auth) as r:
                assert r.status == 201 and (await r.json())["owner"] == "tenant-a"
            status, _, _ = await h.call("s1", path="/?wake_after=3")
            assert status == 200
            stored = await h.backend.state.offload(h.backend.state.wakes)
            assert [w.actor for w in stored] == ["s1"]  # durable before the answer came
            await h.suspend("s1")
        async with harness(tmp_path, timers=timers) as h:  # a new control plane
            state = h.backend.state
            assert h.backend.ctl.actor("s1").owner == "tenant-a"
            await h.until(lambda: h.backend.restored_wakes == 1, 10)

            def woken():
                return [r for r in h.backend.records.requests if r.wake]

            await h.until(woken, 30)
            assert [r.outcome for r in woken()] == ["ok"]
            deadline = time.monotonic() + 10
            while await state.offload(state.wakes):
                assert time.monotonic() < deadline, "the delivered wake-up was kept"
                await asyncio.sleep(0.05)
            status, data, _ = await h.call("s1", method="GET")
            reply = json.loads(data)
            assert (reply["count"], reply["wakes"]) == (2, 1)

    asyncio.run(body())


def test_the_autoscaler_adds_worker_slots_under_demand_and_retires_them_after(tmp_path):
    """policy/scaling on the local backend (worker agents, as configured by default):
    three calls at once on one worker slot make the scaler ask for two more; each gets
    its own namespace and agent, serves, and once idle (its actor suspended) is removed,
    namespace and all."""

    async def body():
        scaler = DemandScaler(
            min_workers=1, max_workers=3, warm_buffer=0, interval_s=0.5, down_delay_s=2.0
        )
        async with harness(
            tmp_path, workers=1, scaling=scaler, suspension=IdleTimeout(ttl_s=1.0),
            worker_agents=True,
        ) as h:  # fmt: skip
            ctl = h.backend.ctl
            for actor in ("g1", "g2", "g3"):
                h.backend.create_actor(actor, "counter")
            slow = {"X-Actormux-Service": "2"}  # each call holds its actor 2 s
            results = await asyncio.gather(*(h.call(a, **slow) for a in ("g1", "g2", "g3")))
            assert [status for status, _, _ in results] == [200, 200, 200]
            used = {headers["X-Actormux-Worker"] for _, _, headers in results}
            assert len(used) >= 2 and ctl.stats.workers_started >= 1
            assert ctl.stats.provision_failures == 0
            await h.until(lambda: len(h.backend.workers) == 1 and not ctl.starting_workers, 30)
            assert ctl.stats.workers_retired == ctl.stats.workers_started
            mine = {w.netns for w in h.backend.workers.values()}
            # the retired slots' namespaces go too (torn down right after)
            await h.until(lambda: set(netns.ours(INSTANCE)) == mine, 10)
            for actor in ("g1", "g2", "g3"):  # drained, not lost
                status, data, _ = await h.call(actor, method="GET")
                assert status == 200 and json.loads(data)["count"] == 1

    asyncio.run(body())


def test_serve_survives_a_crash_and_cleanup_removes_everything(tmp_path):
    """Kill -9 the control plane while an actor runs: a restart saves the running
    sandbox first (no acknowledged update lost); after another crash, `actormux
    cleanup` leaves no sandbox, namespace or run directory behind."""
    port, admin_port = free_port(), free_port()
    proc = serve_process(tmp_path, port, admin_port)
    try:
        wait_for(admin_port, proc)
        created = admin(admin_port, "create", "k1")
        assert created.returncode == 0, created.stdout + created.stderr
        for _ in range(3):
            post(port, "k1")
        assert json.loads(admin(admin_port, "show", "k1").stdout)["state"] == "running"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert any(x.startswith("sandbox ") for x in leftovers(INSTANCE))  # the crash left it

    proc = serve_process(tmp_path, port, admin_port)
    try:
        wait_for(port, proc)
        assert post(port, "k1", "GET")["count"] == 3  # restored from the saved sandbox
        post(port, "k1")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert leftovers(INSTANCE)
    done = subprocess.run([ACTORMUX, "cleanup", "--instance", str(INSTANCE)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert leftovers(INSTANCE) == []


def test_serve_stops_cleanly_on_sigint_and_keeps_state(tmp_path):
    port, admin_port = free_port(), free_port()
    proc = serve_process(tmp_path, port, admin_port)
    try:
        wait_for(admin_port, proc)
        assert admin(admin_port, "create", "s1").returncode == 0
        post(port, "s1")
        post(port, "s1")
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "stopped" in out
    assert leftovers(INSTANCE) == []  # namespaces and sandboxes gone
    assert (tmp_path / "state" / "snapshots" / "s1").is_dir()  # state kept
    proc = serve_process(tmp_path, port, admin_port)
    try:
        wait_for(port, proc)
        assert post(port, "s1", "GET")["count"] == 2
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)


@pytest.mark.slow
def test_short_250_on_8_run_loses_no_update_and_never_double_activates(tmp_path):
    proc = subprocess.run(
        [ACTORMUX, "experiment=oversub_250_on_8", "backend=local", f"backend.instance={INSTANCE}",
         f"backend.port={free_port()}", "backend.duration_s=35", f"hydra.run.dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["actors"] == 250 and summary["workers"] == 8
    assert summary["requests"] > 50 and summary["activations"] > 10
    assert summary["lost_updates"] == 0
    assert summary["unacknowledged_updates"] == 0
    assert summary["double_activations"] == summary["double_activations_driver"] == 0
    assert summary["monitor_samples"] > 100 and summary["monitor_max_gap_s"] < 0.1  # >= 10 Hz
    assert summary["unreadable_actors"] == 0
    assert summary["verified_actors"] > 10
    assert summary["client_requests"] == summary["requests"]
    assert "Real vs simulated" in (tmp_path / "report.md").read_text()


@pytest.mark.slow
def test_replicated_closed_loop_runs_of_impatient_agents_of_two_state_sizes(tmp_path):
    """Agents holding 4 and 40 MiB, closed loop, two seeds (replications=2), each run
    for real in its own directory (seed_1/) and simulated on its own scripts: both
    summaries get 95% intervals. The agents give up after 2 s on answers that take 3 s
    (workload.client.timeout_s, long_answer) and resend with the same request id: the
    actors answer repeats from what they did, so no call is carried out twice, none is
    lost, every state's digest checks out, and the snapshot sizes follow the state."""
    proc = subprocess.run(
        [ACTORMUX, "experiment=oversub_250_on_8", "backend=local", f"backend.instance={INSTANCE}",
         f"backend.port={free_port()}", "backend.duration_s=20", f"hydra.run.dir={tmp_path}",
         "backend.template=agent", "backend.agent_state_mb=[4,40]", "workload=bursty",
         "workload.actors=16", "cluster.workers=4", "workload.loop=closed", "replications=2",
         "workload.think_time='lognormal(median=8, sigma=0.5)'",
         "workload.long_answer_share=0.3", "workload.long_answer='fixed(value=3)'",
         "workload.client.timeout_s=2"],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    second = json.loads((tmp_path / "seed_1" / "summary.json").read_text())
    # replications: the second seed ran for real; intervals over both, real and simulated
    assert summary["seeds"] == [0, 1] and second["seed"] == 1
    interval = summary["ci95"]["requests"]
    assert interval["values"] == [summary["requests"], second["requests"]]
    assert interval["low"] <= interval["mean"] <= interval["high"]
    simulated = json.loads((tmp_path / "sim_summary.json").read_text())
    assert simulated["seeds"] == [0, 1] and simulated["requests"] > 30
    assert "activations" in simulated["ci95"]
    report = (tmp_path / "report.md").read_text()
    assert "# Real runs" in report and "# Simulated, the same scripts" in report
    # Even-numbered actors hold 4 MiB, odd ones 40: their images differ by about 36 MiB.
    acts = pd.read_parquet(tmp_path / "activations.parquet")
    restored = acts[~acts["cold"].astype(bool)]
    parity = restored["actor"].str[-1].astype(int) % 2
    mib = restored.groupby(parity)["snapshot_bytes"].median() / 2**20
    assert set(parity) == {0, 1}
    assert 30 < mib[1] - mib[0] < 42, mib
    timeouts = suppressed = 0
    for run, run_dir in ((summary, tmp_path), (second, tmp_path / "seed_1")):
        assert run["lost_updates"] == run["digest_mismatches"] == 0
        assert run["double_activations"] == run["unreadable_actors"] == 0
        assert run["client_requests"] == run["requests"] > 30
        attempts = [json.loads(line) for line in (run_dir / "locust/locust_calls.jsonl").open()]
        assert len(attempts) == run["requests"]
        # Closed loop: no agent ever had two calls out at once (a call it gave up on
        # counts as answered when it gave up).
        by_actor: dict[int, list[dict]] = {}
        for attempt in attempts:
            by_actor.setdefault(attempt["actor"], []).append(attempt)
        for actor_calls in by_actor.values():
            actor_calls.sort(key=lambda c: c["sent_s"])
            for before, after in itertools.pairwise(actor_calls):
                assert after["sent_s"] >= before["answered_s"] - 1e-3
        # An actor may hold a call no answer acknowledged only if the agent never got
        # an ok for that script call at all (it ran out of time before resending); a
        # call carried out twice (a resend done again) would exceed this.
        calls = {(a["actor"], a["call"]) for a in attempts}
        acked = {(a["actor"], a["call"]) for a in attempts if a["ok"]}
        assert run["unacknowledged_updates"] <= len(calls - acked)
        timeouts += run["reliability"]["client_timeouts"]
        suppressed += run["reliability"]["client_duplicates_suppressed"]
    assert timeouts > 0 and suppressed > 0
