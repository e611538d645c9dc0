"""The actor templates the local backend offers: the programs it runs inside sandboxes.

Each template is a Python program in ``backends/gvisor/templates/`` (standard library
only). Inside its sandbox that directory is ``/app`` (read-only) and the program runs
with the host's Python from ``/usr`` and the actor port.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"


APP = "/app"  # where a template's directory appears inside its sandbox


@dataclass(frozen=True)
class Template:
    """How to start an actor of a kind: the program run inside the sandbox (paths as
    the sandbox sees them), and the host directory mounted read-only at ``/app``."""

    name: str
    args: tuple[str, ...]
    directory: Path = TEMPLATE_DIR


def agent_template_name(state_mb: int) -> str:
    """The name of the agent template with ``state_mb`` MiB of state."""
    return f"agent-{state_mb}"


def default_templates(
    python: str, port: int, agent_state_mb: int | Sequence[int]
) -> dict[str, Template]:
    """``counter``, ``agent`` (state: the first of ``agent_state_mb``) and ``agent-<MiB>``
    for each size: sizes that differ between actors make a snapshot's size, and so its
    dependence on size, measurable."""
    sizes = [agent_state_mb] if isinstance(agent_state_mb, int) else list(agent_state_mb)
    if not sizes:
        raise ValueError("agent_state_mb: give at least one size")

    def agent(name: str, mb: int) -> Template:
        return Template(name, (python, f"{APP}/agent.py", str(port), str(mb)))

    return {
        "counter": Template("counter", (python, f"{APP}/counter.py", str(port))),
        "agent": agent("agent", sizes[0]),
        **{agent_template_name(mb): agent(agent_template_name(mb), mb) for mb in sizes},
    }
