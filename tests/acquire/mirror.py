"""A loopback static file server with HTTP Range support, serving a folder laid out like a
public bucket. It counts the bytes it serves per path and can misbehave on demand."""

from __future__ import annotations

import email.utils
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from tests.loopback import serve

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass
class Mirror:
    """What the server serves (``root``) and how; every request is recorded."""

    root: Path
    base_url: str
    #: (method, path, Range header) of every request, in arrival order.
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    #: Body bytes sent per path (relative to ``root``).
    bytes_served: Counter[str] = field(default_factory=Counter)
    #: Answer the next N requests (HEAD or GET) with ``fail_status``.
    fail_next: int = 0
    #: Answer the next N range GETs (GDAL's reads) with ``fail_status``.
    fail_next_get: int = 0
    fail_status: int = 503
    #: Cut the next N GET bodies in half and close the connection (a dropped connection).
    drop_next_get: int = 0
    #: Paths whose ETag / Content-Type are overridden.
    etags: dict[str, str] = field(default_factory=dict)
    content_types: dict[str, str] = field(default_factory=dict)
    #: Called as ``hook(mirror, method, path)`` before each request is answered.
    hook: Callable[[Mirror, str, str], None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, relative: str) -> str:
        return f"{self.base_url}/{relative}"

    def served(self, relative: str) -> int:
        return self.bytes_served[relative]

    def gets(self, relative: str | None = None) -> list[tuple[str, str, str | None]]:
        return [r for r in self.requests if r[0] == "GET" and relative in (None, r[1])]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as GDAL/curl expect from S3
    timeout = 10

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def do_GET(self) -> None:
        self._answer(head=False)

    def _answer(self, head: bool) -> None:
        mirror: Mirror = self.server.state  # type: ignore[attr-defined]
        rel = self.path.split("?", 1)[0].lstrip("/")
        wanted = self.headers.get("Range")
        method = "HEAD" if head else "GET"
        if mirror.hook is not None:
            mirror.hook(mirror, method, rel)
        with mirror.lock:
            mirror.requests.append((method, rel, wanted))
            failing = mirror.fail_next > 0 or (not head and mirror.fail_next_get > 0)
            if mirror.fail_next > 0:
                mirror.fail_next -= 1
            elif failing:
                mirror.fail_next_get -= 1
            dropping = not head and not failing and mirror.drop_next_get > 0
            if dropping:
                mirror.drop_next_get -= 1
        if failing:
            return self._empty(mirror.fail_status)
        path = (mirror.root / rel).resolve()
        if ".." in Path(rel).parts or not path.is_file():
            return self._empty(404)
        stat = path.stat()
        size = stat.st_size
        etag = mirror.etags.get(rel, f'"{size:x}-{stat.st_mtime_ns:x}"')
        start, end = 0, size - 1
        status = 200
        if wanted:
            m = _RANGE.match(wanted.strip())
            if m is None or not (m.group(1) or m.group(2)):
                return self._empty(416, {"Content-Range": f"bytes */{size}"})
            if m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            else:  # suffix range: the last N bytes
                start = max(size - int(m.group(2)), 0)
            if start >= size or end < start:
                return self._empty(416, {"Content-Range": f"bytes */{size}"})
            status = 206
        self.send_response(status)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", email.utils.formatdate(stat.st_mtime, usegmt=True))
        self.send_header("Content-Type", mirror.content_types.get(rel, "image/tiff"))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        if head:
            return
        with open(path, "rb") as fh:
            fh.seek(start)
            body = fh.read(end - start + 1)
        if dropping:
            body = body[: len(body) // 2]
            self.close_connection = True
        with mirror.lock:
            mirror.bytes_served[rel] += len(body)
        self.wfile.write(body)

    def _empty(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()


def serve_mirror(root: Path) -> Iterator[Mirror]:
    """Serve ``root`` on a free loopback port (a generator for a pytest fixture)."""
    yield from serve(_Handler, lambda port: Mirror(root=root, base_url=f"http://127.0.0.1:{port}"))
