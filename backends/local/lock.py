"""One backend per directory: an exclusive lock on the run dir and on the state dir.

A second ``serve`` (or experiment, or ``cleanup``) on the same instance or state dir
fails at once with :class:`InstanceBusy`, naming the process that holds the lock,
before it changes anything. The lock is an flock on ``<dir>/.lock``: the kernel drops
it when its holder dies, so a crashed ``serve`` never leaves a stale lock behind. Its
file descriptor is not inherited by child processes (sandboxes outlive their parent).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

LOCK_FILE = ".lock"


class InstanceBusy(RuntimeError):  # noqa: N818 - reads well at call sites
    """Another process holds the lock."""


class DirectoryLock:
    """An exclusive, non-blocking lock on ``directory`` (created 0700 if missing)."""

    def __init__(self, directory: Path, what: str) -> None:
        self.directory = directory
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> DirectoryLock:
        """Take the lock or raise :class:`InstanceBusy`."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.directory / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise InstanceBusy(
                f"{self.what} {self.directory} is in use by pid {holder}; stop that one first "
                "(or use another backend.instance / backend.state_dir)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the lock up (also happens when the process exits)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None
