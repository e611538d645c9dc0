"""The agent actor: holds megabytes of state and a history it appends to.

POST appends the request body to the history; every answer carries the history's
length and a running SHA-256 of it, so a client that knows what it sent can check the
state survived any number of suspend/resume cycles. ``GET /verify`` also re-hashes the
ballast (``state_mb`` MiB of deterministic bytes filled at start) against the digest
taken at start.
"""

from __future__ import annotations

import hashlib
import random
import sys
import threading

from _server import serve  # the script's directory is on sys.path


class Agent:
    """Ballast of ``state_mb`` MiB plus a history and its running digest."""

    def __init__(self, state_mb: int) -> None:
        self.lock = threading.Lock()
        self.history: list[bytes] = []
        self.digest = hashlib.sha256()
        self.ballast = bytearray(random.Random(state_mb).randbytes(state_mb << 20))
        self.ballast_digest = hashlib.sha256(self.ballast).hexdigest()

    def state(self) -> dict[str, object]:
        """What every answer carries."""
        return {"count": len(self.history), "digest": self.digest.copy().hexdigest()}

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, object]]:
        """POST: append; GET /verify: re-check the ballast; anything else: read."""
        with self.lock:
            if method == "POST":
                self.history.append(body)
                self.digest.update(body + b"\n")
                return 200, self.state()
            if path == "/verify":
                ok = hashlib.sha256(self.ballast).hexdigest() == self.ballast_digest
                return 200, {
                    **self.state(),
                    "ballast_mb": len(self.ballast) >> 20,
                    "ballast_ok": ok,
                }
            return 200, self.state()


def main() -> None:
    """``agent.py [port] [state_mb]``."""
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
    state_mb = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    serve(port, Agent(state_mb).handle)


if __name__ == "__main__":
    main()
