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
from experiments.build import build
from experiments.runner import simulate
from workloads.echo import EchoServer
from workloads.loadtest import check_loopback, run_locust
from workloads.plan import Plan

ROOT = Path(__file__).resolve().parent.parent
SLACK_S = 0.25  # Locust's scheduling slack we accept; measured: median ~3 ms, max ~11 ms

CASES = {
    "fixed population, steady": [
        "workload=agent", "workload.actors=15", "duration_s=25", "seed=3",
        "workload.think_time='lognormal(median=8, sigma=0.5)'",
    ],
    "open population, waves": [
        "workload=agent", "workload.population=open", "workload.session_rate_per_s=0.4",
        "workload.shape='waves(start_s=5, period_s=8, count=2, size=4)'", "duration_s=25",
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
def test_actormux_locust_plays_a_workload_against_an_endpoint(tmp_path):
    with EchoServer() as server:
        proc = subprocess.run(
            [
                str(Path(sys.executable).parent / "actormux"), "locust", "workload=agent",
                "workload.actors=5", "duration_s=6", "workload.think_time=2",
                f"locust.host={server.url}", f"hydra.run.dir={tmp_path}",
            ],
            capture_output=True, text=True, check=False, cwd=ROOT, timeout=120,
        )  # fmt: skip
        seen = len(server.seen)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((tmp_path / "locust_summary.json").read_text())
    assert summary["requests"] == summary["planned"] == summary["ok"] == seen > 0
    records = pd.read_parquet(tmp_path / "locust_requests.parquet")
    assert len(records) == seen
    assert Plan.load(tmp_path / "plan.npz").seed == 0


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
