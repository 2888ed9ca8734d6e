"""The ``openai`` captioner: any OpenAI-compatible chat-completions server.

Works with vLLM, Ollama, llama.cpp's server, LM Studio and OpenAI itself: each caption is one
``POST {base_url}/chat/completions`` whose user message holds the stream's prompt
(:mod:`groundsynth.caption.prompts`) and, for the ``hybrid`` and ``vision`` streams, the
image as a base64 PNG data URL (``{"type": "image_url", "image_url": {"url":
"data:image/png;base64,..."}}``); the ``text`` stream sends the prompt alone.

Servers: ``base_urls`` lists several servers serving the same model (e.g. one vLLM per
GPU), ``base_url`` names one. Requests are spread over them (:mod:`.openai_servers`): each
goes to the least-loaded live server with a free slot (ties round-robin), so a slow server
gets fewer. They should serve one model with the same settings: a request (seed included)
is the same whichever server gets it, so the server list is not part of a run's identity
and a run may resume on other servers.

Reliability:

- at most ``concurrency`` requests in flight per server (a thread pool of servers ×
  ``concurrency`` workers over one ``httpx.Client``);
- every request has a ``timeout`` (seconds, connect and read);
- a try that fails to connect, times out, gets HTTP 429, 5xx or another retryable status,
  or a malformed reply (not JSON, no ``choices``, empty content) fails over at once to
  another live server the request has not tried yet; once every live server failed it, the
  request is retried up to ``retries`` times with exponential back-off (``backoff ×
  2^attempt`` seconds, at most ``max_backoff``, times a random factor in [0.5, 1]; a
  ``Retry-After`` header is honoured up to ``max_backoff``); then the image's result is a
  failure naming the last error, and a run records it and retries it next time;
- other 4xx replies fail the image at once (retrying would not help); HTTP 401/403 (key
  rejected) and 404 (wrong URL or model) stop the run with an :class:`InputError` naming
  the server that said it;
- a server that cannot be reached (connection refused, unknown host, connect timeout) is
  marked dead, with a warning naming it, once a request ends without having connected to
  it (all its tries there failed) while it has never answered, or once
  :data:`UNREACHABLE_AFTER` requests in a row did so after it had; it gets no requests
  then, but one is tried on it again every ``probe_after`` seconds (None: never). When
  every server is dead the run stops with an :class:`InputError` naming them all, instead
  of failing image after image: requests still in flight stop at their next try, and the
  captioner refuses further requests; none of these images is recorded, so the next run
  retries them.

The API key is read from the environment variable ``api_key_env`` (default
``OPENAI_API_KEY``) when the captioner is built; no key means no ``Authorization`` header
(local servers need none). The key is never logged, never part of :meth:`describe` or of
any run record.

Decoding is greedy (``temperature`` 0) by default and every request carries a ``seed``
derived from (seed, image key, caption index); ``n`` > 1 captions per image take ``n``
requests and need ``temperature`` > 0 (greedy decoding would repeat one caption).
"""

from __future__ import annotations

import base64
import io
import logging
import os
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from groundsynth._optional import lazy_import
from groundsynth.caption.base import (
    BatchCaptioner,
    CaptionJob,
    CaptionResult,
    clean_caption,
    item_seed,
)
from groundsynth.caption.facts import GroundingFacts
from groundsynth.caption.openai_servers import (
    DEFAULT_BASE_URL,
    UNREACHABLE_AFTER,
    Server,
    ServerPool,
    public_url,
    server_urls,
)
from groundsynth.caption.prompts import STREAMS, load_template
from groundsynth.errors import InputError

__all__ = ["UNREACHABLE_AFTER", "OpenAICaptioner", "OpenAIConfig", "image_data_url"]

logger = logging.getLogger(__name__)

_RETRY_STATUS = frozenset({408, 409, 425, 429})
_FATAL_STATUS = {401: "the API key was rejected", 403: "access denied", 404: "not found"}


