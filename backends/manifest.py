"""A snapshot's manifest: which actor, version and activation (generation) it is, and
every image file's size and sha256. Shared by the local store (``backends/local``) and
the worker agent's snapshot transfer (``backends/agent``), so a snapshot written by one
is checked the same way by the other.

A manifest is JSON: ``format``, ``actor``, ``version``, ``generation``,
``created_unix``, ``files`` (``name``, ``bytes``, ``sha256``), ``requests`` (the
acknowledged requests the snapshot holds beyond the previous version) and
``requests_known``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
FORMAT = 1


@dataclass(frozen=True)
class SnapshotFile:
    """One file of a snapshot, as its manifest records it."""

    name: str
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Snapshot:
    """A snapshot as its manifest describes it."""

    actor: str
    version: int
    generation: int
    files: tuple[SnapshotFile, ...]
    created_unix: float
    requests: tuple[str, ...] = ()  # acknowledged since the previous version (ids)
    requests_known: bool = True  # False: saved after a crash, which requests is unknown

    @property
    def bytes(self) -> int:
        """Bytes of its image files."""
        return sum(f.bytes for f in self.files)


def to_json(snapshot: Snapshot) -> str:
    """The manifest's text."""
    data = {
        "format": FORMAT,
        "actor": snapshot.actor,
        "version": snapshot.version,
        "generation": snapshot.generation,
        "created_unix": snapshot.created_unix,
        "files": [{"name": f.name, "bytes": f.bytes, "sha256": f.sha256} for f in snapshot.files],
        "requests": list(snapshot.requests),
        "requests_known": snapshot.requests_known,
    }
    return json.dumps(data, indent=1) + "\n"


def from_json(text: str | bytes) -> Snapshot:
    """Parse a manifest; ValueError (with the reason) if it is not one."""
    try:
        data = json.loads(text)
        if not isinstance(data, Mapping):
            raise TypeError("not an object")
        return _parse(data)
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"not a snapshot manifest: {e}") from None


def _parse(data: Mapping[str, Any]) -> Snapshot:
    if data.get("format", FORMAT) != FORMAT:
        raise ValueError(f"format {data.get('format')!r}, expected {FORMAT}")
    files = tuple(
        SnapshotFile(str(f["name"]), int(f["bytes"]), str(f["sha256"])) for f in data["files"]
    )
    for f in files:
        if not f.name or f.name.startswith(".") or "/" in f.name or f.name == MANIFEST:
            raise ValueError(f"bad file name {f.name!r}")
    return Snapshot(
        actor=str(data["actor"]),
        version=int(data["version"]),
        generation=int(data["generation"]),
        files=files,
        created_unix=float(data["created_unix"]),
        requests=tuple(str(r) for r in data.get("requests", ())),
        requests_known=bool(data.get("requests_known", True)),
    )


def read(directory: Path) -> Snapshot | None:
    """The manifest in ``directory`` (None if missing or unreadable)."""
    try:
        return from_json((directory / MANIFEST).read_bytes())
    except (OSError, ValueError):
        return None


def fsync_path(path: Path) -> None:
    """fsync a file or a directory by its path (a directory: its entries are durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_of(path: Path) -> str:
    """The sha256 of a file, hex."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def image_files(directory: Path) -> list[Path]:
    """The image files runsc wrote into ``directory`` (not markers or the manifest)."""
    return sorted(
        p for p in directory.iterdir() if p.is_file() and not p.name.startswith(".")
        and p.name != MANIFEST
    )  # fmt: skip


def describe_file(path: Path) -> SnapshotFile:
    """A manifest entry for ``path`` (its size and sha256)."""
    return SnapshotFile(path.name, path.stat().st_size, sha256_of(path))


def problem_with(directory: Path, snapshot: Snapshot) -> str | None:
    """What is wrong with the files in ``directory`` against ``snapshot`` (None: they
    match: every file present, of its size, with its sha256)."""
    if not snapshot.files:
        return "its manifest lists no files"
    for f in snapshot.files:
        path = directory / f.name
        if not path.is_file():
            return f"{f.name} is missing"
        size = path.stat().st_size
        if size != f.bytes:
            how = "truncated?" if size < f.bytes else "grew?"
            return f"{f.name} has {size} bytes, its manifest says {f.bytes} ({how})"
        digest = sha256_of(path)
        if digest != f.sha256:
            return f"{f.name} does not match its sha256 ({digest[:12]} != {f.sha256[:12]})"
    return None
