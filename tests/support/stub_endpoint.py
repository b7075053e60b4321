"""A stand-in endpoint for the client-side tests (imgclf.client, the demo's remote back-end): a loopback HTTP
server that answers each POST with the next canned (status, body) and keeps the headers of every request."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import Message

from support.ports import HOST


class StubEndpoint:
    def __init__(self, url: str):
        self.url = url
        self.answers: list[tuple[int, bytes]] = []  # popped in order, one per request
        self.seen: list[Message] = []  # each request's headers (case-insensitive .get)


@contextmanager
def stub_endpoint() -> Iterator[StubEndpoint]:
    stub: StubEndpoint

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            stub.seen.append(self.headers)
            status, body = stub.answers.pop(0)
            self.send_response(status)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.HTTPServer((HOST, 0), Handler)
    stub = StubEndpoint(f"http://{HOST}:{httpd.server_port}")
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield stub
    finally:
        httpd.shutdown()
        httpd.server_close()
