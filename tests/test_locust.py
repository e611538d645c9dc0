"""The Locust side plays the same workload as the simulator, against a live endpoint.

Locust runs for real, headless, in its own process, against the stand-in actor
endpoint (``workloads/echo.py``) on 127.0.0.1; the local backend's router replaces
the stand-in later.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from control.metrics import REQUEST_COLUMNS
from experiments.runs.build import build
from experiments.runs.runner import simulate
from workloads.echo import EchoServer
from workloads.loadtest import check_loopback, run_locust
from workloads.plan import Plan
from workloads.sessions import Scripts

pytestmark = pytest.mark.real  # starts servers or processes: run one at a time

ROOT = Path(__file__).resolve().parent.parent
SLACK_S = 0.25  # Locust's scheduling slack we accept; measured: median ~3 ms, max ~11 ms

CASES = {  # open-loop plans (closed-loop sessions: the test at the end)
    "fixed population, steady": [
        "workload=agent", "workload.loop=open", "workload.actors=25", "duration_s=14", "seed=3",
        "workload.think_time='lognormal(median=8, sigma=0.5)'",
    ],
    "open population, waves": [
        "workload=agent", "workload.loop=open", "workload.population=open",
        "workload.session_rate_per_s=0.8",
        "workload.shape='waves(start_s=3, period_s=5, count=2, size=4)'", "duration_s=14",
        "seed=4", "workload.think_time='lognormal(median=4, sigma=0.5)'",
    ],
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_simulator_and_locust_issue_the_same_requests_at_the_same_times(
    compose_cfg, tmp_path, case
):
    spec = build(compose_cfg(*CASES[case]))
    sim = simulate(spec).result.requests
    plan = Plan.materialize(spec.workload, spec.duration_s, spec.seed)
    assert len(plan) > 40

    with EchoServer() as server:
        run = run_locust(plan, server.url, tmp_path)
        seen = server.seen
    assert run.returncode == 0, run.output[-2000:]

    # The simulator played exactly the plan: request i is the plan's request i.
    np.testing.assert_array_equal(sim["request"], np.arange(len(plan)))
    np.testing.assert_array_equal(sim["actor"], np.asarray(plan.population.ids)[plan.actors])
    np.testing.assert_allclose(sim["arrival_s"], plan.times, atol=1e-9)

    # The endpoint saw the same requests, each addressed to the same actor.
    rid = np.array([int(s.request_id) for s in seen])
    assert sorted(rid) == list(range(len(plan)))
    hosts = [s.host for s in seen]
    assert hosts == [f"{sim['actor'][r]}.actors.local" for r in rid]

    # Same times, within the slack, relative to the Locust run's start.
    lag = np.array([s.time for s in seen]) - run.t0_unix - sim["arrival_s"][rid]
    assert np.abs(lag).max() < SLACK_S, (np.median(lag), lag.min(), lag.max())

    # Same order, except requests planned closer together than the slack.
    order = np.asarray(sim["arrival_s"])[rid]
    swapped = np.flatnonzero(np.diff(rid) < 0)
    assert all(order[i] - order[i + 1] < SLACK_S for i in swapped)

    # Locust recorded every request in the simulator's schema.
    rec = run.records
    assert tuple(rec.columns) == REQUEST_COLUMNS
    assert rec["request"].tolist() == list(range(len(plan)))
    assert (rec["outcome"] == "ok").all() and (rec["status"] == 200).all()
    assert (rec["actor"].to_numpy() == sim["actor"]).all()
    assert np.abs(rec["arrival_s"].to_numpy() - plan.times).max() < SLACK_S


@pytest.mark.slow
@pytest.mark.parametrize("loop", ["closed", "open"])
def test_actormux_locust_plays_a_workload_against_an_endpoint(tmp_path, loop):
    with EchoServer() as server:
        proc = subprocess.run(
            [
                str(Path(sys.executable).parent / "actormux"), "locust", "workload=agent",
                "workload.actors=5", "duration_s=6", "workload.think_time=2",
                f"workload.loop={loop}", f"locust.host={server.url}", f"hydra.run.dir={tmp_path}",
            ],
            capture_output=True, text=True, check=False, cwd=ROOT, timeout=120,
        )  # fmt: skip
        seen = len(server.seen)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((tmp_path / "locust_summary.json").read_text())
    assert summary["requests"] == summary["planned"] == summary["ok"] == seen > 0
    records = pd.read_parquet(tmp_path / "locust_requests.parquet")
    assert len(records) == seen and summary["loop"] == loop
    if loop == "open":
        assert Plan.load(tmp_path / "plan.npz").seed == 0
    else:  # the scripts were saved, and the agents sent each call once (all answered)
        assert Scripts.load(tmp_path / "scripts.npz").seed == 0
        assert summary["client"]["calls"] == seen and summary["client"]["retries"] == 0


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "http://localhost:1", "http://[::1]:80"])
def test_loopback_endpoints_are_accepted(url):
    check_loopback(url)


@pytest.mark.parametrize(
    "url", ["http://10.0.0.1:8000", "http://example.com", "ftp://127.0.0.1", "127.0.0.1:80"]
)
def test_anything_but_loopback_is_refused(url):
    with pytest.raises(ValueError, match=r"locust\.host"):
        check_loopback(url)


def test_a_killed_locust_leaves_what_it_saw_and_a_restart_plays_only_the_rest(tmp_path):
    from workloads.loadtest import start_locust

    plan = Plan.from_schedule(np.arange(0.0, 12.0, 0.25), np.arange(48) % 4, 0.01)
    with EchoServer() as server:
        first = start_locust(plan, server.url, tmp_path / "first")
        deadline = time.monotonic() + 60
        while len(first.streamed()) < 10:
            assert time.monotonic() < deadline and first.proc.poll() is None
            time.sleep(0.1)
        first.kill()  # kill -9 mid-run
        seen_first = len(server.seen)
        streamed = first.streamed()
        assert 10 <= len(streamed) <= seen_first  # what it recorded survived the kill
        assert tuple(streamed.columns) == REQUEST_COLUMNS and (streamed["status"] == 200).all()
        second = start_locust(plan, server.url, tmp_path / "second", start_at_s=9.0)
        run = second.wait()
    assert run.returncode == 0, run.output[-2000:]
    assert sorted(run.records["request"]) == [i for i in range(48) if plan.times[i] >= 9.0]
    late = [s for s in server.seen[seen_first:] if int(s.request_id) < 36]
    assert not late  # nothing before plan time 9 s was played again


def replay(scripts, answers_by_actor, slack_s: float) -> int:
    """Check that each actor's calls are what a fresh SessionPlayer asks for, fed the same
    answers: the same script calls and attempts, each sent when the player says (within
    ``slack_s``). ``answers_by_actor``: actor -> [(call, attempt, sent, answered, ok)] in
    order. Returns the number of calls checked."""
    from workloads.sessions import SessionPlayer

    player = SessionPlayer(scripts)
    expected = {call.actor: call for call in player.first_calls()}
    checked = 0
    for actor, calls in answers_by_actor.items():
        want = expected.get(actor)
        for index, attempt, sent, answered, ok in calls:
            assert want is not None, f"actor {actor}: a call after its script ended"
            assert (index, attempt) == (want.index, want.attempt), (actor, index, attempt, want)
            assert abs(sent - want.at) <= slack_s, (actor, index, sent, want.at)
            want = player.answered(want, answered, ok)
            checked += 1
    return checked


CLOSED = [
    "workload=bursty", "workload.actors=12", "duration_s=25", "seed=5", "workload.loop=closed",
    "workload.think_time='lognormal(median=3, sigma=0.5)'", "workload.client.backoff_s=1.0",
]  # fmt: skip


@pytest.mark.slow
def test_closed_loop_sessions_play_alike_in_the_simulator_and_in_locust(compose_cfg, tmp_path):
    """The same seed gives the same calls, gaps after answers and retries in both, each
    fed its own answers (every 4th request fails at the stand-in, to make retries)."""
    spec = build(compose_cfg(*CLOSED, "faults.restore_failure_rate=0.2",
                             "recovery.max_activation_attempts=1"))  # fmt: skip
    scripts = spec.workload.scripts(spec.duration_s, spec.seed)
    sim = simulate(spec)
    with EchoServer(fail_every=4) as server:
        run = run_locust(scripts, server.url, tmp_path)
    assert run.returncode == 0, run.output[-2000:]
    assert run.calls_path is not None

    # The simulator: its requests, per actor in order, are what the player asks for.
    req = sim.result.requests
    sim_calls: dict[int, list] = {}
    index = {a: i for i, a in enumerate(scripts.population.ids)}
    order = np.lexsort((req["request"], req["arrival_s"]))
    player_view = []
    for r in order.tolist():
        actor = index[str(req["actor"][r])]
        player_view.append((actor, float(req["arrival_s"][r]),
                            float(req["arrival_s"][r] + req["total_s"][r]),
                            req["outcome"][r] == "ok"))  # fmt: skip
    # attempts and script indices are the player's to say: rebuild them by replaying
    from workloads.sessions import SessionPlayer

    shadow = SessionPlayer(scripts)
    due = {c.actor: c for c in shadow.first_calls()}
    for actor, sent, answered, ok in player_view:
        call = due[actor]
        sim_calls.setdefault(actor, []).append((call.index, call.attempt, sent, answered, ok))
        following = shadow.answered(call, answered, ok)
        if following is not None:
            due[actor] = following
    assert replay(scripts, sim_calls, slack_s=1e-9) == sim.summary["requests"]
    assert sim.summary["reliability"]["client_retries"] > 0

    # Locust: the calls it logged, fed back the answers it got.
    logged = [json.loads(line) for line in run.calls_path.read_text().splitlines()]
    locust_calls: dict[int, list] = {}
    for c in sorted(logged, key=lambda c: (c["actor"], c["sent_s"])):
        locust_calls.setdefault(c["actor"], []).append(
            (c["call"], c["attempt"], c["sent_s"], c["answered_s"], c["ok"]))  # fmt: skip
    assert replay(scripts, locust_calls, slack_s=0.1) == len(logged) > 40
    retried = sum(1 for c in logged if c["attempt"] > 0)
    assert retried > 0 and run.client["retries"] == retried
    assert len(run.records) == len(logged)

    # Both began with the same first call of every session that started in time.
    first_sim = {a: calls[0][:2] for a, calls in sim_calls.items()}
    first_locust = {a: calls[0][:2] for a, calls in locust_calls.items()}
    assert first_sim == first_locust
