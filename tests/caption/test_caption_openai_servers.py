"""The openai captioner over several chat-completions servers on 127.0.0.1: spreading,
per-server concurrency, failover, dead servers, and the CLI's repeated --base-url."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from groundsynth.caption import CaptionJob, caption_jobs, facts_from_mask, get_captioner
from groundsynth.caption.openai_backend import OpenAICaptioner, OpenAIConfig
from groundsynth.caption.run import CaptionRunConfig, StreamSpec, caption_dataset
from groundsynth.cli import app
from groundsynth.errors import InputError
from tests.caption.chat_server import ChatServer, Reply, closed_port, default_caption
from tests.caption.dataset import make_dataset

LOGGER = "groundsynth.caption.openai_servers"


def _facts(i: int):
    mask = np.zeros((16, 16), np.uint8)
    mask[:, : 1 + i % 15] = 3
    mask[:2, :2] = 6
    return facts_from_mask(mask, f"img{i}")


def _jobs(count: int, start: int = 0) -> list[CaptionJob]:
    return [CaptionJob(_facts(i), None, f"k{i}") for i in range(start, start + count)]


def _cap(urls: Sequence[str], **kw) -> OpenAICaptioner:
    opts = {"backoff": 0.01, "max_backoff": 0.05, "timeout": 2.0, "retries": 0, **kw}
    return get_captioner("openai", model="m", stream="text", base_urls=tuple(urls), **opts)


@contextlib.contextmanager
def _servers(*delays: float, **kw) -> Iterator[list[ChatServer]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(ChatServer(delay=d, lifetime=60, **kw)) for d in delays]


def _warnings_naming(caplog, url: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and url in r.getMessage()
    ]


def _captions(results) -> list[str]:
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    return [r.captions[0] for r in results]


def test_requests_are_spread_evenly_over_servers_of_equal_speed() -> None:
    with _servers(0.02, 0.02, 0.02) as srvs, _cap([s.base_url for s in srvs], concurrency=2) as cap:
        results = caption_jobs(cap, _jobs(60))
    counts = [len(s.requests) for s in srvs]
    assert sum(counts) == 60 and len(_captions(results)) == 60
    assert min(counts) >= 15, counts  # 20 each when perfectly balanced
    # each result is the reply to its own request, whichever server sent it
    sent = {r["body"]["seed"]: r["body"] for s in srvs for r in s.requests}
    assert len(sent) == 60
    assert sorted(_captions(results)) == sorted(default_caption(b) for b in sent.values())


def test_each_request_goes_to_the_least_loaded_server() -> None:
    # fewer requests than slots: policies that fill the first server with room, or take
    # turns whatever the load, would send these elsewhere
    with _servers(0.0, 0.0, 0.0) as srvs, _cap([s.base_url for s in srvs], concurrency=4) as cap:
        for i in range(9):  # one at a time: all servers idle, so they take turns
            cap.caption(_facts(i), key=f"k{i}")
        assert [len(s.requests) for s in srvs] == [3, 3, 3]
        for s in srvs:
            s.delay = 0.2
        caption_jobs(cap, _jobs(6, start=9))  # 6 at once, 12 slots: 2 each
        assert [len(s.requests) for s in srvs] == [5, 5, 5]
        assert [s.max_active for s in srvs] == [2, 2, 2]
    with _servers(0.0, 0.0) as (a, b), _cap([a.base_url, b.base_url], concurrency=4) as cap:
        a.plan = [Reply(delay=1.0)]  # the first request (a's turn) stays in flight
        busy = threading.Thread(target=cap.caption, args=(_facts(0),), kwargs={"key": "busy"})
        busy.start()
        deadline = time.monotonic() + 2.0
        while a.active == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        for i in range(1, 7):  # a has one in flight, b none: all go to b
            cap.caption(_facts(i), key=f"k{i}")
        assert a.active == 1 and [len(a.requests), len(b.requests)] == [1, 6]
        busy.join()


def test_a_slow_server_gets_fewer_requests() -> None:
    with _servers(0.15, 0.0) as (slow, fast), _cap([slow.base_url, fast.base_url]) as cap:
        caption_jobs(cap, _jobs(40), seed=1)
    assert len(slow.requests) >= 1 and len(fast.requests) > 3 * len(slow.requests), (
        len(slow.requests),
        len(fast.requests),
    )


def test_concurrency_is_per_server() -> None:
    with _servers(0.05, 0.05) as srvs, _cap([s.base_url for s in srvs], concurrency=3) as cap:
        peak, done = 0, threading.Event()

        def watch() -> None:  # requests in flight on both servers together
            nonlocal peak
            while not done.is_set():
                peak = max(peak, sum(s.active for s in srvs))
                time.sleep(0.002)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            results = caption_jobs(cap, _jobs(36))
        finally:
            done.set()
            watcher.join()
    assert len(_captions(results)) == 36
    assert [s.max_active for s in srvs] == [3, 3]  # full, never over the limit
    assert 3 < peak <= 6  # the servers worked at the same time
    # with a server dead, its slots are not handed to the others
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    with _servers(0.05) as (b,), _cap([dead, b.base_url], concurrency=2) as cap:
        assert len(_captions(caption_jobs(cap, _jobs(12)))) == 12
    assert b.max_active == 2


def _count_tries(monkeypatch) -> Counter[str]:
    """Tries per chat-completions URL, counted on the client (a closed port logs nothing)."""
    import httpx

    tries: Counter[str] = Counter()
    post = httpx.Client.post

    def counting(self, url, *args, **kwargs):
        tries[str(url)] += 1
        return post(self, url, *args, **kwargs)

    monkeypatch.setattr(httpx.Client, "post", counting)
    return tries


def test_a_server_down_from_the_start_is_left_out_and_captions_are_unchanged(
    caplog, monkeypatch
) -> None:
    tries = _count_tries(monkeypatch)
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    with (
        _servers(0.0, 0.0) as (a, b),
        _cap([dead, a.base_url, b.base_url], concurrency=2) as cap,
    ):
        results = caption_jobs(cap, _jobs(36), seed=3)  # retries=0: failover is no retry
    # tried by the first requests only (until one of them ends: at most one per slot, 6),
    # then left out
    assert 1 <= tries[f"{dead}/chat/completions"] <= 6, tries
    assert len(a.requests) > 0 and len(b.requests) > 0
    assert len(a.requests) + len(b.requests) == 36
    (warning,) = _warnings_naming(caplog, dead)  # once, however many requests it refused
    assert "cannot reach the server" in warning and "2 other servers" in warning
    with ChatServer(lifetime=60) as one, _cap([one.base_url]) as cap:
        alone = caption_jobs(cap, _jobs(36), seed=3)
    assert _captions(results) == _captions(alone)  # same text per image


def test_a_server_that_dies_mid_run_leaves_the_work_to_the_others(caplog, monkeypatch) -> None:
    caplog.set_level(logging.INFO, logger="groundsynth.caption")
    tries = _count_tries(monkeypatch)
    with _servers(0.01, 0.01, 0.01) as (a, b, c):
        a.stop_after = 5
        with _cap([a.base_url, b.base_url, c.base_url], concurrency=2) as cap:
            results = caption_jobs(cap, _jobs(40))
            before = tries[f"{a.base_url}/chat/completions"]
            again = caption_jobs(cap, _jobs(6, start=40))
            assert tries[f"{a.base_url}/chat/completions"] == before  # a is left out now
    assert len(_captions(results)) == 40 and len(_captions(again)) == 6
    assert len(a.requests) == 5 and a.killed
    assert len(b.requests) + len(c.requests) == 41
    (warning,) = _warnings_naming(caplog, a.base_url)
    assert "3 requests in a row failed to connect" in warning
    assert "caption of" not in caplog.text  # no image failed
    assert f"{a.base_url}: 5 (dead)" in caplog.text  # the summary logged at close


def test_every_server_down_stops_the_run_naming_each() -> None:
    urls = [f"http://127.0.0.1:{closed_port()}/v1" for _ in range(3)]
    start = time.monotonic()
    with _cap(urls, retries=1, concurrency=2) as cap, pytest.raises(InputError) as info:
        caption_jobs(cap, _jobs(30))
    assert time.monotonic() - start < 5.0
    msg = str(info.value)
    assert msg.startswith("cannot reach any of the 3 servers")
    assert all(f"{u} (no connection in" in msg for u in urls), msg
    assert "--base-url" in msg and "retried by the next run" in msg
    with pytest.raises(InputError, match="cannot reach any"):  # it stays stopped
        cap.caption(_facts(0), key="again")


def test_5xx_and_timeouts_fail_over_to_another_server() -> None:
    with _servers(0.0, 0.0) as (a, b), _cap([a.base_url, b.base_url], timeout=0.5) as cap:
        a.plan = [Reply(500, "boom")]
        (text,) = cap.caption(_facts(0), key="x")  # round-robin: a first, then b
        assert [len(a.requests), len(b.requests)] == [1, 1]
        assert text == default_caption(b.requests[0]["body"])
        a.plan = [Reply(delay=2.0)]  # a's turn again (after b): it times out, b answers
        (text,) = cap.caption(_facts(1), key="y")
        assert [len(a.requests), len(b.requests)] == [2, 2]
        assert text == default_caption(b.requests[1]["body"])
        a.plan, b.plan = [Reply(503, "busy")], [Reply(502, "bad gateway")]
        (res,) = caption_jobs(cap, _jobs(1))  # both fail it: a recorded failure
    assert not res.ok and res.error.startswith("HTTP 502")
    assert f"2 attempts on 2 servers, the last on {b.base_url}" in res.error


def test_an_auth_error_names_the_server_that_said_it(monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-servers-SECRET")
    with _servers(0.0, 0.0) as (a, b), _cap([a.base_url, b.base_url]) as cap:
        b.plan = [Reply(401, {"error": "bad key"})]
        assert cap.caption(_facts(0), key="x")  # a
        with pytest.raises(InputError, match=r"HTTP 401.*\$OPENAI_API_KEY") as info:
            cap.caption(_facts(1), key="y")  # b
    assert str(info.value).startswith(f"{b.base_url}/chat/completions: HTTP 401")
    assert a.base_url not in str(info.value) and "SECRET" not in str(info.value)


def test_a_dead_server_is_tried_again_after_probe_after(caplog, monkeypatch) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    tries = _count_tries(monkeypatch)
    port = closed_port()
    url = f"http://127.0.0.1:{port}/v1"
    a = ChatServer(delay=0.02, lifetime=60)
    with a, _cap([url, a.base_url], probe_after=0.2, concurrency=2) as cap:
        assert len(_captions(caption_jobs(cap, _jobs(4)))) == 4
        assert len(_warnings_naming(caplog, url)) == 1
        first = tries[f"{url}/chat/completions"]
        time.sleep(0.3)  # a probe is due; the server is still down
        t0 = time.monotonic()
        assert len(_captions(caption_jobs(cap, _jobs(8, start=4)))) == 8
        due = 1 + int((time.monotonic() - t0) / 0.2)  # a slow machine leaves time for more
        probes = tries[f"{url}/chat/completions"] - first
        assert 1 <= probes <= min(due + 1, 7), probes  # one per 0.2 s, not one per request
        assert f"{url}: still unreachable" in caplog.text
        with ChatServer(delay=0.02, lifetime=60, port=port) as back:  # the server comes up
            time.sleep(0.3)
            assert len(_captions(caption_jobs(cap, _jobs(16, start=12)))) == 16
            assert len(back.requests) >= 4, len(back.requests)  # in use again, not probed
            back.kill()  # and down again: left out again, without a second warning
            assert len(_captions(caption_jobs(cap, _jobs(16, start=28)))) == 16
    assert f"{url}: the server answers again" in caplog.text
    assert len(_warnings_naming(caplog, url)) == 1
    deaths = [r for r in caplog.records if f"{url}: cannot reach the server" in r.getMessage()]
    assert [r.levelno for r in deaths] == [logging.WARNING, logging.INFO]


def test_config_of_several_servers() -> None:
    a, b = "http://a:8000/v1", "http://b:8000/v1/"
    one = OpenAIConfig(model="m", base_url=a)
    assert one.base_urls == (a,) and one.base_url == a and one.url == a + "/chat/completions"
    two = OpenAIConfig(model="m", base_urls=[a, b])  # type: ignore[arg-type]
    assert two.base_urls == (a, b) and two.base_url == a
    assert OpenAIConfig(model="m", base_url=b, base_urls=(a, b)).base_urls == (a, b)
    for bad, match in [
        ({"base_urls": (a, "http://a:8000/v1/")}, "listed twice"),
        ({"base_urls": (a, "b:8000")}, "must start with http"),
        ({"base_urls": a}, "a list of URLs"),
        ({"base_url": "http://c/v1", "base_urls": (a, b)}, "not one of base_urls"),
        ({"probe_after": -1.0}, "probe_after"),
    ]:
        with pytest.raises(InputError, match=match):
            OpenAIConfig(model="m", **bad)
    cap = OpenAICaptioner(model="m", stream="text", base_urls=("http://u:pw@a/v1", b))
    described = cap.describe()
    assert described["base_urls"] == ["http://***@a/v1", b] and "base_url" not in described
    assert "pw" not in repr(cap) and "pw" not in str(described)


def test_a_run_resumes_on_other_servers(tmp_path) -> None:
    root = make_dataset(tmp_path / "ds", {"train": 6})
    specs = (StreamSpec.parse("text=openai:m"),)
    with _servers(0.0, 0.0, 0.0) as (a, b, c):
        a.plan = [Reply(500, "down")] * 2
        first = CaptionRunConfig(str(root), specs, base_url=a.base_url, retries=0, concurrency=1)
        assert caption_dataset(first).failed == 2
        other = CaptionRunConfig(str(root), specs, base_urls=(b.base_url, c.base_url))
        res = caption_dataset(other)  # the server list is not part of the column identity
    assert res.failed == 0 and res.counts["train"]["text_m"]["done_before"] == 4
    assert len(b.requests) + len(c.requests) == 2
    table = pd.read_csv(root / "captions" / "train.csv", keep_default_na=False)
    assert (table["text_m"] != "").all()


def test_cli_takes_repeated_and_comma_separated_base_urls(tmp_path) -> None:
    runner = CliRunner()
    root = make_dataset(tmp_path / "ds", {"train": 9})
    with _servers(0.02, 0.02, 0.02) as (a, b, c):
        args = ["caption", str(root), "-s", "text=openai:m", "--base-url", a.base_url]
        args += ["--base-url", f"{b.base_url},{c.base_url}", "--concurrency", "1"]
        res = runner.invoke(app, [*args, "--dry-run"])
        assert res.exit_code == 0, res.output
        assert all(f"- {s.base_url}" in res.output for s in (a, b, c)), res.output
        res = runner.invoke(app, [*args, "--no-progress"])
        assert res.exit_code == 0, res.output
    counts = [len(s.requests) for s in (a, b, c)]
    assert sum(counts) == 9 and min(counts) > 0, counts
    res = runner.invoke(app, ["caption", "--help"], terminal_width=200)
    help_text = " ".join(res.output.replace("│", " ").split())  # rich's box, unwrapped
    assert "comma-separated list" in help_text and "least-loaded" in help_text
    assert "only when none can be reached" in help_text
