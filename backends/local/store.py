"""The snapshot store: a directory of checkpoint images, one sub-directory per actor.

A checkpoint is written to a temporary directory and renamed into place only when it
is complete, so a crash mid-checkpoint never leaves a half image where a restore would
find it; the previous snapshot stays until the new one is in place. Paths are built
only from checked actor ids and integer versions.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from pathlib import Path

from backends.local.names import check_actor_id

_VERSION_DIR = re.compile(r"^v(\d{6,})$")


def image_bytes(directory: Path) -> int:
    """Bytes of the checkpoint image in ``directory`` (its files, not subdirectories)."""
    return sum(f.stat().st_size for f in directory.iterdir() if f.is_file())


class SnapshotStore:
    """Snapshots under ``root/<actor>/v000001``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _actor_dir(self, actor: str) -> Path:
        return self.root / check_actor_id(actor)

    def path(self, actor: str, version: int) -> Path:
        """Where ``version`` of ``actor``'s snapshot lives once complete."""
        if not isinstance(version, int) or version < 1:
            raise ValueError(f"snapshot version must be an integer >= 1 (got {version!r})")
        return self._actor_dir(actor) / f"v{version:06d}"

    def begin(self, actor: str, version: int) -> Path:
        """A fresh temporary directory to checkpoint ``version`` into."""
        final = self.path(actor, version)
        tmp = final.parent / f".tmp-{final.name}-{secrets.token_hex(4)}"
        tmp.mkdir(parents=True)
        return tmp

    def commit(self, actor: str, version: int, tmp: Path) -> Path:
        """Move a complete checkpoint into place; drop snapshots older than the previous."""
        final = self.path(actor, version)
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(fd)  # the rename is durable before we report success
        finally:
            os.close(fd)
        for old in self.versions(actor):
            if old < version - 1:
                shutil.rmtree(self.path(actor, old), ignore_errors=True)
        return final

    def abort(self, tmp: Path) -> None:
        """Discard a checkpoint that did not complete."""
        shutil.rmtree(tmp, ignore_errors=True)

    def versions(self, actor: str) -> list[int]:
        """Complete snapshot versions of ``actor``, oldest first."""
        directory = self._actor_dir(actor)
        if not directory.is_dir():
            return []
        found = (_VERSION_DIR.match(p.name) for p in directory.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def size(self, actor: str, version: int) -> int:
        """Bytes of one snapshot."""
        return image_bytes(self.path(actor, version))

    def link(self, actor: str, version: int, source: Path) -> Path:
        """Make ``version`` of ``actor`` a hard-linked copy of the image in ``source``
        (a template's golden snapshot: no bytes copied)."""
        tmp = self.begin(actor, version)
        for f in source.iterdir():
            if f.is_file():
                os.link(f, tmp / f.name)
        return self.commit(actor, version, tmp)

    def drop(self, actor: str) -> None:
        """Remove every snapshot of ``actor``."""
        shutil.rmtree(self._actor_dir(actor), ignore_errors=True)

    def total_bytes(self) -> int:
        """Bytes of all complete snapshots (hard links counted once per actor)."""
        return sum(
            f.stat().st_size
            for d in self.root.glob("*/v*")
            if _VERSION_DIR.match(d.name)
            for f in d.iterdir()
            if f.is_file()
        )
