"""The local backend's config and templates, without sandboxes (runs everywhere)."""

from __future__ import annotations

import numpy as np
import pytest

from backends.gvisor.catalog import default_templates
from backends.local.settings import local_config
from experiments.real.run import real_snapshot_bytes

pytestmark = pytest.mark.real  # starts servers or processes: run one at a time

MIB = 1 << 20
BASE = {
    "instance": 0, "port": 8000, "admin_port": 8001, "template": "agent",
    "agent_state_mb": 16, "activation_timeout_s": 20, "request_timeout_s": 60,
    "sample_interval_s": 1.0, "max_body_bytes": 1024, "state_dir": "/tmp/x",
    "observe_interval_s": 2.0, "snapshot_reserve_mb": 64,
    "max_header_bytes": 16384, "header_timeout_s": 10, "body_timeout_s": 30,
    "idle_timeout_s": 60, "max_connections": 1024,
}  # fmt: skip


def test_agent_state_sizes_may_be_one_or_a_list():
    assert local_config(BASE, workers=2).settings.agent_state_mb == 16
    cfg = local_config({**BASE, "agent_state_mb": [4, 32, 96]}, workers=2)
    assert cfg.settings.agent_state_mb == (4, 32, 96)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([], "non-empty and distinct"),
        ([4, 4], "non-empty and distinct"),
        ([4, 0], "must be an integer 1..4096 (got 0)"),
        ("big", "must be an integer 1..4096 (got 'big')"),
    ],
)
def test_bad_agent_state_sizes_are_refused(value, message):
    with pytest.raises(ValueError, match=r"backend\.agent_state_mb") as err:
        local_config({**BASE, "agent_state_mb": value}, workers=2)
    assert message in str(err.value)


def test_each_size_is_a_template_and_agent_is_the_first():
    templates = default_templates("/usr/bin/python3", 8080, (4, 32))
    assert sorted(templates) == ["agent", "agent-32", "agent-4", "counter"]
    assert templates["agent"].args[-1] == "4"
    assert templates["agent-32"].args[-1] == "32"
    assert sorted(default_templates("/usr/bin/python3", 8080, 8)) == [
        "agent",
        "agent-8",
        "counter",
    ]


def test_experiment_actors_take_the_sizes_in_turn():
    def templates(template: str, sizes: int | list[int], actors: int) -> list[str]:
        config = local_config({**BASE, "template": template, "agent_state_mb": sizes}, workers=2)
        return config.actor_templates(actors)

    assert templates("agent", [4, 32], 5) == [
        "agent-4", "agent-32", "agent-4", "agent-32", "agent-4",
    ]  # fmt: skip
    assert templates("agent", 16, 2) == ["agent", "agent"]
    assert templates("counter", [4, 32], 2) == ["counter", "counter"]


def test_simulator_gets_the_sizes_the_run_measured():
    templates = {"a0": "agent-4", "a1": "agent-32", "a2": "agent-4", "a3": "counter"}
    planned = np.full(4, 16 * MIB)
    # agent-4 had a golden image; agent-32 actors started cold and were checkpointed
    # twice; counter neither: it keeps the planned size.
    checkpoints = {"actor": ["a1", "a1"], "snapshot_bytes": [35 * MIB, 37 * MIB]}
    sizes = real_snapshot_bytes(planned, templates, {"agent-4": 7 * MIB}, checkpoints)
    assert sizes.tolist() == [7 * MIB, 36 * MIB, 7 * MIB, 16 * MIB]
    assert planned.tolist() == [16 * MIB] * 4  # not modified
