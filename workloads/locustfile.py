"""The Locust side of a workload: replay a saved plan against an HTTP endpoint.

The plan is the same one the simulator plays (``workloads.plan.Plan``), so Locust
sends the same requests to the same actors at the same times. Each Locust user is one
actor (in the order of their first requests) and sends that actor's requests at their
planned times, open loop (a slow response does not delay the next request), addressed
by ``Host: <actor>.<domain>``. :class:`PlanShape` grows the user count as actors
start and stops the test once every request has been answered. Every request is
recorded in the simulator's per-request schema (``control/metrics.py``).

Run it through ``workloads.loadtest.run_locust`` (or ``actormux locust``); by hand::

    ACTORMUX_PLAN=plan.npz ACTORMUX_RECORDS=out.parquet \\
        locust -f workloads/locustfile.py --headless -H http://127.0.0.1:8000

Environment: ``ACTORMUX_PLAN`` (required), ``ACTORMUX_RECORDS`` (Parquet to write),
``ACTORMUX_ACTOR_DOMAIN`` (default ``actors.local``), ``ACTORMUX_REQUEST_PATH``
(default ``/``), ``ACTORMUX_REQUEST_TIMEOUT_S`` (default 30),
``ACTORMUX_RECORDS_STREAM`` (a JSON-lines file each record is appended to as soon as
its answer arrives, so a Locust killed mid-run leaves what it saw acknowledged), and
``ACTORMUX_PLAN_START_S`` (start part-way: play the requests from that plan time on,
the first of them now).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import gevent
from locust import HttpUser, LoadTestShape, constant, events, task

from control.metrics import REQUEST_COLUMNS
from workloads.plan import Plan

PLAN = Plan.load(Path(os.environ["ACTORMUX_PLAN"]))
DOMAIN = os.environ.get("ACTORMUX_ACTOR_DOMAIN", "actors.local")
REQUEST_PATH = os.environ.get("ACTORMUX_REQUEST_PATH", "/")
RECORDS = os.environ.get("ACTORMUX_RECORDS")
REQUEST_TIMEOUT_S = float(os.environ.get("ACTORMUX_REQUEST_TIMEOUT_S", "30"))
STREAM = os.environ.get("ACTORMUX_RECORDS_STREAM")
START_S = float(os.environ.get("ACTORMUX_PLAN_START_S", "0"))
SPAWN_LEAD_S = 2.0  # start an actor's user this long before its first request
SPAWN_RATE = 500.0
# Headers a router may return to fill in what the client cannot see.
TIMING_HEADERS = {
    "control_plane_s": "X-Actormux-Control-Plane-S",
    "queue_s": "X-Actormux-Queue-S",
    "activation_s": "X-Actormux-Activation-S",
    "service_s": "X-Actormux-Service-S",
}

_per_actor = [reqs[PLAN.times[reqs] >= START_S] for reqs in PLAN.actor_requests()]
_ORDER = sorted(
    (a for a, reqs in enumerate(_per_actor) if len(reqs)),
    key=lambda a: (PLAN.times[_per_actor[a][0]], a),
)
_FIRST = [float(PLAN.times[_per_actor[a][0]]) for a in _ORDER]
_next_user = itertools.count()
_state: dict[str, Any] = {"t0": None, "answered": 0, "written": False}
_rows: list[tuple[Any, ...]] = []
_stream = open(STREAM, "a", buffering=1) if STREAM else None  # noqa: SIM115 - lives as long as Locust


def _t0() -> float:
    """The wall time of plan time 0 (plan time ``START_S`` is when the test starts)."""
    if _state["t0"] is None:
        _state["t0"] = time.time() - START_S
    return float(_state["t0"])


@events.test_start.add_listener
def _on_test_start(**_kwargs: Any) -> None:
    _t0()


def _header_float(response: Any, name: str) -> float:
    try:
        return float(response.headers[name])
    except (AttributeError, KeyError, TypeError, ValueError):
        return math.nan


@events.request.add_listener
def _on_request(
    response_time: float, response: Any, context: dict[str, Any], exception: Any, **kw: Any
) -> None:
    rid = context.get("request")
    if rid is None:
        return
    status = int(getattr(response, "status_code", 0) or 0)
    if 200 <= status < 400:
        outcome = "ok"
    elif status == 504:
        outcome = "timeout"
    else:
        outcome = "rejected"
    activated = getattr(response, "headers", {}).get("X-Actormux-Activated")
    timings = {k: _header_float(response, h) for k, h in TIMING_HEADERS.items()}
    started = kw.get("start_time") or time.time() - response_time / 1000
    row = (
        rid,
        context["actor"],
        started - _t0(),
        outcome,
        status,
        activated == "1",
        timings["control_plane_s"],
        timings["queue_s"],
        timings["activation_s"],
        timings["service_s"],
        response_time / 1000,
    )
    _rows.append(row)
    if _stream is not None:
        _stream.write(json.dumps(dict(zip(REQUEST_COLUMNS, row, strict=True))) + "\n")
    _state["answered"] += 1


def _write_records() -> None:
    if not RECORDS or _state["written"]:
        return
    import pandas as pd  # only at the end: keep the hot path light

    _state["written"] = True
    frame = pd.DataFrame(_rows, columns=list(REQUEST_COLUMNS)).sort_values("request")
    frame.to_parquet(RECORDS, index=False)
    meta = {"t0_unix": _state["t0"], "requests": len(PLAN), "answered": _state["answered"]}
    Path(RECORDS).with_suffix(".json").write_text(json.dumps(meta) + "\n")


@events.test_stop.add_listener
def _on_test_stop(**_kwargs: Any) -> None:
    _write_records()


@events.quitting.add_listener
def _on_quitting(**_kwargs: Any) -> None:
    _write_records()


class ActorUser(HttpUser):
    """Plays one actor's planned requests, then idles until the test ends."""

    wait_time = constant(3600)

    @task
    def play(self) -> None:
        k = next(_next_user)
        if k >= len(_ORDER):
            return  # more users than actors: nothing to do
        actor = _ORDER[k]
        actor_id = PLAN.population.ids[actor]
        t0 = _t0()
        sends = []
        for rid in _per_actor[actor].tolist():
            delay = t0 + float(PLAN.times[rid]) - time.time()
            if delay > 0:
                gevent.sleep(delay)
            sends.append(gevent.spawn(self._send, rid, actor_id))
        gevent.joinall(sends)

    def _send(self, rid: int, actor_id: str) -> None:
        self.client.post(
            REQUEST_PATH,
            data=b"",
            headers={
                "Host": f"{actor_id}.{DOMAIN}",
                "X-Request-Id": str(rid),
                "X-Actormux-Service": repr(float(PLAN.service_s[rid])),
            },
            name="actor request",
            context={"request": rid, "actor": actor_id},
            timeout=REQUEST_TIMEOUT_S,
        )


class PlanShape(LoadTestShape):
    """Users = actors whose first request is near; stop when all requests are answered."""

    def tick(self) -> tuple[int, float] | None:
        t = self.get_run_time()
        remaining = sum(len(reqs) for reqs in _per_actor)
        if (
            _state["answered"] >= remaining
            or t > PLAN.duration_s - START_S + REQUEST_TIMEOUT_S + 30
        ):
            return None
        users = sum(1 for first in _FIRST if first <= START_S + t + SPAWN_LEAD_S)
        return max(users, 1), SPAWN_RATE
