"""A threaded HTTP server on 127.0.0.1 for tests (never another address)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TypeVar

T = TypeVar("T")


def serve(handler: type[BaseHTTPRequestHandler], make_state: Callable[[int], T]) -> Iterator[T]:
    """Serve ``handler`` on a free loopback port; yield ``make_state(port)``, which handlers
    reach as ``self.server.state``; shut down when the generator is closed."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    state = make_state(httpd.server_address[1])
    httpd.state = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
