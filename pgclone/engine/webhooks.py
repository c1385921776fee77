"""POSTing a JSON body to PGCLONE_NOTIFY_WEBHOOK, within a total deadline.

A socket timeout bounds each read, not the request: a receiver that sends a
header line every few seconds would hold the caller for as long as it likes.
So a watchdog cuts the connection once the deadline is over, whatever stage
the request is at, and the attempts after a failure share that deadline.

Only ``http://`` and ``https://`` URLs are used (``urllib`` would as well
read a ``file://`` URL or speak FTP), and a redirect is an answer, never
followed: the setting names the receiver.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import threading
import time
import urllib.parse
from typing import Any

from pgclone.exceptions import ConfigurationError, PgCloneError

DEADLINE_SECONDS = 10.0  # the whole delivery, every attempt included
CONNECT_TIMEOUT_SECONDS = 5.0
ATTEMPTS = 3
SCHEMES = ("http", "https")


class WebhookFailed(PgCloneError):
    """The webhook receiver did not take the notification."""


class _DeadlinePassed(Exception):
    """The delivery's deadline came (a socket's own timeout is a TimeoutError)."""


def parse_url(url: Any) -> urllib.parse.SplitResult:
    """The webhook's URL, split; ConfigurationError unless it is http(s) with a host.
    The message never repeats the URL: it may hold a secret token."""
    problem = _url_problem(url)
    if problem:
        raise ConfigurationError(
            f"PGCLONE_NOTIFY_WEBHOOK must be an http:// or https:// URL with a host, not "
            f"{problem}: pgclone posts notifications over HTTP(S) only."
        )
    return urllib.parse.urlsplit(url)


def _url_problem(url: Any) -> str:
    if not isinstance(url, str):
        return f"a {type(url).__name__}"
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError when it is not a number
    except ValueError:
        return "a URL whose host or port can't be read"
    if parts.scheme.lower() not in SCHEMES:
        return f"a {parts.scheme}:// URL" if parts.scheme else "a URL without a scheme"
    return "" if parts.hostname else "a URL without a host"


def post(url: str, body: dict[str, Any], *, within: float | None = None) -> None:
    """POST ``body`` as JSON, trying again after errors and 5xx answers until the
    deadline (``within`` seconds from now); raise WebhookFailed if it never took it."""
    parts = parse_url(url)
    deadline = time.monotonic() + (DEADLINE_SECONDS if within is None else within)
    data = json.dumps(body).encode()
    for attempt in range(1, ATTEMPTS + 1):
        try:
            status = _Request(parts, deadline).send(data)
        except _DeadlinePassed:
            raise WebhookFailed(
                f"The webhook receiver did not answer within {_seconds(within)}: gave up."
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            failure = WebhookFailed(f"The webhook receiver could not be reached: {exc!r}.")
        else:
            if 200 <= status < 300:
                return
            if 300 <= status < 400:
                raise WebhookFailed(
                    f"The webhook receiver answered HTTP {status}, a redirect, which pgclone "
                    "does not follow: set PGCLONE_NOTIFY_WEBHOOK to the URL it redirects to."
                )
            failure = WebhookFailed(f"The webhook receiver answered HTTP {status}.")
            if status < 500:
                raise failure  # asking again would get the same answer
        pause = 0.5 * attempt  # a receiver restarting: give it a moment
        if attempt == ATTEMPTS or time.monotonic() + pause >= deadline:
            raise failure
        time.sleep(pause)


def _seconds(within: float | None) -> str:
    return f"{DEADLINE_SECONDS if within is None else within:g} s"


class _Request:
    """One POST, cut by a watchdog thread at the deadline."""

    def __init__(self, parts: urllib.parse.SplitResult, deadline: float) -> None:
        self.parts = parts
        self.deadline = deadline
        self.cut = False
        self._lock = threading.Lock()
        self._connection: http.client.HTTPConnection | None = None

    def send(self, data: bytes) -> int:
        """In the delivering thread: the answer's status; _DeadlinePassed at the deadline."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise _DeadlinePassed()
        timeout = min(remaining, CONNECT_TIMEOUT_SECONDS)
        host, port = self.parts.hostname, self.parts.port
        if self.parts.scheme.lower() == "https":
            context = ssl.create_default_context()
            self._connection = http.client.HTTPSConnection(
                host, port, timeout=timeout, context=context
            )
        else:
            self._connection = http.client.HTTPConnection(host, port, timeout=timeout)
        watchdog = threading.Timer(remaining, self._cut)
        watchdog.daemon = True
        watchdog.start()
        path = urllib.parse.urlunsplit(("", "", self.parts.path or "/", self.parts.query, ""))
        failure: BaseException | None = None
        status = 0
        try:
            self._connection.connect()  # bounded by its own timeout
            with self._lock:
                if self.cut:  # the deadline came while it connected: nothing to shut yet
                    raise ConnectionAbortedError()
            self._connection.request(
                "POST", path, body=data, headers={"Content-Type": "application/json"}
            )
            status = self._connection.getresponse().status  # the body is not read
        except (OSError, http.client.HTTPException) as exc:
            failure = exc
        finally:
            watchdog.cancel()
        with self._lock:
            self._connection.close()
            # Cut, the headers may end early and look whole: the answer doesn't count.
            if self.cut:
                raise _DeadlinePassed()
        if failure is not None:
            raise failure
        return status

    def _cut(self) -> None:
        """In the watchdog thread: end the connection, whatever the request is doing."""
        with self._lock:
            self.cut = True
            sock = self._connection.sock if self._connection else None
            if sock is not None:
                # socket.socket's own: an SSL socket's would drop its state under the reader.
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