@dataclass(frozen=True)
class OpenAIConfig:
    """Settings of the ``openai`` captioner (no secrets: the key stays in the environment).

    ``base_urls`` lists the servers requests are spread over; without it, ``base_url`` is
    the one server. Once built, ``base_urls`` holds every server and ``base_url`` the first.
    ``concurrency`` is per server. ``probe_after``: seconds before a dead server is tried
    again while others carry on (None: never).
    """

    model: str
    stream: str = "hybrid"
    base_url: str = DEFAULT_BASE_URL
    base_urls: tuple[str, ...] = ()
    api_key_env: str = "OPENAI_API_KEY"
    prompt: str | None = None  # a prompt file or a folder of <stream>.txt; None: built in
    system_prompt: str | None = None
    max_tokens: int = 160
    temperature: float = 0.0
    top_p: float | None = None
    concurrency: int = 4
    timeout: float = 120.0
    retries: int = 4
    backoff: float = 1.0
    max_backoff: float = 30.0
    probe_after: float | None = 60.0

    def __post_init__(self) -> None:
        if not self.model.strip():
            raise InputError("the openai captioner needs a model name (e.g. qwen3-vl-8b)")
        if self.stream not in STREAMS:
            raise InputError(f"unknown stream {self.stream!r}; valid streams: {', '.join(STREAMS)}")
        urls = server_urls(self.base_url, self.base_urls)
        object.__setattr__(self, "base_urls", urls)
        object.__setattr__(self, "base_url", urls[0])
        if not self.api_key_env or not self.api_key_env.replace("_", "").isalnum():
            raise InputError(
                f"api_key_env must be an environment variable name; got {self.api_key_env!r}"
            )
        for name in ("max_tokens", "concurrency"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1; got {getattr(self, name)}")
        if self.retries < 0:
            raise InputError(f"retries must be >= 0; got {self.retries}")
        if self.timeout <= 0 or self.backoff < 0 or self.max_backoff < 0:
            raise InputError("timeout must be > 0 and backoff, max_backoff >= 0 seconds")
        if self.probe_after is not None and self.probe_after < 0:
            raise InputError(f"probe_after must be >= 0 seconds or None; got {self.probe_after}")
        if not 0.0 <= self.temperature <= 2.0:
            raise InputError(f"temperature must be in [0, 2]; got {self.temperature}")

    @property
    def url(self) -> str:
        """The chat-completions URL of the first server."""
        return self.base_url.rstrip("/") + "/chat/completions"


def image_data_url(image: Any) -> str:
    """An image (HxWx3 uint8 array or PIL image) as a ``data:image/png;base64,...`` URL."""
    import numpy as np
    from PIL import Image

    if not isinstance(image, Image.Image):
        arr = np.asarray(image)
        if arr.dtype != np.uint8 or arr.ndim not in (2, 3):
            raise InputError(f"expected an 8-bit image array, got {arr.dtype} {arr.shape}")
        image = Image.fromarray(arr)
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class _Failed(Exception):
    """One image could not be captioned (after retries where they made sense)."""


@dataclass(frozen=True)
class _Retry:
    """A try that failed in a way worth trying again (on another server, or later)."""

    error: str
    connected: bool = True  # False: no connection to the server at all
    retry_after: float | None = None


class OpenAICaptioner(BatchCaptioner):
    """Captions from an OpenAI-compatible chat-completions server (see the module doc)."""

    name = "openai"

    def __init__(self, config: OpenAIConfig | None = None, /, **kwargs: Any) -> None:
        self.config = config if config is not None else OpenAIConfig(**kwargs)
        if config is not None and kwargs:
            raise InputError("pass either an OpenAIConfig or keyword settings, not both")
        self._httpx = lazy_import("httpx")
        self._template = load_template(self.config.stream, self.config.prompt)
        key = os.environ.get(self.config.api_key_env, "").strip()
        self._headers = {"Content-Type": "application/json"}
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        else:
            logger.info(
                "no API key in $%s; sending requests without an Authorization header",
                self.config.api_key_env,
            )
        self._client: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._servers = ServerPool(
            self.config.base_urls, self.config.concurrency, probe_after=self.config.probe_after
        )

    def __repr__(self) -> str:  # never shows the key
        c = self.config
        urls = [public_url(u) for u in c.base_urls]
        where = f"base_url={urls[0]!r}" if len(urls) == 1 else f"base_urls={urls!r}"
        return f"OpenAICaptioner(model={c.model!r}, stream={c.stream!r}, {where})"

    @property
    def needs_image(self) -> bool:
        return self.config.stream != "text"

    def describe(self) -> dict[str, Any]:
        """Settings for run records (the key's variable name, never the key; the servers as
        ``base_urls``, a ``user:password@`` part masked)."""
        settings = asdict(self.config)
        del settings["base_url"]  # the first of base_urls
        settings["base_urls"] = [public_url(u) for u in self.config.base_urls]
        return {"backend": self.name, **settings, "prompt_source": self._template.source}

    # -- plumbing --------------------------------------------------------------------------
    def _session(self) -> tuple[Any, ThreadPoolExecutor]:
        with self._lock:
            if self._client is None:
                slots = self._servers.slots
                limits = self._httpx.Limits(max_connections=slots, max_keepalive_connections=slots)
                self._client = self._httpx.Client(
                    timeout=self._httpx.Timeout(self.config.timeout), limits=limits
                )
                self._pool = ThreadPoolExecutor(slots, thread_name_prefix="openai-cap")
            return self._client, self._pool  # type: ignore[return-value]

    def close(self) -> None:
        """Close the HTTP client and the worker threads (idempotent). Requests not yet
        started are cancelled (after an interrupt, their images are simply not journalled)."""
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
            if self._client is not None:
                self._client.close()
                self._client = None
                if len(self._servers.servers) > 1:
                    logger.info("openai replies per server: %s", self._servers.summary())

    def __enter__(self) -> OpenAICaptioner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests --------------------------------------------------------------------------
    def messages(self, facts: GroundingFacts, image: Any = None) -> list[dict[str, Any]]:
        """The chat messages of one image (the image as a data URL for hybrid/vision)."""
        prompt = self._template.render(facts)
        if self.needs_image:
            if image is None:
                raise InputError(
                    f"{facts.image_id or 'image'}: the {self.config.stream} stream needs the image"
                )
            content: Any = [
                {"type": "image_url", "image_url": {"url": image_data_url(image)}},
                {"type": "text", "text": prompt},
            ]
        else:
            content = prompt
        msgs = [{"role": "user", "content": content}]
        if self.config.system_prompt:
            msgs.insert(0, {"role": "system", "content": self.config.system_prompt})
        return msgs

    def _body(self, messages: list[dict[str, Any]], seed: int) -> dict[str, Any]:
        c = self.config
        body: dict[str, Any] = {
            "model": c.model,
            "messages": messages,
            "max_tokens": c.max_tokens,
            "temperature": c.temperature,
            "seed": seed,
            "stream": False,
        }
        if c.top_p is not None:
            body["top_p"] = c.top_p
        return body

    def _sleep(self, attempt: int, retry_after: float | None) -> None:
        c = self.config
        delay = min(c.max_backoff, c.backoff * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
        if retry_after is not None:
            delay = max(delay, min(retry_after, c.max_backoff))
        time.sleep(delay)

    def _try(self, client: Any, server: Server, body: dict[str, Any]) -> str | _Retry:
        """One try of a request on ``server``: the caption, a :class:`_Retry` (try again,
        elsewhere or later), or raises _Failed / a run-stopping error."""
        c, httpx = self.config, self._httpx
        try:
            reply = client.post(server.chat_url, json=body, headers=self._headers)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            return _Retry(f"connection failed ({type(exc).__name__}: {exc})", connected=False)
        except httpx.TimeoutException:
            return _Retry(f"timed out after {c.timeout:g} s")
        except httpx.TransportError as exc:
            return _Retry(f"connection error ({type(exc).__name__}: {exc})")
        self._servers.answered(server)
        status = reply.status_code
        if status in _FATAL_STATUS:
            raise InputError(
                f"{public_url(server.chat_url)}: HTTP {status} ({_FATAL_STATUS[status]}): "
                + (
                    f"check the key in ${c.api_key_env}"
                    if status in (401, 403)
                    else f"check --base-url and that the server serves model {c.model!r}"
                )
                + f"; server said: {_short(reply.text)}"
            )
        if status in _RETRY_STATUS or status >= 500:
            retry_after = _retry_after(reply.headers.get("retry-after"))
            return _Retry(f"HTTP {status}: {_short(reply.text)}", retry_after=retry_after)
        if status >= 400:
            raise _Failed(f"HTTP {status}: {_short(reply.text)}")
        try:
            return _parse(reply)
        except _Failed as exc:
            return _Retry(f"malformed reply ({exc})")

    def _post(self, body: dict[str, Any]) -> str:
        """One caption: tries on the servers, failover, retries; raises _Failed or a
        run-stopping error."""
        client, _ = self._session()
        c, servers = self.config, self._servers
        tries: dict[Server, int] = {}
        reached: set[Server] = set()  # the servers this request got a connection to
        refused: dict[Server, str] = {}  # the last connection error of each other one
        last, retry_after, where = "", None, ""
        try:
            for attempt in range(c.retries + 1):
                servers.check()
                if attempt:
                    self._sleep(attempt, retry_after)
                    retry_after = None
                tried: set[Server] = set()  # in this attempt: fail over to the others
                while (server := servers.acquire(exclude=tried)) is not None:
                    tried.add(server)
                    tries[server] = tries.get(server, 0) + 1
                    try:
                        outcome = self._try(client, server, body)
                    except (_Failed, InputError):  # raised on a reply: the server answered
                        reached.add(server)
                        raise
                    finally:
                        servers.release(server)
                    if isinstance(outcome, str):
                        reached.add(server)
                        return outcome
                    last, where = outcome.error, server.name
                    if outcome.connected:
                        reached.add(server)
                    else:
                        refused[server] = outcome.error
                    if outcome.retry_after is not None:
                        retry_after = outcome.retry_after
        finally:
            for server, n in tries.items():
                servers.settle(
                    server, connected=server in reached, last=refused.get(server, ""), tries=n
                )
        servers.check()
        total = sum(tries.values())
        attempts = f"{total} attempt{'s' * (total > 1)}"
        if len(tries) > 1:
            attempts += f" on {len(tries)} servers, the last on {where}"
        raise _Failed(f"{last} (gave up after {attempts})")

    def _one(self, job: CaptionJob, n: int, seed: int) -> CaptionResult:
        key = job.seed_key
        try:
            messages = self.messages(job.facts, job.image)
        except InputError as exc:  # no image, or an unusable one: this image fails
            return CaptionResult(error=str(exc))
        try:
            texts = [self._post(self._body(messages, item_seed(seed, key, i))) for i in range(n)]
        except _Failed as exc:
            logger.warning("caption of %s failed: %s", key, exc)
            return CaptionResult(error=str(exc))
        return CaptionResult(captions=tuple(texts))

    # -- the captioner interface -----------------------------------------------------------
    def _check(self, n: int) -> None:
        if n < 1:
            raise InputError(f"n must be >= 1; got {n}")
        if n > 1 and self.config.temperature == 0:
            raise InputError(
                f"n={n} captions per image need sampling: greedy decoding (temperature 0) "
                "repeats one caption; set a temperature > 0"
            )

    def caption_batch(
        self, jobs: Sequence[CaptionJob], *, n: int = 1, seed: int = 0
    ) -> list[CaptionResult]:
        """Caption ``jobs`` with up to ``concurrency`` requests in flight; one result each."""
        self._check(n)
        if not jobs:
            return []
        _, pool = self._session()
        futures = [pool.submit(self._one, job, n, seed) for job in jobs]
        return [f.result() for f in futures]


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: fall back to our own back-off


def _parse(reply: Any) -> str:
    """The caption in a chat-completions reply; _Failed when the reply is malformed."""
    try:
        data = reply.json()
    except ValueError:
        raise _Failed(f"not JSON: {_short(reply.text, 80)!r}") from None
    try:
        content = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise _Failed(f"no choices[0].message.content in {_short(str(data), 80)}") from None
    if isinstance(content, list):  # content parts
        content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str):
        raise _Failed(f"content is {type(content).__name__}, not text")
    text = clean_caption(content)
    if not text:
        finish = (data["choices"][0] or {}).get("finish_reason")
        raise _Failed(f"empty caption (finish_reason={finish!r})")
    return text
