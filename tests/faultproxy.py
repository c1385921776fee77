"""An HTTP proxy in front of the moto S3 server that answers some requests
with errors, the way S3 does under load (503 SlowDown) or when it breaks (500),
or goes away altogether (``go_down``: the network to S3 is lost).

It is a real server on loopback: boto3 meets the errors over HTTP and its
own retry logic handles them, which no mock of boto3 would show.
"""

from __future__ import annotations

import http.client
import threading
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ERROR_BODY = (
    '<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
    "<Message>Injected by the test proxy</Message></Error>"
)


class FaultProxy:
    """``fail(method, path_and_query) -> (status, code) | None`` decides each request."""

    def __init__(self, upstream: str, fail: Callable[[str, str], tuple[int, str] | None]) -> None:
        self.upstream = urllib.parse.urlsplit(upstream)
        self.fail = fail
        self.failed = 0
        self.down = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                verdict = proxy.fail(self.command, self.path)
                if proxy.down.is_set():  # no answer: the client sees the connection cut
                    self.close_connection = True
                    return
                if verdict:
                    proxy.failed += 1
                    status, code = verdict
                    payload = ERROR_BODY.format(code=code).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                upstream = http.client.HTTPConnection(
                    proxy.upstream.hostname, proxy.upstream.port, timeout=60
                )
                headers = {k: v for k, v in self.headers.items() if k.lower() != "expect"}
                upstream.request(self.command, self.path, body=body, headers=headers)
                answer = upstream.getresponse()
                payload = answer.read()
                self.send_response(answer.status)
                head = self.command == "HEAD"
                for key, value in answer.getheaders():
                    dropped = {"transfer-encoding", "connection"} | (
                        set() if head else {"content-length"}
                    )
                    if key.lower() not in dropped:
                        self.send_header(key, value)
                if not head:
                    self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)
                upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def go_down(self) -> None:
        """From now on, like an endpoint whose network is gone: requests on open
        connections get no answer (the connection is closed), new connections
        are refused. ``fail`` may call it, for the request it is deciding too."""
        self.down.set()
        threading.Thread(target=self._stop_listening, daemon=True).start()

    def _stop_listening(self) -> None:
        self.server.shutdown()  # waits for serve_forever, in its own thread
        self.server.server_close()

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()
