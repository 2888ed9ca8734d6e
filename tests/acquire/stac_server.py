"""Loopback servers for acquisition tests: a minimal STAC API and a static file server with
HTTP range requests. Both listen on 127.0.0.1 only (see tests/loopback.py)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.loopback import serve

#: The real Earth Search item in ../shared/data and its id.
ITEM = "stac/earth-search-v0/S2A_29RKH_20200219_0_L2A"
ITEM_ID = "S2A_29RKH_20200219_0_L2A"
CONFORMS_TO = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/item-search",
    "https://api.stacspec.org/v1.0.0/item-search#query",
    "https://api.stacspec.org/v1.0.0/ogcapi-features",
]


# --------------------------------------------------------------------------- STAC API
@dataclass
class StacState:
    base: str
    items: list[dict[str, Any]] = field(default_factory=list)
    #: (method, path, search parameters)
    requests: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    #: status codes answered to the next searches before a normal answer (e.g. [503])
    search_faults: list[int] = field(default_factory=list)


def _time(text: str) -> datetime:
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _matches(item: dict[str, Any], params: dict[str, Any]) -> bool:
    cols = params.get("collections")
    if cols and item.get("collection") not in cols:
        return False
    bbox = params.get("bbox")
    if bbox:
        w, s, e, n = bbox
        iw, is_, ie, in_ = item["bbox"]
        if iw > e or ie < w or is_ > n or in_ < s:
            return False
    when = params.get("datetime")
    if when:
        t = _time(item["properties"]["datetime"])
        a, _, b = when.partition("/")
        if a not in ("", "..") and t < _time(a):
            return False
        if b not in ("", "..") and t > _time(b):
            return False
    ops = {
        "lt": lambda v, x: v < x,
        "lte": lambda v, x: v <= x,
        "gt": lambda v, x: v > x,
        "gte": lambda v, x: v >= x,
        "eq": lambda v, x: v == x,
    }
    for prop, cond in (params.get("query") or {}).items():
        v = item["properties"].get(prop)
        for op, x in cond.items():
            if v is None or not ops[op](v, x):
                return False
    return True


class StacHandler(BaseHTTPRequestHandler):
    timeout = 5

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _json(self, obj: Any, status: int = 200, media: str = "application/json") -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", media)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _landing(self, state: StacState) -> dict[str, Any]:
        search = {"rel": "search", "href": f"{state.base}/search", "type": "application/geo+json"}
        return {
            "type": "Catalog",
            "stac_version": "1.0.0",
            "id": "loopback",
            "description": "a minimal STAC API for tests",
            "conformsTo": CONFORMS_TO,
            "links": [
                {"rel": "self", "href": f"{state.base}/", "type": "application/json"},
                {"rel": "root", "href": f"{state.base}/", "type": "application/json"},
                {**search, "method": "GET"},
                {**search, "method": "POST"},
            ],
        }

    def _search(self, state: StacState, params: dict[str, Any]) -> None:
        state.requests.append((self.command, "/search", params))
        if state.search_faults:
            self.send_error(state.search_faults.pop(0))
            return
        feats = [i for i in state.items if _matches(i, params)]
        self._json(
            {"type": "FeatureCollection", "features": feats, "links": []},
            media="application/geo+json",
        )

    def do_GET(self) -> None:
        state: StacState = self.server.state  # type: ignore[attr-defined]
        url = urlsplit(self.path)
        if url.path in ("/", ""):
            state.requests.append(("GET", "/", {}))
            self._json(self._landing(state))
        elif url.path == "/conformance":
            self._json({"conformsTo": CONFORMS_TO})
        elif url.path == "/search":
            q = {k: v[0] for k, v in parse_qs(url.query).items()}
            params: dict[str, Any] = {}
            if "collections" in q:
                params["collections"] = q["collections"].split(",")
            if "bbox" in q:
                params["bbox"] = [float(v) for v in q["bbox"].split(",")]
            if "datetime" in q:
                params["datetime"] = q["datetime"]
            if "query" in q:
                params["query"] = json.loads(q["query"])
            self._search(state, params)
        else:
            self.send_error(404)

    def do_POST(self) -> None:
        state: StacState = self.server.state  # type: ignore[attr-defined]
        if urlsplit(self.path).path != "/search":
            self.send_error(404)
            return
        n = int(self.headers.get("Content-Length") or 0)
        self._search(state, json.loads(self.rfile.read(n) or b"{}"))


def serve_stac(items: list[dict[str, Any]] | None = None) -> Iterator[StacState]:
    yield from serve(StacHandler, lambda port: StacState(f"http://127.0.0.1:{port}", items or []))


# --------------------------------------------------------------------------- files
@dataclass
class FileState:
    base: str
    #: URL path (no leading slash) -> file on disk
    files: dict[str, Path] = field(default_factory=dict)
    #: URL path -> faults for its next requests, in order: (when, what); when is "ANY", "HEAD",
    #: "GET" or "TILE" (a GET of a range not at byte 0); what is an HTTP status or "drop"
    #: (close the connection without an answer)
    faults: dict[str, list[tuple[str, int | str]]] = field(default_factory=dict)
    #: body bytes served per URL path
    served: Counter = field(default_factory=Counter)
    #: (method, path, Range header)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _cache: dict[str, bytes] = field(default_factory=dict)

    def data(self, name: str) -> bytes | None:
        if name not in self.files:
            return None
        with self.lock:
            if name not in self._cache:
                self._cache[name] = self.files[name].read_bytes()
            return self._cache[name]

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"


class FileHandler(BaseHTTPRequestHandler):
    timeout = 5
    protocol_version = "HTTP/1.1"  # keep-alive, as S3 and CDNs do

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _serve(self, body_wanted: bool) -> None:
        state: FileState = self.server.state  # type: ignore[attr-defined]
        name = urlsplit(self.path).path.lstrip("/")
        wanted = self.headers.get("Range")
        kind = "TILE" if self.command == "GET" and not (wanted or "").startswith("bytes=0-") else ""
        with state.lock:
            state.requests.append((self.command, name, wanted))
            fault = None
            queue = state.faults.get(name) or []
            for i, (when, _) in enumerate(queue):
                if when in ("ANY", self.command, kind):
                    fault = queue.pop(i)[1]
                    break
        if fault == "drop":  # close the connection without an answer
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault is not None:
            self.send_response(int(fault))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = state.data(name)
        if data is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        etag = '"' + hashlib.md5(data).hexdigest() + '"'
        start, end, status = 0, len(data) - 1, 200
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", wanted or "")
        if m and (m.group(1) or m.group(2)):  # one range; several ranges get the whole file
            if m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)), len(data) - 1) if m.group(2) else len(data) - 1
            else:
                start = max(0, len(data) - int(m.group(2)))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start : end + 1]
        self.send_response(status)
        self.send_header("Content-Type", "image/tiff")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", "Wed, 19 Feb 2020 12:00:00 GMT")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body_wanted:
            self.wfile.write(body)
            with state.lock:
                state.served[name] += len(body)

    def do_GET(self) -> None:
        self._serve(True)

    def do_HEAD(self) -> None:
        self._serve(False)


def serve_files(files: dict[str, Path] | None = None) -> Iterator[FileState]:
    yield from serve(FileHandler, lambda port: FileState(f"http://127.0.0.1:{port}", files or {}))


# --------------------------------------------------------------------------- items
def rehost(
    item: dict[str, Any],
    files: FileState,
    folder: Path,
    *,
    id: str | None = None,
    props: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A copy of ``item`` (renamed ``id``, ``props`` overriding its properties) whose http(s)
    GeoTIFF assets point at ``files``, which serves them from ``folder/<file name>``."""
    out = json.loads(json.dumps(item))
    out["id"] = id or out["id"]
    out["properties"].update(props or {})
    for asset in out["assets"].values():
        href = asset["href"]
        if not href.startswith("http") or not href.endswith(".tif"):
            continue
        name = href.rsplit("/", 1)[1]
        path = f"{out['id']}/{name}"
        asset["href"] = files.url(path)
        files.files[path] = folder / name
    out["links"] = []
    return out


# --------------------------------------------------------------------------- fixtures
@pytest.fixture
def item_dir(shared_data: Path) -> Path:
    d = shared_data / ITEM
    if not (d / f"{ITEM_ID}.json").is_file():
        pytest.skip(f"{d} is absent")
    return d


@pytest.fixture
def item(item_dir: Path) -> dict[str, Any]:
    return json.loads((item_dir / f"{ITEM_ID}.json").read_text())


@pytest.fixture
def servers() -> Iterator[tuple[StacState, FileState]]:
    """A STAC API and a file server on loopback: (stac, files)."""
    files_gen, stac_gen = serve_files(), serve_stac()
    files, stac = next(files_gen), next(stac_gen)
    try:
        yield stac, files
    finally:
        stac_gen.close()
        files_gen.close()
