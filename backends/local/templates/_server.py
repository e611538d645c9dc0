"""The HTTP/1.1 server both templates share (standard library only).

It never closes a connection first (the router does: see backends/local/httpclient.py),
skips HTTPServer's getfqdn() (it waits seconds on DNS in an isolated namespace), and
sleeps ``X-Actormux-Service`` seconds per request to stand for the tool's work.
"""

from __future__ import annotations

import http.server
import json
import socketserver
import time
from collections.abc import Callable

MAX_SERVICE_S = 60.0
Handler = Callable[[str, str, bytes], tuple[int, dict[str, object]]]


def serve(port: int, handle: Handler) -> None:
    """Serve forever: ``handle(method, path, body) -> (status, json body)``."""

    class Request(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _do(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if self.path == "/healthz":
                status, reply = 200, {"ok": True}
            else:
                try:
                    service = float(self.headers.get("X-Actormux-Service") or 0)
                except ValueError:
                    service = 0.0
                if service > 0:
                    time.sleep(min(service, MAX_SERVICE_S))
                status, reply = handle(self.command, self.path, body)
            data = (json.dumps(reply) + "\n").encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _do  # noqa: N815

        def log_message(self, format: str, *args: object) -> None:
            pass

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        allow_reuse_address = True

        def server_bind(self) -> None:
            socketserver.TCPServer.server_bind(self)
            self.server_name, self.server_port = "actor", port

    Server(("0.0.0.0", port), Request).serve_forever()
