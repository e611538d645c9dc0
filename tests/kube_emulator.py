"""An EMULATED Kubernetes API server for tests: kmock's ``KubernetesEmulator`` (an HTTP
emulator of the Kubernetes API, by Kopf's author), run as its own process on a loopback
port, plus the few things of the real API server that actormux's cluster code relies on
and kmock 0.8 leaves out:

* ``?watch=True``, as the official Python client spells it (kmock knows ``true`` only);
* ``metadata.namespace``, ``uid``, ``creationTimestamp`` and ``resourceVersion`` stamped
  on writes (without the namespace, kmock's watches never show an object's changes);
* optimistic concurrency: a write whose body names a ``metadata.resourceVersion`` that is
  no longer the object's is refused with 409 Conflict (how Leases are taken safely);
* equality label selectors (``a=b,c=d``) on lists and watches;
* ``timeoutSeconds`` on watches (the stream ends then).

And one thing for fault injection, which the real server does on its own schedule:
``POST /_emulator/drop-watches`` ends every open watch stream (clients must reconnect,
list again and see every object once more as ADDED).

No Kubernetes API server can run on these machines (no Docker, no kind); this is what
stands in for one. What it does not model (admission, scheduling, controllers,
strategic-merge lists, RBAC) is listed in the README.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import itertools
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import kmock
from kmock._internal import enums, k8s, rendering

RESOURCES = ("v1/pods", "apps/v1/statefulsets", "coordination.k8s.io/v1/leases")


@attrs.frozen
class Conflict(k8s.KubernetesError):
    """The object changed since the version the writer read (HTTP 409)."""

    status: int = 409
    reason: str = "Conflict"
    message: str = "the object has been modified; please apply your changes to the latest version"


def _selected(obj: dict[str, Any], selector: str) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key.strip()) != value.strip().lstrip("="):
            return False
    return True


@attrs.define(kw_only=True)
class ConsistentEmulator(k8s.KubernetesEmulator):
    """kmock's emulator with the additions listed in the module docstring."""

    _versions: Iterator[int] = attrs.field(factory=lambda: itertools.count(1), init=False)
    _dropped: asyncio.Event = attrs.field(factory=asyncio.Event, init=False)

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        if raw_request.query.get("watch") in ("True", "1"):
            query = {**raw_request.query, "watch": "true"}
            raw_request = raw_request.clone(rel_url=raw_request.rel_url.with_query(query))
        return await super().__call__(raw_request)

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if request.resource is not None and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            if request.action == enums.action.UPDATE:
                key = (request.resource, request.namespace, request.name)
                stored = self._objects[key] if key in self._objects else None  # noqa: SIM401 - no .get
                wanted = meta.get("resourceVersion")
                if stored is not None and not stored.deleted and wanted is not None:
                    have = stored.get("metadata", {}).get("resourceVersion")
                    if wanted != have:
                        raise Conflict()
            if request.action == enums.action.CREATE:
                if request.namespace is not None:  # else kmock's watches filter it out
                    meta["namespace"] = request.namespace
                meta["uid"] = str(uuid.uuid4())
                meta["creationTimestamp"] = datetime.datetime.now(datetime.UTC).strftime(
                    "%Y-%m-%dT%H:%M:%SZ"
                )
            if request.action in (enums.action.CREATE, enums.action.UPDATE):
                meta["resourceVersion"] = str(next(self._versions))
        return await super()._handle(request)

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        listing = await super()._serve_list(request)
        selector = request.params.get("labelSelector")
        if selector and isinstance(listing, dict):
            listing["items"] = [obj for obj in listing["items"] if _selected(obj, selector)]
        if isinstance(listing, dict):
            listing["metadata"] = {"resourceVersion": str(next(self._versions))}
        return listing

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[rendering.Payload]:
        dropped = self._dropped
        selector = request.params.get("labelSelector") or ""
        seconds = request.params.get("timeoutSeconds")
        ends = None if seconds is None else asyncio.get_running_loop().time() + float(seconds)
        events = super()._serve_watch(request).__aiter__()
        try:
            while True:
                following = asyncio.ensure_future(events.__anext__())
                drop = asyncio.ensure_future(dropped.wait())
                left = None if ends is None else max(0.0, ends - asyncio.get_running_loop().time())
                await asyncio.wait(
                    {following, drop}, timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
                if not following.done() and not drop.done():  # timeoutSeconds passed
                    drop.cancel()
                    following.cancel()
                    await asyncio.gather(following, drop, return_exceptions=True)
                    return
                if drop.done():  # the stream ends, as when an API server restarts
                    following.cancel()
                    await asyncio.gather(following, return_exceptions=True)
                    return
                drop.cancel()
                try:
                    payload = following.result()
                except StopAsyncIteration:
                    return
                if isinstance(payload, dict) and not _selected(payload.get("object", {}), selector):
                    continue
                yield payload
        finally:
            await events.aclose()

    async def drop_watches(self, _: rendering.Request) -> rendering.Payload:
        """End every open watch stream."""
        self._dropped.set()
        self._dropped = asyncio.Event()
        return {"dropped": True}


async def _serve(port: int) -> None:
    async with ConsistentEmulator() as emulator, kmock.Server(emulator, port=port):
        for resource in RESOURCES:
            emulator.resources[resource] = {}
        emulator["post /_emulator/drop-watches"] << emulator.drop_watches
        await asyncio.Event().wait()


class EmulatedAPI:
    """The emulator as a process on 127.0.0.1:``port`` (see :func:`emulated_api`)."""

    def __init__(self, port: int, proc: subprocess.Popen[bytes]) -> None:
        self.port, self.proc = port, proc

    @property
    def url(self) -> str:
        """The API server's address, as a kubeconfig would give it."""
        return f"http://127.0.0.1:{self.port}"

    def drop_watches(self) -> None:
        """End every open watch stream now."""
        request = urllib.request.Request(
            f"{self.url}/_emulator/drop-watches", method="POST", data=b"{}",
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def emulated_api(log_dir: Path) -> Iterator[EmulatedAPI]:
    """Run the emulator in its own process until the block ends."""
    port = _free_port()
    with (log_dir / "kube-emulator.log").open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--port", str(port)], stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/version", timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the emulator did not start: {log_dir}") from None
                time.sleep(0.05)
        yield EmulatedAPI(port, proc)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(_serve(parser.parse_args().port))
