"""Snapshots to and from URIs, through fsspec.

A snapshot at a URI is a directory (a key prefix in an object store) holding the image
files runsc wrote and ``manifest.json`` (``backends/manifest.py``). Publishing writes
every image file first and the manifest last, and refuses a location that already has
a manifest: on an object store, where there is no rename, a snapshot exists exactly
when its manifest does, and versions are immutable. On ``file://`` the files go into a
hidden sibling directory that is renamed into place (the same commit point as the local
store), made 0600/0700 and fsynced.

Fetching reads the manifest, checks that it is the snapshot asked for, downloads each
file and checks its size and sha256; a mismatch is :class:`Unusable` (say what is
wrong). ``file://`` snapshots are checked in place, never copied.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from backends import manifest
from backends.manifest import MANIFEST, Snapshot, fsync_path


class Unusable(RuntimeError):  # noqa: N818 - a verdict on a snapshot
    """The snapshot at a URI cannot be restored (missing, damaged, not the one asked)."""


class AlreadyPublishedError(FileExistsError):
    """A snapshot is already published at that URI (versions are immutable)."""


StorageOptions = Mapping[str, Mapping[str, Any]]  # fsspec options per protocol


def _filesystem(uri: str, options: StorageOptions) -> tuple[Any, str]:
    import fsspec  # a cluster dependency: keep it off the simulator's import path

    protocol = uri.partition("://")[0]
    fs, root = fsspec.core.url_to_fs(uri, **dict(options.get(protocol, {})))
    return fs, str(root)


def local_path(uri: str) -> Path | None:
    """The directory a ``file://`` URI names (None for any other scheme)."""
    return Path(uri.removeprefix("file://")) if uri.startswith("file:///") else None


def _expect(snapshot: Snapshot, actor: str, version: int, uri: str) -> None:
    if (snapshot.actor, snapshot.version) != (actor, version):
        raise Unusable(f"{uri} holds {snapshot.actor} v{snapshot.version}, not {actor} v{version}")


def fetch(
    uri: str, into: Path, *, actor: str, version: int, options: StorageOptions | None = None
) -> tuple[Snapshot, Path]:
    """The snapshot of ``actor`` ``version`` at ``uri``, checked, as a local directory:
    the URI's own directory for ``file://``, else a download into ``into`` (created;
    the caller removes it). Raises :class:`Unusable`."""
    options = options or {}
    path = local_path(uri)
    if path is not None:
        found = manifest.read(path)
        if found is None:
            raise Unusable(f"{uri}: its manifest is missing or unreadable")
        _expect(found, actor, version, uri)
        problem = manifest.problem_with(path, found)
        if problem is not None:
            raise Unusable(f"{uri}: {problem}")
        return found, path
    fs, root = _filesystem(uri, options)
    try:
        found = manifest.from_json(fs.cat_file(f"{root}/{MANIFEST}"))
    except FileNotFoundError:
        raise Unusable(f"{uri}: no manifest (not a published snapshot)") from None
    except ValueError as e:
        raise Unusable(f"{uri}: {e}") from None
    _expect(found, actor, version, uri)
    into.mkdir(mode=0o700, parents=True)
    for f in found.files:
        try:
            fs.get_file(f"{root}/{f.name}", str(into / f.name))
        except FileNotFoundError:
            raise Unusable(f"{uri}: {f.name} is missing") from None
        os.chmod(into / f.name, 0o600)
    problem = manifest.problem_with(into, found)
    if problem is not None:
        raise Unusable(f"{uri}: {problem}")
    return found, into


def describe(
    staging: Path, *, actor: str, version: int, generation: int, requests: tuple[str, ...],
    created_unix: float,
) -> Snapshot:  # fmt: skip
    """The manifest of the image runsc wrote into ``staging`` (each file hashed)."""
    files = manifest.image_files(staging)
    if not files:
        raise FileNotFoundError(f"no image in {staging}")
    return Snapshot(
        actor, version, generation, tuple(manifest.describe_file(p) for p in files),
        created_unix, requests,
    )  # fmt: skip


def publish(
    staging: Path, snapshot: Snapshot, uri: str, options: StorageOptions | None = None
) -> None:
    """Put the image in ``staging`` (described by ``snapshot``) at ``uri``; the
    manifest goes last. Raises :class:`AlreadyPublishedError` if ``uri`` holds a snapshot."""
    options = options or {}
    path = local_path(uri)
    if path is not None:
        _publish_file(staging, snapshot, path)
        return
    fs, root = _filesystem(uri, options)
    if fs.exists(f"{root}/{MANIFEST}"):
        raise AlreadyPublishedError(f"{uri} already holds a snapshot")
    for f in snapshot.files:
        fs.put_file(str(staging / f.name), f"{root}/{f.name}")
    fs.pipe_file(f"{root}/{MANIFEST}", manifest.to_json(snapshot).encode())


