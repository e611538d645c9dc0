"""The minimal root file system an actor's sandbox sees.

An empty directory, read-only, with mount points only: ``/usr`` (the host's, read-only:
the interpreter and its libraries; on Debian ``/bin``, ``/lib`` and ``/lib64`` are
links into it), ``/app`` (the template's own directory, read-only), ``/proc`` and a
small ``/tmp``. Nothing else of the host is there: no state dir, no run dir, no admin
token, no other actor's snapshot, no ``/etc``.
"""

from __future__ import annotations

import os
from pathlib import Path

MOUNT_POINTS = ("usr", "app", "proc", "tmp", "dev")
LINKS = {"bin": "usr/bin", "lib": "usr/lib", "lib64": "usr/lib64", "sbin": "usr/sbin"}


def make_rootfs(directory: Path) -> Path:
    """Create (or refresh) the root under ``directory``; return it."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o755)
    for name in MOUNT_POINTS:
        (directory / name).mkdir(mode=0o755, exist_ok=True)
    for name, target in LINKS.items():
        link = directory / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
    return directory
