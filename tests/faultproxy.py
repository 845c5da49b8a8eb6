"""A fault-injecting HTTP proxy on loopback, for testing fret against a flaky OpenAI-compatible server.

    with FaultProxy(upstream="http://127.0.0.1:8001", rate=0.2, seed=0) as proxy:
        ... point llm.base_url at proxy.base_url ...
        proxy.injected  # Counter of faults by kind

Every request is forwarded to the real server (real sockets both ways) unless the proxy draws a
fault for it, with probability `rate`, spread evenly over `kinds`:

- `429`: Too Many Requests with `Retry-After: 1`; `429-bare`: the same without the header;
- `500`, `503`: a server error with a JSON error body;
- `hang`: read the request, answer nothing for `hang_s` seconds (past the client's timeout), close;
- `drop`: forward, then send the headers and half the body and close the connection;
- `truncated`: forward, then answer 200 with the body cut in half (invalid JSON, honest length).

`outage_after = N` starts an outage once N requests got through (every later one: 503), to stop a
run part-way through a batch. `answered` counts, per request body, the server answers that reached
the client, so a test can check that no answered request was sent twice.

Draws come from one seeded generator in arrival order, so a run is repeatable only as far as
arrival order is; tests compare outputs, not fault sequences. `rate` can be changed while running
(e.g. 1.0 for an outage, then 0.0 for the recovery). `GET /v1/models` is never faulted, so the
client's model discovery is not what a test measures.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import random
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

KINDS = ("429", "429-bare", "500", "503", "hang", "drop", "truncated")


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        """A client that gave up (timeout) leaves a broken pipe: expected here, not worth a traceback."""
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class FaultProxy:
    def __init__(self, upstream: str, rate: float = 0.2, seed: int = 0, kinds=KINDS, hang_s: float = 5.0):
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.rate, self.kinds, self.hang_s = rate, tuple(kinds), hang_s
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.injected: Counter = Counter()
        self.forwarded = 0
        self.outage_after: int | None = None  # once this many requests got through, every one fails (503)
        self.answered: Counter = Counter()  # request body hash -> times the server's answer got through
        self.bodies: dict[str, bytes] = {}
        self.keys: Counter = Counter()  # Authorization header -> requests that carried it
        self.server = QuietServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FaultProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def draw(self, path: str) -> str | None:
        """The fault for this request, or None to pass it through."""
        if path.rstrip("/").endswith("/models"):
            return None
        with self.lock:
            if self.outage_after is not None and self.forwarded >= self.outage_after:
                self.injected["outage"] += 1
                return "503"
            if self.rng.random() >= self.rate:
                return None
            kind = self.rng.choice(self.kinds)
            self.injected[kind] += 1
            return kind

    def forward(self, method: str, path: str, headers: dict, body: bytes) -> tuple[int, list, bytes]:
        conn = http.client.HTTPConnection(*self.upstream, timeout=600)
        try:
            conn.request(method, path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            with self.lock:
                self.forwarded += 1
            return resp.status, [(k, v) for k, v in resp.getheaders()
                                 if k.lower() not in ("content-length", "transfer-encoding", "connection")], data
        finally:
            conn.close()

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet: tests read `injected`, not a log
                pass

            def _error(self, status: int, retry_after: bool = False) -> None:
                body = json.dumps({"error": {"message": f"injected {status}", "type": "fault"}}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if retry_after:
                    self.send_header("Retry-After", "1")
                self.end_headers()
                self.wfile.write(body)

            def _relay(self, kind: str | None) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with proxy.lock:
                    proxy.keys[self.headers.get("Authorization")] += 1
                if kind in ("429", "429-bare", "500", "503"):
                    self._error(int(kind[:3]), retry_after=kind == "429")
                    return
                if kind == "hang":
                    time.sleep(proxy.hang_s)
                    self.close_connection = True
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                status, out_headers, data = proxy.forward(self.command, self.path, headers, body)
                if kind == "truncated":
                    data = data[: len(data) // 2]
                self.send_response(status)
                for k, v in out_headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data) if kind != "drop" else len(data) + 1))
                self.end_headers()
                if kind == "drop":  # half the body, then the connection goes away
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(data)
                if self.command == "POST" and status == 200 and kind is None:
                    with proxy.lock:
                        digest = hashlib.sha256(body).hexdigest()
                        proxy.answered[digest] += 1
                        proxy.bodies[digest] = body

            def do_GET(self) -> None:
                self._relay(proxy.draw(self.path))

            def do_POST(self) -> None:
                self._relay(proxy.draw(self.path))

        return Handler
