"""A local S3-compatible server for the tests: moto's standalone server on 127.0.0.1, in a thread.

The code under test reaches it only as any bucket: through s3fs, with the endpoint and credentials in the
environment (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, ...), so subprocesses find it too. Every request is
recorded (method, path, Range header), so a test can count what a reader asked for.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # no instance-metadata lookup for credentials
}


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # /bucket/key
    range: str | None  # the Range header of a ranged GET


class S3Server:
    """moto's `ThreadedMotoServer` with a request log."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._hold: Callable[[Request], bool] | None = None
        self.held = threading.Event()  # a request `hold` waits for has arrived (and is being held)
        self._released = threading.Event()

    def start(self) -> str:
        """Start it; returns its endpoint URL."""
        self.server.start()
        wsgi = self.server._server  # the werkzeug server moto made: its app is wrapped to log requests
        assert wsgi is not None
        wsgi.app = self._logging(wsgi.app)
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        return self.endpoint

    def _logging(self, app: Callable) -> Callable:
        def logged(environ: dict, start_response: Callable) -> object:
            method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
            request = Request(method, path, environ.get("HTTP_RANGE"))
            with self._lock:
                self.requests.append(request)
                hold, self._hold = (
                    (self._hold, None) if self._hold and self._hold(request) else (None, self._hold)
                )
            if hold is not None:
                self.held.set()
                self._released.wait(timeout=120)
            return app(environ, start_response)

        return logged

    def hold(self, matches: Callable[[Request], bool]) -> None:
        """Hold the next request that `matches` before it reaches the server (`held` is set) until `release`:
        a client killed meanwhile dies in the middle of that request."""
        self.held.clear()
        self._released.clear()
        with self._lock:
            self._hold = matches

    def release(self) -> None:
        self._released.set()

    def stop(self) -> None:
        self.server.stop()

    @contextmanager
    def recording(self) -> Iterator[list[Request]]:
        """The requests made inside the block (appended as they come)."""
        with self._lock:
            start = len(self.requests)
        seen: list[Request] = []
        try:
            yield seen
        finally:
            with self._lock:
                seen.extend(self.requests[start:])

    def new_bucket(self) -> str:
        """A fresh, empty bucket; returns its name."""
        import fsspec

        name = f"b-{uuid.uuid4().hex[:12]}"
        fsspec.filesystem("s3").mkdir(name)
        return name
