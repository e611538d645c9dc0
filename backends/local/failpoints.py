"""Named crash points for the fault tests: ``ACTORMUX_FAILPOINT=<name>`` makes the
process SIGKILL itself when it reaches ``<name>``, exactly as a crash would (no
cleanup, no finally blocks). Unset, every failpoint is a no-op.

Names (where the local backend crashes):

* ``checkpoint.runsc_started``: runsc checkpoint is running for an actor (through worker
  agents: the order is with the agent, not yet answered);
* ``checkpoint.before_commit``: runsc has written the image, the store has not
  committed it yet (through agents: the agent has published it, serve has not
  recorded it);
* ``restore.runsc_started``: runsc restore is running for an actor (through agents: the
  order is with the agent, not yet answered).

Worker agents die with serve (``PR_SET_PDEATHSIG``), so a crash point there is the
crash of the whole worker side too.
"""

from __future__ import annotations

import os
import signal

NAMES = ("checkpoint.runsc_started", "checkpoint.before_commit", "restore.runsc_started")
_ARMED = os.environ.get("ACTORMUX_FAILPOINT")


def armed(name: str) -> bool:
    """Whether the environment armed ``name`` (for crash points that need setting up)."""
    if name not in NAMES:
        raise ValueError(f"unknown failpoint {name!r}")
    return name == _ARMED


def failpoint(name: str) -> None:
    """Crash here if the environment armed ``name``."""
    if name not in NAMES:
        raise ValueError(f"unknown failpoint {name!r}")
    if name == _ARMED:
        os.kill(os.getpid(), signal.SIGKILL)
