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

Closed loop: with ``ACTORMUX_SCRIPTS`` (a :class:`workloads.sessions.Scripts` archive)
instead of a plan, each user plays one actor's session with the same
:class:`workloads.sessions.SessionPlayer` as the simulator: a call goes out when the
player says, after the previous answer; every call is also logged to
``ACTORMUX_CALLS_LOG`` (JSON lines: actor, call, attempt, sent and answered times, ok),
which is how a test checks that Locust did what the player asks for the answers it got.
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
from workloads.sessions import Call, Scripts, SessionPlayer

SCRIPTS_PATH = os.environ.get("ACTORMUX_SCRIPTS")
SCRIPTS = Scripts.load(Path(SCRIPTS_PATH)) if SCRIPTS_PATH else None
PLAN = Plan.load(Path(os.environ["ACTORMUX_PLAN"])) if SCRIPTS is None else None
CALLS_LOG = os.environ.get("ACTORMUX_CALLS_LOG")
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

if PLAN is not None:
    _per_actor = [reqs[PLAN.times[reqs] >= START_S] for reqs in PLAN.actor_requests()]
    _ORDER = sorted(
        (a for a, reqs in enumerate(_per_actor) if len(reqs)),
        key=lambda a: (PLAN.times[_per_actor[a][0]], a),
    )
    _FIRST = [float(PLAN.times[_per_actor[a][0]]) for a in _ORDER]
    _DURATION_S = PLAN.duration_s
else:
    assert SCRIPTS is not None
    _PLAYER = SessionPlayer(SCRIPTS)
    _FIRST_CALLS = _PLAYER.first_calls()
    _FIRST = [call.at for call in _FIRST_CALLS]
    _DURATION_S = SCRIPTS.duration_s
    # the agent's own patience (workload.client.timeout_s; 0: as long as the router's)
    _CLIENT_TIMEOUT_S = SCRIPTS.client.timeout_s or REQUEST_TIMEOUT_S
_next_user = itertools.count()
_rids = itertools.count()
_state: dict[str, Any] = {"t0": None, "answered": 0, "written": False, "sessions_done": 0}
_calls = open(CALLS_LOG, "a", buffering=1) if CALLS_LOG else None  # noqa: SIM115
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
        False,  # Locust sends client requests, never wake-ups
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
    sent = len(PLAN) if PLAN is not None else _PLAYER.counts.calls
    meta = {"t0_unix": _state["t0"], "requests": sent, "answered": _state["answered"]}
    if SCRIPTS is not None:
        meta["client"] = {
            "retries": _PLAYER.counts.retries, "gave_up": _PLAYER.counts.gave_up,
            "turns_cut": _PLAYER.counts.turns_cut, "timeouts": _PLAYER.counts.timeouts,
            "calls": _PLAYER.counts.calls,
            "duplicates_suppressed": _PLAYER.counts.duplicates_suppressed,
        }  # fmt: skip
    Path(RECORDS).with_suffix(".json").write_text(json.dumps(meta) + "\n")


@events.test_stop.add_listener
def _on_test_stop(**_kwargs: Any) -> None:
    _write_records()


@events.quitting.add_listener
def _on_quitting(**_kwargs: Any) -> None:
    _write_records()


def _duplicate(response: Any) -> bool:
    """The actor answered a resent request id from what it had done."""
    try:
        return bool(json.loads(response.content).get("duplicate"))
    except (AttributeError, TypeError, ValueError):
        return False


def _post(
    client: Any, rid: int | str, actor_id: str, service_s: float,
    timeout_s: float = REQUEST_TIMEOUT_S,
) -> Any:  # fmt: skip
    return client.post(
        REQUEST_PATH,
        data=b"",
        headers={
            "Host": f"{actor_id}.{DOMAIN}",
            "X-Request-Id": str(rid),
            "X-Actormux-Service": repr(float(service_s)),
        },
        name="actor request",
        context={"request": rid, "actor": actor_id},
        timeout=timeout_s,
    )


if SCRIPTS is not None:

    class SessionUser(HttpUser):
        """Plays one actor's session closed-loop, then idles until the test ends."""

        wait_time = constant(3600)

        @task
        def play(self) -> None:
            k = next(_next_user)
            if k >= len(_FIRST_CALLS):
                return
            call: Call | None = _FIRST_CALLS[k]
            assert call is not None and SCRIPTS is not None
            actor_id = SCRIPTS.population.ids[call.actor]
            t0 = _t0()
            while call is not None:
                delay = t0 + call.at - time.time()
                if delay > 0:
                    gevent.sleep(delay)
                sent = time.time() - t0
                if sent >= SCRIPTS.duration_s:
                    break
                rid = next(_rids)
                _PLAYER.sent(call)
                request_id = _PLAYER.request_id(call)
                response = _post(self.client, request_id, actor_id, call.service_s,
                                 _CLIENT_TIMEOUT_S)  # fmt: skip
                answered = time.time() - t0
                status = int(getattr(response, "status_code", 0) or 0)
                ok = 200 <= status < 400
                if not status and answered - sent >= _CLIENT_TIMEOUT_S - 0.01:
                    _PLAYER.counts.timeouts += 1  # the agent stopped waiting
                if ok and _duplicate(response):
                    _PLAYER.counts.duplicates_suppressed += 1
                if _calls is not None:
                    _calls.write(json.dumps({
                        "actor": call.actor, "call": call.index, "attempt": call.attempt,
                        "request": rid, "request_id": request_id, "sent_s": sent,
                        "answered_s": answered, "ok": ok,
                    }) + "\n")  # fmt: skip
                call = _PLAYER.answered(call, answered, ok)
            _state["sessions_done"] += 1

    class SessionShape(LoadTestShape):
        """Users = sessions whose first call is near; stop when every session is done."""

        def tick(self) -> tuple[int, float] | None:
            t = self.get_run_time()
            if (
                _state["sessions_done"] >= len(_FIRST_CALLS)
                or t > _DURATION_S + REQUEST_TIMEOUT_S + 30
            ):
                return None
            users = sum(1 for first in _FIRST if first <= t + SPAWN_LEAD_S)
            return max(users, 1), SPAWN_RATE

else:

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
            assert PLAN is not None
            _post(self.client, rid, actor_id, float(PLAN.service_s[rid]))

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
