"""Named crash points for the fault tests: ``ACTORMUX_FAILPOINT=<name>`` makes the
process SIGKILL itself when it reaches ``<name>``, exactly as a crash would (no
cleanup, no finally blocks). Unset, every failpoint is a no-op.

Names (where the local backend crashes):

* ``checkpoint.runsc_started``: runsc checkpoint is running for an actor;
* ``checkpoint.before_commit``: runsc has written the image, the store has not
  committed it yet;
* ``restore.runsc_started``: runsc restore is running for an actor.
"""

from __future__ import annotations

import os
import signal

NAMES = ("checkpoint.runsc_started", "checkpoint.before_commit", "restore.runsc_started")
_ARMED = os.environ.get("ACTORMUX_FAILPOINT")


def failpoint(name: str) -> None:
    """Crash here if the environment armed ``name``."""
    if name not in NAMES:
        raise ValueError(f"unknown failpoint {name!r}")
    if name == _ARMED:
        os.kill(os.getpid(), signal.SIGKILL)
