"""Closed-loop agent sessions (``workloads/sessions.py``): scripts drawn from the seed,
calls that wait for their answers, retries under the client's policy, and the
simulator playing them."""

from __future__ import annotations

import re

import numpy as np
import pytest

from experiments.runs.build import build
from experiments.runs.runner import simulate
from workloads.base import Population
from workloads.plan import Plan
from workloads.sessions import Call, ClientPolicy, Scripts, SessionPlayer
from workloads.shapes import Steady, TimeWarp


def scripts_of(turns: list[list[list[tuple[float, float]]]], thinks, first_turn, duration=1e6):
    """Scripts from, per actor, turns of (gap_s, service_s) calls; ``thinks[a][k]`` is
    the think time after actor a's turn k."""
    gap, service, ends, think, offsets = [], [], [], [], [0]
    for actor, actor_turns in enumerate(turns):
        for k, turn in enumerate(actor_turns):
            for j, (g, s) in enumerate(turn):
                gap.append(0.0 if j == 0 else g)
                service.append(s)
                ends.append(j == len(turn) - 1)
                think.append(thinks[actor][k] if j == len(turn) - 1 else 0.0)
        offsets.append(len(gap))
    n = len(turns)
    population = Population([f"a{i}" for i in range(n)], np.zeros(n, np.int64),
                            np.zeros(n, np.int64), np.zeros(n), "agent")  # fmt: skip
    return Scripts(
        population, np.asarray(first_turn, float), np.asarray(offsets), np.asarray(gap),
        np.asarray(service), np.asarray(ends), np.asarray(think),
        TimeWarp(Steady(), duration), float(duration),
    )  # fmt: skip


def test_the_next_call_waits_for_the_answer_and_the_think_for_the_turns_end():
    scripts = scripts_of([[[(0, 0.5), (2.0, 0.1)], [(0, 0.2)]]], [[30.0, 9.0]], [10.0])
    player = SessionPlayer(scripts, ClientPolicy(), seed=1)
    (first,) = player.first_calls()
    assert (first.actor, first.index, first.at) == (0, 0, 10.0)
    # answered late (a slow activation): the model's 2 s run from the answer
    second = player.answered(first, 13.25, ok=True)
    assert (second.index, second.at, second.service_s) == (1, 15.25, 0.1)
    third = player.answered(second, 16.0, ok=True)  # the turn ends: 30 s of thinking
    assert (third.index, third.at) == (2, 46.0)
    assert player.answered(third, 47.0, ok=True) is None  # the script is done
    assert player.counts.retries == player.counts.gave_up == 0


def test_a_failed_call_is_retried_with_backoff_then_the_turn_is_given_up():
    scripts = scripts_of([[[(0, 0.1), (1.0, 0.1), (1.0, 0.1)], [(0, 0.1)]]], [[20.0, 5.0]], [0.0])
    policy = ClientPolicy(retries=2, backoff_s=0.5, jitter=False, give_up="turn")
    player = SessionPlayer(scripts, policy, seed=1)
    (call,) = player.first_calls()
    retry1 = player.answered(call, 1.0, ok=False)
    assert (retry1.index, retry1.attempt, retry1.at) == (0, 1, 1.5)
    player.sent(retry1)
    retry2 = player.answered(retry1, 2.0, ok=False)
    assert (retry2.index, retry2.attempt, retry2.at) == (0, 2, 3.0)  # doubled
    player.sent(retry2)
    # the last retry fails too: calls 1 and 2 of the turn are skipped, then 20 s think
    after = player.answered(retry2, 4.0, ok=False)
    assert (after.index, after.attempt, after.at) == (3, 0, 24.0)
    assert (player.counts.retries, player.counts.gave_up, player.counts.turns_cut) == (2, 1, 1)


