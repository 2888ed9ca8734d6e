"""The openai captioner against a real chat-completions server on 127.0.0.1."""

from __future__ import annotations

import base64
import io
import logging

import numpy as np
import pytest
from PIL import Image

from groundsynth.caption import CaptionJob, caption_jobs, facts_from_mask, get_captioner
from groundsynth.caption.openai_backend import OpenAICaptioner, OpenAIConfig
from groundsynth.errors import GroundsynthError, InputError
from tests.caption.chat_server import ChatServer, Reply, closed_port, default_caption

KEY = "sk-test-SECRET-0123456789"


def _facts(i: int = 0):
    mask = np.zeros((32, 32), np.uint8)
    mask[:, 16:] = 3
    mask[:4, :4] = 6
    return facts_from_mask(mask, f"img{i}")


def _image(i: int = 0) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 256, (16, 16, 3), dtype=np.uint8)


@pytest.fixture
def server():
    with ChatServer(lifetime=60) as srv:
        yield srv


def _cap(server, stream="hybrid", **kw) -> OpenAICaptioner:
    opts = {"backoff": 0.01, "max_backoff": 0.05, "timeout": 2.0, **kw}
    return get_captioner(
        "openai", model="qwen3-vl-8b", stream=stream, base_url=server.base_url, **opts
    )