def _publish_file(staging: Path, snapshot: Snapshot, final: Path) -> None:
    if final.exists():
        raise AlreadyPublishedError(f"{final} already holds a snapshot")
    final.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    part = final.with_name(f".part-{final.name}-{secrets.token_hex(4)}")
    part.mkdir(mode=0o700)
    try:
        for f in snapshot.files:
            target = part / f.name
            try:
                os.link(staging / f.name, target)  # same file system: no copy
            except OSError:
                shutil.copyfile(staging / f.name, target)
            os.chmod(target, 0o600)
            fsync_path(target)
        fd = os.open(part / MANIFEST, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(manifest.to_json(snapshot))
            out.flush()
            os.fsync(out.fileno())
        fsync_path(part)
        os.rename(part, final)  # the commit point (refused if final appeared meanwhile)
        fsync_path(final.parent)
    except BaseException:
        shutil.rmtree(part, ignore_errors=True)
        raise


def snapshot_uri(root: str, actor: str, version: int) -> str:
    """Where version ``version`` of ``actor`` lives under ``root`` (a URI)."""
    if version < 1:
        raise ValueError(f"snapshot version must be >= 1 (got {version})")
    return f"{root.rstrip('/')}/{actor}/v{version:06d}"


def published(root: str, actor: str, options: StorageOptions | None = None) -> dict[int, int]:
    """Version -> bytes of every snapshot of ``actor`` published under ``root`` (a
    snapshot exists exactly when its manifest does)."""
    fs, base = _filesystem(f"{root.rstrip('/')}/{actor}", options or {})
    found: dict[int, int] = {}
    try:
        entries = fs.ls(base, detail=False)
    except FileNotFoundError:
        return found
    for entry in entries:
        name = str(entry).rstrip("/").rsplit("/", 1)[-1]
        if len(name) >= 7 and name[0] == "v" and name[1:].isdigit():
            try:
                snapshot = manifest.from_json(fs.cat_file(f"{entry}/{MANIFEST}").decode())
            except (FileNotFoundError, ValueError, KeyError):
                continue  # not published (no manifest yet), or not readable
            if snapshot.actor == actor and snapshot.version == int(name[1:]):
                found[snapshot.version] = snapshot.bytes
    return found


def copy(
    source: str, destination: str, *, actor: str, version: int,
    options: StorageOptions | None = None,
) -> Snapshot:  # fmt: skip
    """Publish the snapshot at ``source`` again at ``destination`` as ``actor``'s
    ``version`` (generation 0, no requests): how a new actor starts from a golden image.
    The files are copied inside the store (hard links on ``file://``, server-side copies
    on an object store), the manifest written last; raises :class:`Unusable` if
    ``source`` holds no snapshot, :class:`AlreadyPublishedError` if ``destination`` does."""
    options = options or {}
    path = local_path(source)
    if path is not None:
        found = manifest.read(path)
    else:
        fs, root = _filesystem(source, options)
        try:
            found = manifest.from_json(fs.cat_file(f"{root}/{MANIFEST}"))
        except (FileNotFoundError, ValueError):
            found = None
    if found is None:
        raise Unusable(f"{source}: its manifest is missing or unreadable")
    snapshot = Snapshot(actor, version, 0, found.files, time.time())
    if path is not None:
        _publish_file(path, snapshot, Path(destination.removeprefix("file://")))
        return snapshot
    fs, target = _filesystem(destination, options)
    if fs.exists(f"{target}/{MANIFEST}"):
        raise AlreadyPublishedError(f"{destination} already holds a snapshot")
    for f in found.files:
        fs.copy(f"{root}/{f.name}", f"{target}/{f.name}")
    fs.pipe_file(f"{target}/{MANIFEST}", manifest.to_json(snapshot).encode())
    return snapshot


def remove_tree(root: str, options: StorageOptions | None = None) -> None:
    """Remove everything under the URI ``root`` (a finished run's own snapshots)."""
    fs, base = _filesystem(root, options or {})
    with contextlib.suppress(FileNotFoundError):
        fs.rm(base, recursive=True)
