"""The counter actor: POST increments an in-memory counter and returns it; GET reads it.

A POST with ``?wake_after=SECONDS`` also asks the platform to wake the actor then (its
answer carries ``wake_after_s``, which the server sends as ``X-Actormux-Wake-After``);
a wake-up arrives as ``POST /actormux/wake`` and is counted in ``wakes`` (in the
answer once there has been one)."""

from __future__ import annotations

import sys
import threading
from urllib.parse import parse_qs, urlsplit

from _server import serve  # the script's directory is on sys.path


class Counter:
    """The actor's whole state: two integers."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0
        self.wakes = 0

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, object]]:
        """POST: count += 1 (and wakes += 1 for a wake-up). Anything else: read."""
        url = urlsplit(path)
        reply: dict[str, object] = {}
        with self.lock:
            if method == "POST":
                self.count += 1
                if url.path == "/actormux/wake":
                    self.wakes += 1
                after = parse_qs(url.query).get("wake_after")
                if after:
                    reply["wake_after_s"] = after[0]
            if self.wakes:
                reply["wakes"] = self.wakes
            return 200, {"count": self.count, **reply}


if __name__ == "__main__":
    serve(int(sys.argv[1]) if len(sys.argv) > 1 else 8080, Counter().handle)
