"""A stand-in actor endpoint on 127.0.0.1, for trying the Locust side without a router.

Every request is answered 200 after sleeping the service time it asks for
(``X-Actormux-Service`` seconds, capped), and logged with its arrival time, Host
header and request id, so a test can check what a load generator really sent; with
``fail_every=N`` every N-th request is answered 503 at once instead (for clients'
retries). The real router (the local backend) replaces it.

    python -m workloads.echo --port 8000
"""

from __future__ import annotations

import argparse
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import NamedTuple

MAX_SERVICE_S = 5.0


class Seen(NamedTuple):
    """One request as the server saw it."""

    time: float  # time.time() on arrival
    host: str
    request_id: str
    method: str


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        arrived = time.time()
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        with self.server.lock:
            self.server.seen.append(
                Seen(arrived, self.headers.get("Host", ""), self.headers.get("X-Request-Id", ""),
                     self.command)
            )  # fmt: skip
            every = self.server.fail_every
            fail = every > 0 and len(self.server.seen) % every == 0
        if fail:
            self._answer(503, b"failed on purpose\n")
            return
        try:
            service = float(self.headers.get("X-Actormux-Service") or 0)
        except ValueError:
            service = 0.0
        time.sleep(min(max(service, 0.0), MAX_SERVICE_S))
        self._answer(200, b"ok\n")

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _serve  # noqa: N815

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, fail_every: int = 0) -> None:
        # 127.0.0.1 only: traffic stays on this machine.
        super().__init__(("127.0.0.1", port), _Handler)
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.fail_every = fail_every

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls getfqdn(), which can wait seconds on DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]


class EchoServer:
    """The stand-in server in a background thread; a context manager."""

    def __init__(self, port: int = 0, *, fail_every: int = 0) -> None:
        self._server = _Server(port, fail_every)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self._server.server_port}"

    @property
    def seen(self) -> list[Seen]:
        """Requests received so far, in arrival order."""
        with self._server.lock:
            return list(self._server.seen)

    def __enter__(self) -> EchoServer:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def main() -> None:
    """Run the stand-in server in the foreground."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    with EchoServer(args.port) as server:
        print(f"stand-in actor endpoint on {server.url} (Ctrl-C to stop)")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
