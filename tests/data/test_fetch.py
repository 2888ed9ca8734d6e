"""Tests of groundsynth.data.fetch against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import socket
import stat
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from groundsynth.data.fetch import (
    ARAS400K_BASE_URL,
    ARAS400K_FILES,
    FetchResult,
    download,
    fetch_aras400k,
    safe_extract,
)
from groundsynth.errors import FetchError, InputError
from tests.loopback import serve

FAST = {"timeout": 5.0, "chunk_size": 4096, "backoff": 0.001}


# --------------------------------------------------------------------------- fixtures


@dataclass
class ServerState:
    """What the test server serves and how it misbehaves; it records every request."""

    files: dict[str, bytes] = field(default_factory=dict)
    #: normal | truncate (first body cut at half, connection closed) | ignore_range | 503
    mode: str = "normal"
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    truncated: bool = False
    base_url: str = ""


class _Handler(BaseHTTPRequestHandler):
    timeout = 5  # a stuck client connection ends by itself

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        state: ServerState = self.server.state  # type: ignore[attr-defined]
        name = self.path.split("?", 1)[0].lstrip("/")
        wanted = self.headers.get("Range")
        state.requests.append((name, wanted))
        if state.mode == "503":
            self.send_error(503)
            return
        data = state.files.get(name)
        if data is None:
            self.send_error(404)
            return
        start = 0
        if wanted and state.mode != "ignore_range":
            start = int(re.fullmatch(r"bytes=(\d+)-", wanted).group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if state.mode == "truncate" and not state.truncated:
            state.truncated = True
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True  # the server closes the socket mid-body
            return
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[ServerState]:
    yield from serve(_Handler, lambda port: ServerState(base_url=f"http://127.0.0.1:{port}/files"))


def _payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name), data)
    return buf.getvalue()


def _split_members(split: str, n: int = 3) -> dict[str, bytes]:
    members: dict[str, bytes] = {f"{split}/": b""}
    for i in range(n):
        name = f"N40E033_041_{i:03d}.png"
        members[f"{split}/images/{name}"] = _payload(3000, seed=i)
        members[f"{split}/masks/{name}"] = _payload(500, seed=100 + i)
    members[f"{split}/class_percentages.csv"] = b"filename,split,Tree\n"
    return members


def _serve(server: ServerState, name: str, data: bytes) -> str:
    server.files[f"files/{name}"] = data
    return f"{server.base_url}/{name}"


# --------------------------------------------------------------------------- download


def test_download_normal(server: ServerState, tmp_path: Path) -> None:
    data = _payload(50_000)
    url = _serve(server, "a.zip", data)
    seen: list[tuple[int, int | None]] = []
    dest = tmp_path / "a.zip"
    out = download(url, dest, md5=_md5(data), progress=lambda d, t: seen.append((d, t)), **FAST)
    assert out == dest and dest.read_bytes() == data
    assert not (tmp_path / "a.zip.part").exists()
    assert server.requests == [("files/a.zip", None)]
    assert seen[-1] == (len(data), len(data))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_download_resumes_truncated_response(server: ServerState, tmp_path: Path) -> None:
    server.mode = "truncate"
    data = _payload(40_000)
    url = _serve(server, "a.zip", data)
    dest = download(url, tmp_path / "a.zip", md5=_md5(data), retries=2, **FAST)
    assert _md5(dest.read_bytes()) == _md5(data)
    assert len(server.requests) == 2
    assert server.requests[1] == ("files/a.zip", f"bytes={len(data) // 2}-")


def test_download_md5_mismatch_leaves_no_file(server: ServerState, tmp_path: Path) -> None:
    good = _payload(10_000)
    bad = bytearray(good)
    bad[1234] ^= 0xFF
    url = _serve(server, "a.zip", bytes(bad))
    with pytest.raises(FetchError) as info:
        download(url, tmp_path / "a.zip", md5=_md5(good), **FAST)
    message = str(info.value)
    assert "a.zip" in message and _md5(good) in message and _md5(bytes(bad)) in message
    assert list(tmp_path.iterdir()) == []


def test_download_404_names_the_url(server: ServerState, tmp_path: Path) -> None:
    url = f"{server.base_url}/missing.zip"
    with pytest.raises(FetchError, match=re.escape(url)) as info:
        download(url, tmp_path / "missing.zip", md5=None, **FAST)
    assert "404" in str(info.value)
    assert len(server.requests) == 1  # a 404 is not retried
    assert not (tmp_path / "missing.zip").exists()


def test_download_retries_server_errors_then_gives_up(server: ServerState, tmp_path: Path) -> None:
    server.mode = "503"
    url = _serve(server, "a.zip", b"x")
    with pytest.raises(FetchError, match="503"):
        download(url, tmp_path / "a.zip", md5=None, retries=2, **FAST)
    assert len(server.requests) == 3


def test_download_network_error_is_a_fetch_error(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port with nobody listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/a.zip"
    with pytest.raises(FetchError, match="network error") as info:
        download(url, tmp_path / "a.zip", md5=None, retries=1, **FAST)
    assert url in str(info.value)


def test_download_resumes_part_file_on_disk(server: ServerState, tmp_path: Path) -> None:
    data = _payload(30_000)
    url = _serve(server, "a.zip", data)
    (tmp_path / "a.zip.part").write_bytes(data[:12_345])
    dest = download(url, tmp_path / "a.zip", md5=_md5(data), **FAST)
    assert dest.read_bytes() == data
    assert server.requests == [("files/a.zip", "bytes=12345-")]


def test_download_restarts_when_server_ignores_range(server: ServerState, tmp_path: Path) -> None:
    server.mode = "ignore_range"
    data = _payload(30_000)
    url = _serve(server, "a.zip", data)
    (tmp_path / "a.zip.part").write_bytes(b"\0" * 5000)  # wrong bytes: must be discarded
    dest = download(url, tmp_path / "a.zip", md5=_md5(data), **FAST)
    assert dest.read_bytes() == data
    assert server.requests == [("files/a.zip", "bytes=5000-")]


def test_download_complete_part_gets_416(server: ServerState, tmp_path: Path) -> None:
    data = _payload(20_000)
    url = _serve(server, "a.zip", data)
    (tmp_path / "a.zip.part").write_bytes(data)
    dest = download(url, tmp_path / "a.zip", md5=_md5(data), **FAST)
    assert dest.read_bytes() == data
    assert server.requests == [("files/a.zip", f"bytes={len(data)}-")]


def test_download_stale_part_is_redownloaded(server: ServerState, tmp_path: Path) -> None:
    data = _payload(20_000)
    url = _serve(server, "a.zip", data)
    (tmp_path / "a.zip.part").write_bytes(b"\1" * 4000)  # from another version of the file
    dest = download(url, tmp_path / "a.zip", md5=_md5(data), **FAST)
    assert dest.read_bytes() == data
    assert server.requests == [("files/a.zip", "bytes=4000-"), ("files/a.zip", None)]


def test_download_skips_verified_existing_file(server: ServerState, tmp_path: Path) -> None:
    data = _payload(10_000)
    url = _serve(server, "a.zip", data)
    dest = tmp_path / "a.zip"
    download(url, dest, md5=_md5(data), **FAST)
    download(url, dest, md5=_md5(data).upper(), **FAST)
    assert len(server.requests) == 1
    dest.write_bytes(b"corrupt")  # a wrong file is replaced
    download(url, dest, md5=_md5(data), **FAST)
    assert len(server.requests) == 2 and dest.read_bytes() == data


@pytest.mark.parametrize(
    ("url", "md5"),
    [("ftp://example.org/a.zip", None), ("http://127.0.0.1:1/a.zip", "not-a-checksum")],
)
def test_download_rejects_bad_arguments(tmp_path: Path, url: str, md5: str | None) -> None:
    with pytest.raises(InputError):
        download(url, tmp_path / "a.zip", md5=md5)


# --------------------------------------------------------------------------- safe_extract


def _files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize(
    "evil", ["../evil.txt", "test/../../evil.txt", "/tmp/evil.txt", "C:/evil.txt", "..\\evil.txt"]
)
def test_safe_extract_refuses_escaping_members(tmp_path: Path, evil: str) -> None:
    archive = tmp_path / "evil.zip"
    archive.write_bytes(_zip({"test/images/ok.png": b"ok", evil: b"pwned"}))
    target = tmp_path / "out"
    with pytest.raises(FetchError, match="nothing was extracted") as info:
        safe_extract(archive, target)
    assert repr(evil) in str(info.value)
    assert _files_under(target) == []  # the good member was not extracted either
    assert not (tmp_path / "evil.txt").exists()


def test_safe_extract_refuses_symlink_members(tmp_path: Path) -> None:
    link = zipfile.ZipInfo("test/images/link.png")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("test/images/ok.png", b"ok")
        archive.writestr(link, "../../../../etc/passwd")
    (tmp_path / "link.zip").write_bytes(buf.getvalue())
    with pytest.raises(FetchError, match="symbolic link"):
        safe_extract(tmp_path / "link.zip", tmp_path / "out")
    assert _files_under(tmp_path / "out") == []


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
def test_safe_extract_refuses_paths_through_existing_links(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "out"
    target.mkdir()
    (target / "test").symlink_to(outside, target_is_directory=True)
    (tmp_path / "a.zip").write_bytes(_zip({"test/x.png": b"x"}))
    with pytest.raises(FetchError, match="through a link"):
        safe_extract(tmp_path / "a.zip", target)
    assert list(outside.iterdir()) == []


def test_safe_extract_resumes_and_leaves_no_temporaries(tmp_path: Path) -> None:
    members = _split_members("test")
    (tmp_path / "t.zip").write_bytes(_zip(members))
    target = tmp_path / "out"
    n_files = sum(1 for name in members if not name.endswith("/"))
    assert safe_extract(tmp_path / "t.zip", target) == n_files
    kept = target / "test" / "images" / "N40E033_041_000.png"
    before = kept.stat().st_mtime_ns
    (target / "test" / "masks" / "N40E033_041_001.png").unlink()
    assert safe_extract(tmp_path / "t.zip", target) == n_files
    assert kept.stat().st_mtime_ns == before  # present with the right size: not rewritten
    expected = sorted(name for name in members if not name.endswith("/"))
    assert _files_under(target) == expected  # no temporary files left
    for name in expected:
        assert (target / name).read_bytes() == members[name]


def test_safe_extract_reports_a_corrupt_archive(tmp_path: Path) -> None:
    (tmp_path / "bad.zip").write_bytes(b"PK\3\4 this is not a zip")
    with pytest.raises(FetchError, match="not a usable zip"):
        safe_extract(tmp_path / "bad.zip", tmp_path / "out")


# --------------------------------------------------------------------------- fetch_aras400k


def test_aras400k_constants() -> None:
    assert set(ARAS400K_FILES) == {"train", "val", "test", "synth"}
    assert ARAS400K_FILES["test"] == "01679231ee8e38701f5d3ab7de0b5719"
    assert ARAS400K_BASE_URL == "https://zenodo.org/records/18890661/files"


def test_fetch_aras400k_end_to_end(server: ServerState, tmp_path: Path) -> None:
    zips = {split: _zip(_split_members(split)) for split in ("test", "val")}
    md5s = {split: _md5(data) for split, data in zips.items()}
    for split, data in zips.items():
        _serve(server, f"{split}.zip", data)
    out = tmp_path / "aras"
    results = fetch_aras400k(out, ("test", "val"), base_url=server.base_url + "/", md5s=md5s)

    assert [r.split for r in results] == ["test", "val"]
    for result, split in zip(results, ("test", "val"), strict=True):
        assert isinstance(result, FetchResult)
        assert result.path == out / split
        assert result.url == f"{server.base_url}/{split}.zip"
        assert result.bytes_downloaded == len(zips[split])
        assert (result.files_extracted, result.files_total) == (7, 7)
        assert not result.skipped and not result.resumed and result.zip_path is None
        assert sorted(p.name for p in (out / split / "images").iterdir()) == [
            f"N40E033_041_{i:03d}.png" for i in range(3)
        ]
        assert len(list((out / split / "masks").glob("*.png"))) == 3
        marker = json.loads((out / ".fetch" / f"{split}.done").read_text())
        assert marker["md5"] == md5s[split] and marker["files"] == 7
    assert not list((out / ".fetch").glob("*.zip*"))  # archives removed, no .part left

    rerun = fetch_aras400k(out, ["test", "val"], base_url=server.base_url, md5s=md5s)
    assert all(r.skipped and r.bytes_downloaded == 0 and r.files_total == 7 for r in rerun)
    assert len(server.requests) == 2  # the rerun asked the server nothing


def test_fetch_aras400k_keep_zip_and_download_only(server: ServerState, tmp_path: Path) -> None:
    data = _zip(_split_members("test"))
    _serve(server, "test.zip", data)
    md5s = {"test": _md5(data)}
    (only,) = fetch_aras400k(tmp_path, "test", base_url=server.base_url, md5s=md5s, extract=False)
    assert only.zip_path == tmp_path / ".fetch" / "test.zip" and only.files_total == 0
    assert not (tmp_path / "test").exists() and not (tmp_path / ".fetch" / "test.done").exists()
    (kept,) = fetch_aras400k(tmp_path, "test", base_url=server.base_url, md5s=md5s, keep_zip=True)
    assert kept.zip_path is not None and kept.zip_path.read_bytes() == data
    assert kept.files_extracted == 7 and kept.bytes_downloaded == 0
    assert len(server.requests) == 1  # the verified archive was reused


def test_fetch_aras400k_refuses_an_unsafe_archive(server: ServerState, tmp_path: Path) -> None:
    data = _zip({"test/images/a.png": b"a", "../evil.txt": b"pwned"})
    _serve(server, "test.zip", data)
    out = tmp_path / "aras"
    with pytest.raises(FetchError, match="evil"):
        fetch_aras400k(out, base_url=server.base_url, md5s={"test": _md5(data)})
    assert not (tmp_path / "evil.txt").exists()
    assert not (out / "test").exists() and not (out / ".fetch" / "test.done").exists()


@pytest.mark.parametrize("splits", [("tset",), ()])
def test_fetch_aras400k_rejects_unknown_splits(tmp_path: Path, splits: tuple[str, ...]) -> None:
    with pytest.raises(InputError, match="choose from"):
        fetch_aras400k(tmp_path, splits)