def test_giving_up_a_call_goes_on_with_the_turn_and_jitter_is_a_function_of_the_call():
    scripts = scripts_of([[[(0, 0.1), (1.5, 0.1)]]], [[20.0]], [0.0])
    policy = ClientPolicy(retries=0, give_up="call")
    player = SessionPlayer(scripts, policy, seed=1)
    (call,) = player.first_calls()
    after = player.answered(call, 2.0, ok=False)
    assert (after.index, after.at) == (1, 3.5)
    jittered = ClientPolicy(retries=5, backoff_s=8.0, jitter=True)
    one, two = SessionPlayer(scripts, jittered, seed=7), SessionPlayer(scripts, jittered, seed=7)
    waits = [one.answered(Call(0, 0, 0.0, 0.1, a), 0.0, ok=False).at for a in range(4)]
    assert (
        waits
        == [two.answered(Call(0, 0, 0.0, 0.1, a), 0.0, ok=False).at for a in reversed(range(4))][
            ::-1
        ]
    )  # fmt: skip  (order of answers is moot)
    assert all(0 <= w < 8.0 * 2**a for a, w in enumerate(waits)) and len(set(waits)) == 4
    other = SessionPlayer(scripts, jittered, seed=8)
    assert waits != [other.answered(Call(0, 0, 0.0, 0.1, a), 0.0, ok=False).at for a in range(4)]


