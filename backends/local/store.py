"""The snapshot store: the one source of truth for which snapshots exist.

Layout, under ``root`` (``<state dir>/snapshots``)::

    <actor>/v000005/checkpoint.img      the image runsc wrote
    <actor>/v000005/manifest.json       version, generation, each file's size and sha256
    <actor>/.tmp-v000006-g12-1a2b3c4d/  a checkpoint being written

A snapshot version exists exactly when its directory, with its manifest inside, has
been renamed into place: the commit protocol below makes that the single commit
point, so nothing else (no database row) can disagree with it.

Commit protocol (:meth:`SnapshotStore.commit`), for version V of generation G:

1. runsc writes the image into ``.tmp-vV-gG-*``; the wrapper that runs it (see
   ``runsc.py``) holds an flock on ``.lock`` inside it meanwhile and creates
   ``.complete`` only if runsc succeeded, so even a checkpoint whose control plane
   was killed leaves a verdict behind;
2. each file is made 0600, fsynced and hashed; ``manifest.json`` is written through a
   temporary file, fsynced, renamed; the directory is fsynced;
3. the directory is renamed to ``vV`` (refused if ``vV`` exists: versions are
   immutable) and the actor's directory fsynced. This rename is the commit;
4. old versions the retention policy lets go are removed (by default all but the
   newest two), at once or in periodic sweeps (:meth:`SnapshotStore.collect`).

After a crash at any instruction, :meth:`SnapshotStore.pending` lists the temporary
directories: one with ``.complete`` whose generation is still the actor's newest and
whose version is newer than the last committed is finished (steps 2-4); every other
is discarded. A snapshot is checked against its manifest before every restore;
a mismatch raises :class:`SnapshotUnusable`, which says what is lost. Paths are built
only from checked actor ids and integers.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from backends import manifest
from backends.gvisor.names import check_actor_id
from backends.manifest import MANIFEST, Snapshot, fsync_path, image_files
from backends.state import StaleGeneration
from control.policies import KeepNewest, RetentionPolicy

COMPLETE = ".complete"  # written by the checkpoint wrapper iff runsc succeeded
REQUESTS = ".requests.json"  # written before runsc: the acknowledged requests it holds
LOCK = ".lock"  # held by the checkpoint wrapper while runsc runs
_VERSION_DIR = re.compile(r"^v(\d{6,})$")
_TMP_DIR = re.compile(r"^\.tmp-v(\d{6,})-g(\d+)-[0-9a-f]+$")


class SnapshotUnusable(RuntimeError):  # noqa: N818 - a verdict, not an error to recover from
    """A snapshot cannot be restored; the message says which, why, and what is lost."""

    def __init__(self, actor: str, version: int, problem: str, fallback: Snapshot | None):
        self.actor, self.version, self.problem, self.fallback = actor, version, problem, fallback
        if fallback is None:
            lost = "no older snapshot is intact: all of its state is lost"
        else:
            taken = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(fallback.created_unix))
            lost = (
                f"newest intact snapshot: v{fallback.version} (taken {taken}); what {actor} "
                f"acknowledged after it is lost unless v{version} is repaired"
            )
        super().__init__(f"snapshot v{version} of {actor} is unusable: {problem}; {lost}")


@dataclass(frozen=True)
class PendingCheckpoint:
    """A temporary checkpoint directory found at startup."""

    actor: str
    version: int
    generation: int
    path: Path

    @property
    def complete(self) -> bool:
        """runsc finished it successfully (the wrapper's verdict)."""
        return (self.path / COMPLETE).exists()


def image_bytes(directory: Path) -> int:
    """Bytes of the checkpoint image in ``directory`` (its image files only)."""
    return sum(f.stat().st_size for f in image_files(directory))


def write_requests(directory: Path, requests: tuple[str, ...]) -> None:
    """Record in a checkpoint's temporary directory, before runsc runs, which
    acknowledged requests the checkpoint will hold (so a commit that recovery finishes
    after a crash still names them)."""
    part = directory / (REQUESTS + ".part")
    part.write_text(json.dumps(list(requests)))
    os.rename(part, directory / REQUESTS)


def read_requests(directory: Path) -> tuple[tuple[str, ...], bool]:
    """The requests :func:`write_requests` recorded, and whether they are known."""
    try:
        return tuple(str(r) for r in json.loads((directory / REQUESTS).read_text())), True
    except (OSError, ValueError, TypeError):
        return (), False


def wait_for_writer(directory: Path, timeout_s: float) -> bool:
    """Wait until no checkpoint wrapper holds ``directory/.lock`` (True), or time out."""
    lock = directory / LOCK
    if not lock.exists():
        return True
    fd = os.open(lock, os.O_RDONLY)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.05)
    finally:
        os.close(fd)