def test_request_body_image_and_key(server, monkeypatch, caplog) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    with _cap(server, "hybrid") as cap:
        jobs = [CaptionJob(_facts(i), _image(i), f"img{i}") for i in range(3)]
        results = caption_jobs(cap, jobs, seed=7)
        assert repr(cap).find(KEY) < 0 and KEY not in str(cap.describe())
    assert all(r.ok for r in results)
    assert len(server.requests) == 3
    by_seed = {r["body"]["seed"]: r for r in server.requests}
    assert len(by_seed) == 3  # a seed per image
    req = server.requests[0]
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == f"Bearer {KEY}"
    body = req["body"]
    assert body["model"] == "qwen3-vl-8b" and body["temperature"] == 0.0
    assert body["max_tokens"] > 0 and body["stream"] is False
    (msg,) = body["messages"]
    assert msg["role"] == "user"
    image_part, text_part = msg["content"]
    url = image_part["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    sent = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
    assert any(np.array_equal(sent, _image(i)) for i in range(3))  # lossless PNG
    assert "Crop: 50 %" in text_part["text"]  # the hybrid prompt carries the composition
    # each result is the server's reply to its own request, in job order
    for job, res in zip(jobs, results):
        match = [r for r in server.requests if r["body"]["seed"] == _seed_of(cap, job)]
        assert res.captions == (default_caption(match[0]["body"]),)
    assert KEY not in caplog.text


def _seed_of(cap, job) -> int:
    from groundsynth.caption.base import item_seed

    return item_seed(7, job.seed_key)


def test_text_stream_sends_no_image_and_vision_no_composition(server, monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with _cap(server, "text") as cap:
        assert not cap.needs_image
        (text,) = cap.caption(_facts(), image=_image(), key="a")
        assert text.startswith("A land cover scene")
    body = server.requests[-1]["body"]
    assert isinstance(body["messages"][0]["content"], str)  # the prompt alone
    assert "data:image" not in str(body)
    assert "Authorization" not in server.requests[-1]["headers"]
    with _cap(server, "vision", system_prompt="You caption satellite images.") as cap:
        cap.caption(_facts(), image=_image(), key="a")
    system, user = server.requests[-1]["body"]["messages"]
    assert system == {"role": "system", "content": "You caption satellite images."}
    assert "Crop" not in user["content"][1]["text"] and "image_url" in str(user)
    # no image for an image stream: this image fails, the run goes on
    with _cap(server, "vision") as cap:
        (res,) = caption_jobs(cap, [CaptionJob(_facts(), None, "x")])
    assert not res.ok and "needs the image" in res.error


def test_500s_then_success_are_retried(server) -> None:
    server.plan = [Reply(500, {"error": "boom"}), Reply(503, "busy"), Reply(429, "slow down")]
    with _cap(server, "text", retries=3) as cap:
        (res,) = caption_jobs(cap, [CaptionJob(_facts(), None, "a")])
    assert res.ok and len(server.requests) == 4


def test_timeouts_and_malformed_replies_end_as_recorded_failures(server, caplog) -> None:
    server.plan = [Reply(delay=1.0), Reply(body="not json {"), Reply(body={"choices": []})]
    with _cap(server, "text", retries=2, timeout=0.3) as cap:
        (res,) = caption_jobs(cap, [CaptionJob(_facts(), None, "a")])
    assert not res.ok and res.captions == ()
    assert "malformed reply" in res.error and "after 3 attempts" in res.error
    assert "caption of a failed" in caplog.text
    # a timeout is retried like the rest
    server.plan = [Reply(delay=1.0), Reply(body={"choices": [{"message": {"content": " "}}]})]
    with _cap(server, "text", retries=2, timeout=0.3) as cap:
        (res,) = caption_jobs(cap, [CaptionJob(_facts(), None, "b")])
    assert res.ok
    server.plan = [Reply(delay=1.0)] * 2
    with _cap(server, "text", retries=1, timeout=0.3) as cap:
        (res,) = caption_jobs(cap, [CaptionJob(_facts(), None, "c")])
    assert not res.ok and "timed out" in res.error
    with (
        pytest.raises(GroundsynthError, match="timed out"),
        _cap(server, "text", retries=0, timeout=0.3) as cap,
    ):
        server.plan = [Reply(delay=1.0)]
        cap.caption(_facts(), key="d")


def test_client_errors_fail_at_once_and_auth_errors_stop_the_run(server, monkeypatch) -> None:
    monkeypatch.setenv("MY_KEY", KEY)
    server.plan = [Reply(400, {"error": "context too long"})]
    with _cap(server, "text", api_key_env="MY_KEY") as cap:
        (res,) = caption_jobs(cap, [CaptionJob(_facts(), None, "a")])
    assert not res.ok and res.error.startswith("HTTP 400") and len(server.requests) == 1
    server.plan = [Reply(401, {"error": "bad key"})]
    with (
        pytest.raises(InputError, match=r"HTTP 401.*\$MY_KEY") as info,
        _cap(server, "text", api_key_env="MY_KEY") as cap,
    ):
        caption_jobs(cap, [CaptionJob(_facts(), None, "a")])
    assert KEY not in str(info.value)


def test_concurrency_limit_and_order(server) -> None:
    server.delay = 0.05
    with _cap(server, "text", concurrency=4) as cap:
        jobs = [CaptionJob(_facts(i), None, f"k{i}") for i in range(12)]
        results = caption_jobs(cap, jobs)
    assert all(r.ok for r in results)
    assert 1 < server.max_active <= 4
    # order: result i answers job i (the prompt of job i holds its own seed)
    again = [cap.caption(j.facts, key=j.key)[0] for j in jobs[:3]]
    assert again == [r.captions[0] for r in results[:3]]


def test_n_captions_need_sampling_and_config_is_validated(server) -> None:
    with _cap(server, "text") as cap, pytest.raises(InputError, match="temperature > 0"):
        cap.caption(_facts(), n=2)
    with _cap(server, "text", temperature=0.7) as cap:
        caps = cap.caption(_facts(), n=3, key="z")
    assert len(caps) == 3 and len(set(caps)) == 3  # seeds differ per caption index
    for bad in ({"base_url": "localhost:8000"}, {"concurrency": 0}, {"stream": "audio"}):
        with pytest.raises(InputError):
            OpenAIConfig(model="m", **bad)


def test_light_imports_and_missing_dependency_names_the_extra(monkeypatch) -> None:
    import subprocess
    import sys

    code = (
        "import sys, groundsynth.caption, groundsynth.caption.run, groundsynth.evaluate.captions;"
        "heavy = {'torch', 'transformers', 'httpx', 'open_clip'} & set(sys.modules);"
        "assert not heavy, heavy"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    from groundsynth.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "httpx", None)  # as if not installed
    with pytest.raises(MissingDependencyError, match=r"groundsynth\[caption\]"):
        get_captioner("openai", model="m", stream="text")


def test_an_unreachable_server_stops_the_run_at_once() -> None:
    import time

    url = f"http://127.0.0.1:{closed_port()}/v1"
    cap = get_captioner(
        "openai", model="m", stream="text", base_url=url, retries=2, backoff=0.05, concurrency=2
    )
    jobs = [CaptionJob(_facts(i), None, f"k{i}") for i in range(40)]
    start = time.monotonic()
    with cap, pytest.raises(InputError, match=rf"{url}: cannot reach the server.*--base-url"):
        caption_jobs(cap, jobs)  # before: 40 failed results, 3 attempts each
    assert time.monotonic() - start < 5.0
    with pytest.raises(InputError, match="cannot reach"):  # the captioner stays stopped
        cap.caption(_facts(), key="again")


def test_a_server_gone_after_answering_stops_after_requests_in_a_row() -> None:
    from groundsynth.caption.openai_backend import UNREACHABLE_AFTER

    srv = ChatServer(lifetime=60)
    with srv, _cap(srv, "text", retries=1, concurrency=1) as cap:
        assert cap.caption(_facts(), key="first")
        srv.stop()  # the port closes: new connections are refused from now on
        cap.close()  # drop the kept-alive connection (the next request opens a new one)
        jobs = [CaptionJob(_facts(i), None, f"k{i}") for i in range(10)]
        fewer = caption_jobs(cap, jobs[: UNREACHABLE_AFTER - 1])  # not yet: recorded failures
        assert all(not r.ok and "connection failed" in r.error for r in fewer)
        with pytest.raises(InputError, match=f"{UNREACHABLE_AFTER} requests in a row"):
            caption_jobs(cap, jobs)