def test_nothing_goes_out_after_the_end():
    scripts = scripts_of([[[(0, 0.1), (5.0, 0.1)]]], [[1.0]], [1.0], duration=4.0)
    player = SessionPlayer(scripts, ClientPolicy(), seed=0)
    (call,) = player.first_calls()
    assert player.answered(call, 1.2, ok=True) is None  # 6.2 s is past the 4 s run


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"retries": -1}, "workload.client.retries: must be 0..100"),
        ({"backoff_s": -1.0}, "workload.client.backoff_s: must be a finite number >= 0"),
        ({"give_up": "never"}, "workload.client.give_up: unknown 'never'"),
        ({"jitter": "yes"}, "workload.client.jitter: must be true or false"),
    ],
)
def test_a_bad_client_policy_is_refused(change, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ClientPolicy(**change)


def spec(compose_cfg, *overrides: str):
    return build(compose_cfg("experiment=oversub_250_on_8", "duration_s=300", *overrides))


def test_the_simulator_plays_sessions_closed_loop(compose_cfg):
    closed = simulate(spec(compose_cfg, "workload.loop=closed"))
    again = simulate(spec(compose_cfg, "workload.loop=closed"))
    first, second = dict(closed.summary), dict(again.summary)
    first.pop("wall_s"), second.pop("wall_s")
    assert first == second  # same seed, same summary
    requests = closed.result.requests
    assert closed.summary["requests"] > 500
    # No agent ever has two calls out at once: each goes out after the previous answer.
    order = np.lexsort((requests["arrival_s"], requests["actor"]))
    actor = requests["actor"][order]
    start = requests["arrival_s"][order]
    answered = start + requests["total_s"][order]
    same = actor[1:] == actor[:-1]
    assert np.all(start[1:][same] >= answered[:-1][same] - 1e-9)
    opened = simulate(spec(compose_cfg, "workload.loop=open")).result.requests  # overlaps
    order = np.lexsort((opened["arrival_s"], opened["actor"]))
    same = opened["actor"][order][1:] == opened["actor"][order][:-1]
    ends = (opened["arrival_s"] + opened["total_s"])[order]
    assert np.any(opened["arrival_s"][order][1:][same] < ends[:-1][same])


def test_a_slower_system_slows_closed_loop_agents_but_not_an_open_loop_plan(compose_cfg):
    slow = "latency.restore.fixed='lognormal(median=2.0, sigma=0.2)'"
    closed = simulate(spec(compose_cfg, "workload.loop=closed")).summary["requests"]
    closed_slow = simulate(spec(compose_cfg, "workload.loop=closed", slow)).summary["requests"]
    opened = simulate(spec(compose_cfg, "workload.loop=open")).summary["requests"]
    opened_slow = simulate(spec(compose_cfg, "workload.loop=open", slow)).summary["requests"]
    assert opened_slow == opened  # the plan does not care
    assert closed_slow < 0.95 * closed  # the agents waited for their answers


def test_failed_calls_are_retried_and_counted(compose_cfg):
    flaky = ("faults.restore_failure_rate=0.3", "recovery.max_activation_attempts=1")
    out = simulate(spec(compose_cfg, "workload.loop=closed", *flaky)).summary
    reliability = out["reliability"]
    assert reliability["client_retries"] > 10
    assert out["rejected"] > 0
    lenient = simulate(spec(compose_cfg, "workload.loop=closed", "workload.client.retries=0",
                            *flaky)).summary  # fmt: skip
    assert lenient["reliability"]["client_retries"] == 0
    assert lenient["reliability"]["client_gave_up"] > 0
    assert simulate(spec(compose_cfg)).summary["reliability"]["client_retries"] == 0


def test_closed_loop_config_errors(compose_cfg):
    from experiments.runs.build import ConfigError

    with pytest.raises(ConfigError, match=re.escape("workload.loop: unknown 'sometimes'")):
        spec(compose_cfg, "workload.loop=sometimes")
    with pytest.raises(ConfigError, match="shapes with waves"):
        spec(compose_cfg, "workload.loop=closed",
             "workload.shape='waves(start_s=5, period_s=20, count=5, size=8)'")  # fmt: skip
    with pytest.raises(ConfigError, match=re.escape("workload.client: unknown")):
        spec(compose_cfg, "workload.loop=closed", "+workload.client.patience=3")
    closed = spec(compose_cfg, "workload.loop=closed")
    with pytest.raises(ValueError, match="closed-loop sessions have no plan"):
        Plan.materialize(closed.workload, 60.0, 0)


def test_long_answers_take_model_time_at_the_actor(compose_cfg):
    quick = simulate(spec(compose_cfg)).result.requests["service_s"]
    share = ("workload.long_answer_share=0.2", "workload.long_answer='fixed(value=25)'")
    slow = simulate(spec(compose_cfg, *share)).result.requests["service_s"]
    assert np.mean(slow == 25.0) == pytest.approx(0.2, abs=0.04)
    assert not np.any(quick == 25.0)
    with pytest.raises(ValueError, match="long_answer_share: must be in"):
        build(compose_cfg("experiment=oversub_250_on_8", "workload.long_answer_share=1.5"))


def test_a_resent_request_id_is_applied_once(compose_cfg):
    """Agents that stop waiting after 10 s for answers that take 25 s resend: with the
    same request id the actor answers a repeat from what it did (counted as suppressed),
    with a new id it does the work again (counted as applied twice)."""
    impatient = ("workload.long_answer_share=0.2", "workload.long_answer='fixed(value=25)'",
                 "workload.client.timeout_s=10")  # fmt: skip

    def played(resend: str) -> tuple[dict, dict]:
        out = simulate(spec(compose_cfg, *impatient, f"workload.client.resend={resend}"))
        return out.summary["reliability"], out.result.requests

    same, same_requests = played("same_id")
    new, new_requests = played("new_id")
    assert same["client_timeouts"] > 20 and new["client_timeouts"] > 20
    assert same["client_duplicates_suppressed"] > 10 and same["client_duplicates_applied"] == 0
    assert new["client_duplicates_applied"] > 10 and new["client_duplicates_suppressed"] == 0
    # a suppressed repeat costs the actor only the rest of the first attempt's work, so
    # it answers sooner: more of the agents' calls end ok
    ok_same = np.sum(same_requests["outcome"] == "ok")
    ok_new = np.sum(new_requests["outcome"] == "ok")
    assert ok_same > ok_new
    patient = simulate(spec(compose_cfg, *impatient[:2])).summary["reliability"]
    assert patient["client_timeouts"] == patient["client_duplicates_suppressed"] == 0


def test_a_bad_resend_is_refused():
    with pytest.raises(ValueError, match=re.escape("workload.client.resend: unknown 'maybe'")):
        ClientPolicy(resend="maybe")