class SnapshotStore:
    """Snapshots under ``root/<actor>/v000001``; an index of them is kept in memory."""

    def __init__(
        self, root: Path, *, keep: int = 2, retention: RetentionPolicy | None = None
    ) -> None:
        """``retention`` decides which old versions are deleted (default: all but the
        newest ``keep``); with a ``gc_interval_s`` they wait for :meth:`collect`."""
        self.retention = retention or KeepNewest(keep=keep)
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o700)
        self._index: dict[str, dict[int, int]] = {}  # actor -> version -> bytes
        # Commits run in worker threads while a sweep may collect: the index and the
        # deletions it drives change under this lock.
        self._lock = threading.RLock()
        for actor_dir in root.iterdir():
            if actor_dir.is_dir() and not actor_dir.name.startswith("."):
                for version in self._scan(actor_dir.name):
                    manifest = self._read_manifest(actor_dir.name, version)
                    if manifest is not None:
                        self._index.setdefault(actor_dir.name, {})[version] = manifest.bytes

    # ------------------------------------------------------------ paths

    def _actor_dir(self, actor: str) -> Path:
        return self.root / check_actor_id(actor)

    def path(self, actor: str, version: int) -> Path:
        """Where ``version`` of ``actor``'s snapshot lives once committed."""
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(f"snapshot version must be an integer >= 1 (got {version!r})")
        return self._actor_dir(actor) / f"v{version:06d}"

    def _scan(self, actor: str) -> list[int]:
        directory = self._actor_dir(actor)
        if not directory.is_dir():
            return []
        found = (_VERSION_DIR.fullmatch(p.name) for p in directory.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    # ------------------------------------------------------------ reading

    def versions(self, actor: str) -> list[int]:
        """Committed versions of ``actor``, oldest first."""
        with self._lock:
            return sorted(self._index.get(actor, {}))

    def latest(self, actor: str) -> int:
        """The newest committed version (0: none)."""
        with self._lock:
            versions = self._index.get(actor)
            return max(versions) if versions else 0

    def size(self, actor: str, version: int) -> int:
        """Bytes of one committed snapshot."""
        return self._index[actor][version]

    def total_bytes(self) -> int:
        """Bytes of all committed snapshots (hard-linked files counted per snapshot)."""
        with self._lock:
            return sum(sum(v.values()) for v in self._index.values())

    def actors(self) -> list[str]:
        """Actors with at least one committed snapshot."""
        with self._lock:
            return sorted(a for a, v in self._index.items() if v)

    def _read_manifest(self, actor: str, version: int) -> Snapshot | None:
        return self.manifest_in(self.path(actor, version))

    @staticmethod
    def manifest_in(directory: Path) -> Snapshot | None:
        """The manifest in ``directory`` (None if missing or unreadable)."""
        return manifest.read(directory)

    def manifest(self, actor: str, version: int) -> Snapshot | None:
        """The manifest of a committed snapshot (None if missing or unreadable)."""
        return self._read_manifest(actor, version)

    def verify(self, actor: str, version: int) -> Snapshot:
        """Check ``version`` against its manifest (sizes, then sha256 of every file);
        raise :class:`SnapshotUnusable` saying exactly what is wrong and what is lost."""
        problem = self._problem(actor, version)
        if problem is None:
            snapshot = self._read_manifest(actor, version)
            assert snapshot is not None
            return snapshot
        fallback = None
        for older in reversed([v for v in self._scan(actor) if v < version]):
            if self._problem(actor, older) is None:
                fallback = self._read_manifest(actor, older)
                break
        raise SnapshotUnusable(actor, version, problem, fallback)

    def _problem(self, actor: str, version: int) -> str | None:
        directory = self.path(actor, version)
        if not directory.is_dir():
            return "its directory is missing"
        snapshot = self._read_manifest(actor, version)
        if snapshot is None:
            return "its manifest is missing or unreadable"
        if (snapshot.actor, snapshot.version) != (actor, version):
            return f"its manifest describes {snapshot.actor} v{snapshot.version}"
        if any("/" in f.name for f in snapshot.files):
            return "its manifest names a file outside its directory"
        return manifest.problem_with(directory, snapshot)

    # ------------------------------------------------------------ writing

    def begin(self, actor: str, version: int, generation: int) -> Path:
        """A fresh temporary directory to checkpoint ``version`` (generation) into."""
        final = self.path(actor, version)
        final.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = final.parent / f".tmp-{final.name}-g{generation}-{secrets.token_hex(4)}"
        tmp.mkdir(mode=0o700)
        return tmp

    def commit(
        self, actor: str, version: int, generation: int, tmp: Path, *, fence: int,
        requests: tuple[str, ...] | None = None,
    ) -> Snapshot:  # fmt: skip
        """Make the complete checkpoint in ``tmp`` committed version ``version`` (see the
        module docstring). ``fence`` is the actor's newest generation: a checkpoint of an
        older one raises :class:`StaleGeneration` and commits nothing. ``requests`` are
        the acknowledged requests it holds beyond the previous version (its manifest
        names them, so losing this version says exactly what is lost); None: as the
        driver wrote them into ``tmp`` before the checkpoint, or unknown."""
        if generation != fence:
            raise StaleGeneration(
                f"checkpoint of {actor} generation {generation} is stale (newest: {fence})"
            )
        final = self.path(actor, version)
        if final.exists():
            raise FileExistsError(f"snapshot v{version} of {actor} already exists")
        files = image_files(tmp)
        if not files:
            raise FileNotFoundError(f"no image in {tmp}")
        entries = []
        for path in files:
            os.chmod(path, 0o600)
            fsync_path(path)
            entries.append(manifest.describe_file(path))
        known = True
        if requests is None:
            requests, known = read_requests(tmp)
        snapshot = Snapshot(
            actor, version, generation, tuple(entries), time.time(), requests, known
        )
        self._write_manifest(tmp, snapshot)
        os.rename(tmp, final)  # the commit point
        fsync_path(final.parent)
        self._add(actor, version, snapshot.bytes, prune=True)
        return snapshot

    def _write_manifest(self, directory: Path, snapshot: Snapshot) -> None:
        part = directory / (MANIFEST + ".part")
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(manifest.to_json(snapshot))
            f.flush()
            os.fsync(f.fileno())
        os.rename(part, directory / MANIFEST)
        fsync_path(directory)

    def record_published(self, actor: str, version: int) -> Snapshot:
        """Index ``version`` of ``actor``, committed into this store's layout by another
        writer (a worker agent publishing to ``file://``, which commits by the same
        rename), then prune as :meth:`commit` does."""
        snapshot = self._read_manifest(actor, version)
        if snapshot is None or (snapshot.actor, snapshot.version) != (actor, version):
            raise SnapshotUnusable(actor, version, "no matching manifest was published", None)
        self._add(actor, version, snapshot.bytes, prune=True)
        return snapshot

    def _add(self, actor: str, version: int, size: int, *, prune: bool) -> None:
        """Index a committed version; with ``prune`` and no sweeps, delete what the
        retention policy lets go."""
        with self._lock:
            self._index.setdefault(actor, {})[version] = size
            if prune and self.retention.gc_interval_s == 0:
                self._delete_old(actor)

    def _delete_old(self, actor: str) -> None:
        with self._lock:
            for old in self.retention.to_delete(self.versions(actor)):
                del self._index[actor][old]
                shutil.rmtree(self.path(actor, old), ignore_errors=True)

    def collect(self) -> None:
        """A garbage-collection sweep: delete every actor's versions the retention
        policy lets go."""
        with self._lock:
            for actor in sorted(self._index):
                self._delete_old(actor)

    def abort(self, tmp: Path) -> None:
        """Discard a checkpoint that did not complete (or was fenced)."""
        shutil.rmtree(tmp, ignore_errors=True)

    def link(self, actor: str, version: int, source: Snapshot, source_dir: Path) -> Snapshot:
        """Make ``version`` of ``actor`` a hard-linked copy of the committed image in
        ``source_dir`` (a template's golden snapshot: no bytes copied, none hashed)."""
        tmp = self.begin(actor, version, 0)
        for f in source.files:
            os.link(source_dir / f.name, tmp / f.name)
        snapshot = Snapshot(actor, version, 0, source.files, time.time())
        self._write_manifest(tmp, snapshot)
        final = self.path(actor, version)
        os.rename(tmp, final)
        fsync_path(final.parent)
        self._add(actor, version, snapshot.bytes, prune=False)
        return snapshot

    def seal(self, directory: Path, actor: str) -> Snapshot:
        """Write a manifest for a finished image outside the store (a golden image)."""
        entries = []
        for path in image_files(directory):
            os.chmod(path, 0o600)
            entries.append(manifest.describe_file(path))
        snapshot = Snapshot(actor, 1, 0, tuple(entries), time.time())
        self._write_manifest(directory, snapshot)
        return snapshot

    def set_aside(self, actor: str, newer_than: int) -> list[Path]:
        """Versions of ``actor`` newer than ``newer_than`` stop being versions (an operator
        chose to go on from an older one): they are kept, renamed ``.set-aside-v*``, for
        inspection, and their numbers are free again."""
        moved = []
        for version in [v for v in self._scan(actor) if v > newer_than]:
            path = self.path(actor, version)
            target = path.parent / f".set-aside-{path.name}-{secrets.token_hex(4)}"
            os.rename(path, target)
            with self._lock:
                self._index.get(actor, {}).pop(version, None)
            moved.append(target)
        if moved:
            fsync_path(self._actor_dir(actor))
        return moved

    def drop(self, actor: str) -> None:
        """Remove every snapshot of ``actor``."""
        with self._lock:
            self._index.pop(actor, None)
        shutil.rmtree(self._actor_dir(actor), ignore_errors=True)

    # ------------------------------------------------------------ after a crash

    def pending(self) -> list[PendingCheckpoint]:
        """Temporary checkpoint directories (a crash interrupted their commit)."""
        found = []
        for actor_dir in sorted(self.root.iterdir()):
            if not actor_dir.is_dir() or actor_dir.name.startswith("."):
                continue
            for tmp in sorted(actor_dir.iterdir()):
                m = _TMP_DIR.fullmatch(tmp.name)
                if m and tmp.is_dir():
                    found.append(
                        PendingCheckpoint(actor_dir.name, int(m.group(1)), int(m.group(2)), tmp)
                    )
        return found
