"""The state directory: SQLite and snapshots that survive restarts, and a marker that
says it is actormux's.

A directory is an actormux state dir when it holds ``actormux-state.json``. The
backend creates the marker in an empty or new directory and refuses any other
directory, so it never writes into (and ``cleanup --purge-state`` never deletes) a
directory that is not its own. The directory is 0700, its files 0600.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

MARKER = "actormux-state.json"
FORMAT = 2


class NotAStateDir(ValueError):  # noqa: N818
    """A directory that is not (and cannot become) an actormux state dir."""


def is_state_dir(path: Path) -> bool:
    """True when ``path`` is a directory with an actormux marker in it."""
    try:
        data = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("actormux") == "state"


def open_state_dir(path: Path) -> Path:
    """``path`` as a state dir: checked if it is one, initialised if it is new or empty,
    refused (:class:`NotAStateDir`) otherwise."""
    path = path.resolve()
    if path.exists() and not path.is_dir():
        raise NotAStateDir(f"backend.state_dir {path} is not a directory")
    if is_state_dir(path):
        data = json.loads((path / MARKER).read_text())
        if data.get("format") != FORMAT:
            raise NotAStateDir(
                f"backend.state_dir {path} was written by another version of actormux "
                f"(format {data.get('format')}, this one needs {FORMAT}); use a new directory"
            )
    else:
        if path.exists() and any(p.name != ".lock" for p in path.iterdir()):
            raise NotAStateDir(
                f"backend.state_dir {path} is not empty and not an actormux state dir "
                f"(no {MARKER}); refusing to write into it"
            )
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        marker = {"actormux": "state", "format": FORMAT, "created_unix": time.time()}
        fd = os.open(path / MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(marker) + "\n")
    os.chmod(path, 0o700)
    return path
