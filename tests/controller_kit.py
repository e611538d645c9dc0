"""Helpers for driving the pure controller in unit tests: build one, send a request
through an activation, pick the one command of a kind."""

from __future__ import annotations

from control.controller import Controller
from control.messages import (
    ActivationFinished,
    ActorCreated,
    Forward,
    RequestArrived,
    Restore,
    WorkerAdded,
)
from control.policies import AfterEachRequest, FailFast, LruPlacement

MB = 1 << 20


def make(
    *,
    placement=None,
    suspension=None,
    admission=None,
    workers=("w0",),
    actors=("a", "b", "c"),
    timeout=5.0,
    nodes=None,
    owners=None,
    locality=None,
    timers=None,
):
    # Not `placement or ...`: a placement pool with no free worker has len() 0 and is falsy.
    ctl = Controller(
        LruPlacement() if placement is None else placement,
        AfterEachRequest() if suspension is None else suspension,
        FailFast() if admission is None else admission,
        router_timeout_s=timeout,
        locality=locality,
        timers=timers,
    )
    for i, w in enumerate(workers):
        ctl.handle(WorkerAdded(w, nodes[i] if nodes else "n0"), 0.0)
    for a in actors:
        owner = owners.get(a, "") if owners else ""
        ctl.handle(ActorCreated(a, "counter", 10 * MB, owner=owner), 0.0)
    return ctl


def only(cmds, kind):
    found = [c for c in cmds if isinstance(c, kind)]
    assert len(found) == 1, cmds
    return found[0]


def activate(ctl, request, actor, now, restore_s=0.3):
    """Send a request to a suspended actor, finish its activation ``restore_s`` later;
    return the Restore and the Forward."""
    restore = only(ctl.handle(RequestArrived(request, actor, now), now), Restore)
    done = now + restore_s
    return restore, only(ctl.handle(ActivationFinished(restore.op), done), Forward)
