"""A real HTTP server on 127.0.0.1 that speaks the OpenAI chat-completions protocol.

For tests and benchmarks of the ``openai`` captioner: it records every request (path,
headers, JSON body), answers with a deterministic caption derived from the messages, and
can be told to misbehave — a plan of scripted replies (status codes, malformed bodies,
delays) consumed in order before the default behaviour, or to die like a crashed server
after ``stop_after`` replies (:meth:`ChatServer.kill`). It stops by itself after
``lifetime`` seconds at the latest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """A scripted reply: ``body`` is sent as is when a string, as JSON otherwise."""

    status: int = 200
    body: Any = None  # None: the default completion
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


def default_caption(body: dict[str, Any]) -> str:
    """The caption the server writes for a request: a hash of its messages and seed."""
    digest = hashlib.sha256(json.dumps(body.get("messages"), sort_keys=True).encode())
    digest.update(str(body.get("seed")).encode())
    return f"A land cover scene number {digest.hexdigest()[:10]}."


def completion(text: str, model: str = "fake") -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
    }


class ChatServer:
    """``with ChatServer() as srv: srv.base_url`` -> ``http://127.0.0.1:PORT/v1``."""

    def __init__(
        self,
        *,
        delay: float = 0.0,
        lifetime: float = 120.0,
        port: int = 0,
        stop_after: int | None = None,
    ) -> None:
        self.delay = delay
        self.lifetime = lifetime
        self.stop_after = stop_after  # answer this many requests, then die (kill)
        self.plan: list[Reply] = []
        self.requests: list[dict[str, Any]] = []  # the requests it answered (or will)
        self.dropped = 0  # requests whose connection it cut (after it died)
        self.replied = 0  # replies sent
        self.killed = False
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self.active = 0
        self.max_active = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # no 40 ms delayed-ACK stalls on keep-alive

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def setup(self) -> None:
                super().setup()
                with server._lock:
                    server._conns.add(self.connection)

            def finish(self) -> None:
                with server._lock:
                    server._conns.discard(self.connection)
                with contextlib.suppress(OSError):
                    super().finish()

            def do_POST(self) -> None:  # noqa: N802
                server._handle(self)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._timer = threading.Timer(lifetime, self.stop)
        self._timer.daemon = True

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> ChatServer:
        self._thread.start()
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._timer.cancel()
        self._httpd.shutdown()
        self._httpd.server_close()

    def kill(self) -> None:
        """Die like a crashed server: stop listening (new connections are refused) and cut
        every open connection (kept-alive ones included)."""
        with self._lock:
            self.killed = True
        self.stop()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length", 0))
        raw = h.rfile.read(length)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        with self._lock:
            dead = self.killed or (
                self.stop_after is not None and len(self.requests) >= self.stop_after
            )
            self.dropped += dead
        if dead:  # no reply: the connection is cut (it dies once its last reply is out)
            h.close_connection = True
            with contextlib.suppress(OSError):
                h.connection.shutdown(socket.SHUT_RDWR)
            return
        with self._lock:
            self.requests.append({"path": h.path, "headers": dict(h.headers), "body": body})
            reply = self.plan.pop(0) if self.plan else Reply(delay=self.delay)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            if reply.delay:
                time.sleep(reply.delay)
            if h.path.rstrip("/") != "/v1/chat/completions":
                reply = Reply(404, {"error": {"message": f"no route {h.path}"}})
            payload = reply.body
            if payload is None:
                payload = completion(default_caption(body or {}), (body or {}).get("model", ""))
            data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
            h.send_response(reply.status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            for k, v in reply.headers.items():
                h.send_header(k, v)
            h.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                h.wfile.write(data)  # the client may have given up (timeout test)
                h.wfile.flush()
        finally:
            with self._lock:
                self.active -= 1
                self.replied += 1
                die = self.stop_after is not None and self.replied >= self.stop_after
            if die and not self.killed:
                threading.Thread(target=self.kill, daemon=True).start()


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then closed: connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
