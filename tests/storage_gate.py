"""A pass-through HTTP proxy in front of Azurite that can hold chosen requests until released.

Tests point a devhost's storage connection string at the gate to stop an ingestion at a known
point (for example: every image read waits) instead of racing it. Requests are forwarded
byte for byte: Shared Key signatures cover the path, not the host, so they stay valid.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Predicate = Callable[[str, str], bool]  # (method, path) -> hold it?

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


class StorageGate:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._hold: Predicate = lambda method, path: False
        self._open = threading.Event()
        self._open.set()
        self._lock = threading.Lock()
        self.waiting = 0  # requests held right now
        self.held_total = 0
        gate = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _forward(self) -> None:
                gate._wait_if_held(self.command, self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                upstream = http.client.HTTPConnection("127.0.0.1", gate.upstream_port, timeout=60)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                    self.send_response_only(response.status, response.reason)
                    for key, value in response.getheaders():
                        if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                            self.send_header(key, value)
                    # A HEAD answer has no body but tells the length of the blob.
                    length = response.getheader("Content-Length") or "0"
                    self.send_header(
                        "Content-Length", length if self.command == "HEAD" else str(len(data))
                    )
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    upstream.close()

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = do_OPTIONS = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def connection_string(self, account: str, key: str) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={account};AccountKey={key};"
            f"BlobEndpoint=http://127.0.0.1:{self.port}/{account};"
        )

    def hold(self, predicate: Predicate) -> None:
        """From now on, requests matching ``predicate`` wait until :meth:`release`."""
        with self._lock:
            self._hold = predicate
            self._open.clear()

    def release(self) -> None:
        with self._lock:
            self._hold = lambda method, path: False
            self._open.set()

    def close(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()

    def _wait_if_held(self, method: str, path: str) -> None:
        with self._lock:
            held = self._hold(method, path)
            if held:
                self.waiting += 1
                self.held_total += 1
        if held:
            self._open.wait()
            with self._lock:
                self.waiting -= 1
