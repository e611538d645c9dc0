"""The counter actor: POST increments an in-memory counter and returns it; GET reads it."""

from __future__ import annotations

import sys
import threading

from _server import serve  # the script's directory is on sys.path


class Counter:
    """The actor's whole state: one integer."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, object]]:
        """POST: count += 1. Anything else: read."""
        with self.lock:
            if method == "POST":
                self.count += 1
            return 200, {"count": self.count}


if __name__ == "__main__":
    serve(int(sys.argv[1]) if len(sys.argv) > 1 else 8080, Counter().handle)
