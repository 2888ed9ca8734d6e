"""The ``openai`` captioner: any OpenAI-compatible chat-completions server.

Works with vLLM, Ollama, llama.cpp's server, LM Studio and OpenAI itself: each caption is one
``POST {base_url}/chat/completions`` whose user message holds the stream's prompt
(:mod:`groundsynth.caption.prompts`) and, for the ``hybrid`` and ``vision`` streams, the
image as a base64 PNG data URL (``{"type": "image_url", "image_url": {"url":
"data:image/png;base64,..."}}``); the ``text`` stream sends the prompt alone.

Reliability:

- at most ``concurrency`` requests in flight (a thread pool over one ``httpx.Client``);
- every request has a ``timeout`` (seconds, connect and read);
- timeouts, connection errors, HTTP 429 and 5xx and malformed replies (not JSON, no
  ``choices``, empty content) are retried up to ``retries`` times with exponential back-off
  (``backoff × 2^attempt`` seconds, at most ``max_backoff``, times a random factor in
  [0.5, 1]; a ``Retry-After`` header is honoured up to ``max_backoff``); then the image's
  result is a failure naming the last error, and a run records it and retries it next time;
- other 4xx replies fail the image at once (retrying would not help); HTTP 401/403 (key
  rejected) and 404 (wrong URL or model) stop the run with an :class:`InputError`;
- an unreachable server (connection refused, unknown host, connect timeout) stops the run
  with an :class:`InputError` naming ``base_url`` instead of failing image after image:
  as soon as one request has used up its retries failing to connect while the server has
  never answered, or once :data:`UNREACHABLE_AFTER` requests in a row did so after it had
  answered. Requests still in flight then stop at their next attempt, and the captioner
  refuses further requests; none of these images is recorded, so the next run retries them.

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
from groundsynth.caption.prompts import STREAMS, load_template
from groundsynth.errors import InputError

__all__ = ["UNREACHABLE_AFTER", "OpenAICaptioner", "OpenAIConfig", "image_data_url"]

logger = logging.getLogger(__name__)

_RETRY_STATUS = frozenset({408, 409, 425, 429})
_FATAL_STATUS = {401: "the API key was rejected", 403: "access denied", 404: "not found"}

#: Requests in a row that used up their retries failing to connect, after the server had
#: answered once, that stop the run (before it ever answered, the first one does).
UNREACHABLE_AFTER = 3


@dataclass(frozen=True)
class OpenAIConfig:
    """Settings of the ``openai`` captioner (no secrets: the key stays in the environment)."""

    model: str
    stream: str = "hybrid"
    base_url: str = "http://127.0.0.1:8000/v1"
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

    def __post_init__(self) -> None:
        if not self.model.strip():
            raise InputError("the openai captioner needs a model name (e.g. qwen3-vl-8b)")
        if self.stream not in STREAMS:
            raise InputError(f"unknown stream {self.stream!r}; valid streams: {', '.join(STREAMS)}")
        if not self.base_url.startswith(("http://", "https://")):
            raise InputError(f"base_url must start with http:// or https://; got {self.base_url!r}")
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
        if not 0.0 <= self.temperature <= 2.0:
            raise InputError(f"temperature must be in [0, 2]; got {self.temperature}")

    @property
    def url(self) -> str:
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
        self._answered = False  # the server has sent an HTTP reply at least once
        self._unreachable_run = 0  # requests in a row that could not connect at all
        self._unreachable: str | None = None  # set: the run-stopping error message

    def __repr__(self) -> str:  # never shows the key
        c = self.config
        return f"OpenAICaptioner(model={c.model!r}, stream={c.stream!r}, base_url={c.base_url!r})"

    @property
    def needs_image(self) -> bool:
        return self.config.stream != "text"

    def describe(self) -> dict[str, Any]:
        """Settings for run records (the key's variable name, never the key)."""
        return {"backend": self.name, **asdict(self.config), "prompt_source": self._template.source}

    # -- plumbing --------------------------------------------------------------------------
    def _session(self) -> tuple[Any, ThreadPoolExecutor]:
        with self._lock:
            if self._client is None:
                c = self.config
                limits = self._httpx.Limits(
                    max_connections=c.concurrency, max_keepalive_connections=c.concurrency
                )
                self._client = self._httpx.Client(
                    timeout=self._httpx.Timeout(c.timeout), limits=limits
                )
                self._pool = ThreadPoolExecutor(c.concurrency, thread_name_prefix="openai-cap")
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

    def _stop_if_unreachable(self) -> None:
        if self._unreachable is not None:
            raise InputError(self._unreachable)

    def _could_not_connect(self, last: str, tries: int) -> None:
        """Count a request that never connected; stop the run when the server looks down."""
        c = self.config
        with self._lock:
            self._unreachable_run += 1
            if self._answered and self._unreachable_run < UNREACHABLE_AFTER:
                return
            if self._unreachable is None:
                attempts = f"{tries} attempt{'s' * (tries > 1)}"
                what = (
                    f"{self._unreachable_run} requests in a row failed to connect, {attempts} each"
                    if self._answered
                    else f"no connection in {attempts}"
                )
                self._unreachable = (
                    f"{c.base_url}: cannot reach the server ({what}; last: {last}); check "
                    f"--base-url and that the server is running. Images not captioned yet are "
                    f"retried by the next run"
                )
        self._stop_if_unreachable()

    def _post(self, body: dict[str, Any]) -> str:
        """One caption: the request with retries; raises _Failed or a run-stopping error."""
        client, _ = self._session()
        c, httpx = self.config, self._httpx
        last, retry_after, connected = "", None, False
        for attempt in range(c.retries + 1):
            self._stop_if_unreachable()
            if attempt:
                self._sleep(attempt, retry_after)
                retry_after = None
                self._stop_if_unreachable()
            try:
                reply = client.post(c.url, json=body, headers=self._headers)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                last = f"connection failed ({type(exc).__name__}: {exc})"
                continue
            except httpx.TimeoutException:
                last, connected = f"timed out after {c.timeout:g} s", True
                continue
            except httpx.TransportError as exc:
                last, connected = f"connection error ({type(exc).__name__}: {exc})", True
                continue
            with self._lock:
                self._answered, self._unreachable_run, connected = True, 0, True
            status = reply.status_code
            if status in _FATAL_STATUS:
                raise InputError(
                    f"{c.url}: HTTP {status} ({_FATAL_STATUS[status]}): "
                    + (
                        f"check the key in ${c.api_key_env}"
                        if status in (401, 403)
                        else f"check --base-url and that the server serves model {c.model!r}"
                    )
                    + f"; server said: {_short(reply.text)}"
                )
            if status in _RETRY_STATUS or status >= 500:
                last = f"HTTP {status}: {_short(reply.text)}"
                retry_after = _retry_after(reply.headers.get("retry-after"))
                continue
            if status >= 400:
                raise _Failed(f"HTTP {status}: {_short(reply.text)}")
            try:
                return _parse(reply)
            except _Failed as exc:
                last = f"malformed reply ({exc})"
                continue
        tries = c.retries + 1
        if not connected:
            self._could_not_connect(last, tries)
        raise _Failed(f"{last} (gave up after {tries} attempt{'s' * (tries > 1)})")

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
