"""The servers of the ``openai`` captioner: spreading requests over them, and failover.

:class:`ServerPool` holds one :class:`Server` per base URL with its load (requests in
flight, at most ``concurrency`` each) and its health. Each try of a request asks
:meth:`ServerPool.acquire` for a server: the least-loaded live one with a free slot, ties
broken round-robin, so a slower server (whose requests stay in flight longer) gets fewer
requests. The servers are meant to serve one model with the same settings: a request is
the same (seed included) whichever server gets it.

Health. A server that sent an HTTP reply has *answered*. A request that tried a server and
never got a connection to it (refused, unknown host, connect timeout) is a *miss* of that
server, counted when the request ends (:meth:`ServerPool.settle`). A server is marked dead
after its first miss while it has never answered, or after :data:`UNREACHABLE_AFTER` misses
in a row once it has (a reply resets the count). A dead server gets no requests and is
named in one warning; after ``probe_after`` seconds one request at a time tries it again
(a *probe*): a reply brings it back, a miss starts the wait again. When the last live server
dies the pool is *down*: :meth:`ServerPool.check` raises an :class:`InputError` naming every
server, for good (the run stops; its next run retries what was not captioned).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from groundsynth.errors import InputError

__all__ = [
    "DEFAULT_BASE_URL",
    "UNREACHABLE_AFTER",
    "Server",
    "ServerPool",
    "public_url",
    "server_urls",
]

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"

#: Requests in a row that failed to connect to a server, after it had answered once, that
#: mark it dead (before it ever answered, the first one does).
UNREACHABLE_AFTER = 3


def public_url(url: str) -> str:
    """``url`` for logs and records: a ``user:password@`` part is masked."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def server_urls(base_url: str, base_urls: Sequence[str]) -> tuple[str, ...]:
    """The servers of a configuration: ``base_urls`` when given, else ``base_url`` alone.

    Raises :class:`InputError` for a URL that is not http(s), a server listed twice
    (trailing ``/`` ignored) or a ``base_url`` other than the default that is not one of
    ``base_urls`` (which of the two was meant is unclear).
    """
    if isinstance(base_urls, str):
        raise InputError(f"base_urls must be a list of URLs, not the string {base_urls!r}")
    urls = tuple(u.strip() for u in base_urls) or (base_url.strip(),)
    seen: dict[str, str] = {}
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise InputError(
                f"a server's base URL must start with http:// or https://; got {public_url(url)!r}"
            )
        key = url.rstrip("/")
        if key in seen:
            raise InputError(f"server {public_url(url)} is listed twice; list each server once")
        seen[key] = url
    if base_urls and base_url.rstrip("/") not in seen and base_url != DEFAULT_BASE_URL:
        raise InputError(
            f"base_url {public_url(base_url)} is not one of base_urls "
            f"({', '.join(map(public_url, urls))}); give the servers as base_urls alone"
        )
    return urls


@dataclass(eq=False)
class Server:
    """One server of a pool: its URLs, load and health (changed under the pool's lock)."""

    index: int
    base_url: str
    in_flight: int = 0
    replies: int = 0  # HTTP replies received (any status)
    answered: bool = False
    misses: int = 0  # requests in a row that could not connect to it
    dead: bool = False
    dead_at: float = 0.0
    probing: bool = False  # dead, and one request is trying it again
    prober: int | None = None  # the thread of that request
    warned: bool = False
    reason: str = ""  # why it was marked dead

    @property
    def chat_url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"

    @property
    def name(self) -> str:
        return public_url(self.base_url)


class ServerPool:
    """Load and health of the servers of one captioner (see the module doc); thread-safe."""

    def __init__(
        self,
        urls: Sequence[str],
        concurrency: int,
        *,
        probe_after: float | None = 60.0,
        dead_after: int = UNREACHABLE_AFTER,
    ) -> None:
        if not urls:
            raise InputError("a server pool needs at least one base URL")
        self.servers = tuple(Server(i, u) for i, u in enumerate(urls))
        self.concurrency = concurrency
        self.probe_after = probe_after
        self.dead_after = dead_after
        self.down: str | None = None  # set: the run-stopping message
        self._cursor = 0  # round-robin start among equally loaded servers
        self._cond = threading.Condition()

    @property
    def slots(self) -> int:
        """Requests in flight at most: servers × concurrency."""
        return len(self.servers) * self.concurrency

    def check(self) -> None:
        """Raise the run-stopping :class:`InputError` once every server is dead."""
        if self.down is not None:
            raise InputError(self.down)

    # -- choosing a server -------------------------------------------------------------------
    def _probe_due(self, server: Server, now: float) -> bool:
        return (
            server.dead
            and not server.probing
            and self.probe_after is not None
            and now - server.dead_at >= self.probe_after
        )

    def acquire(self, exclude: Collection[Server] = ()) -> Server | None:
        """A slot on the least-loaded live server not in ``exclude`` (waiting for one to
        free up); None when every live server is in ``exclude``. Pair with :meth:`release`."""
        with self._cond:
            while True:
                self.check()
                now = time.monotonic()
                usable = [
                    s
                    for s in self.servers
                    if s not in exclude and (not s.dead or self._probe_due(s, now))
                ]
                if not usable:
                    return None
                free = [s for s in usable if s.dead or s.in_flight < self.concurrency]
                if free:
                    n = len(self.servers)
                    best = min(free, key=lambda s: (s.in_flight, (s.index - self._cursor) % n))
                    self._cursor = (best.index + 1) % n
                    best.in_flight += 1
                    if best.dead:
                        best.probing, best.prober = True, threading.get_ident()
                        logger.info("%s: trying the unreachable server again", best.name)
                    return best
                self._cond.wait(self._next_probe_in(now))

    def _next_probe_in(self, now: float) -> float | None:
        if self.probe_after is None:
            return None
        waits = [s.dead_at + self.probe_after - now for s in self.servers if s.dead]
        return max(0.01, min(waits)) if waits else None

    def release(self, server: Server) -> None:
        """Give back the slot :meth:`acquire` returned."""
        with self._cond:
            server.in_flight -= 1
            self._cond.notify_all()

    # -- health ------------------------------------------------------------------------------
    def answered(self, server: Server) -> None:
        """``server`` sent an HTTP reply: it is alive (a dead one comes back)."""
        with self._cond:
            server.replies += 1
            server.answered, server.misses = True, 0
            if server.dead and self.down is None:
                server.dead = server.probing = False
                logger.info("%s: the server answers again; sending it requests", server.name)
                self._cond.notify_all()

    def settle(self, server: Server, *, connected: bool, last: str, tries: int) -> None:
        """Record how a finished request fared on ``server``: ``connected`` at least once in
        ``tries`` tries, or a miss (``last``: its last connection error)."""
        with self._cond:
            if server.probing and server.prober == threading.get_ident():
                # a probe that got no reply: wait again before the next one
                server.probing, server.dead_at = False, time.monotonic()
                logger.debug("%s: still unreachable (%s)", server.name, last or "no reply")
                self._cond.notify_all()
                return
            if connected or server.dead:
                return
            server.misses += 1
            if server.answered and server.misses < self.dead_after:
                return
            attempts = f"{tries} attempt{'s' * (tries > 1)}"
            what = (
                f"{server.misses} requests in a row failed to connect, {attempts} each"
                if server.answered
                else f"no connection in {attempts}"
            )
            self._mark_dead(server, f"{what}; last: {last}")

    def _mark_dead(self, server: Server, reason: str) -> None:
        server.dead, server.dead_at, server.reason = True, time.monotonic(), reason
        self._cond.notify_all()
        alive = [s for s in self.servers if not s.dead]
        if not alive:
            self.down = self._down_message()
            return
        again = (
            f"; trying it again every {self.probe_after:g} s"
            if self.probe_after is not None
            else ""
        )
        log = logger.info if server.warned else logger.warning
        server.warned = True
        log(
            "%s: cannot reach the server (%s); its requests go to the %d other server%s%s",
            server.name,
            reason,
            len(alive),
            "s" * (len(alive) > 1),
            again,
        )

    def _down_message(self) -> str:
        tail = "Images not captioned yet are retried by the next run"
        if len(self.servers) == 1:
            (s,) = self.servers
            return (
                f"{s.name}: cannot reach the server ({s.reason}); check --base-url and that the "
                f"server is running. {tail}"
            )
        each = "; ".join(f"{s.name} ({s.reason})" for s in self.servers)
        return (
            f"cannot reach any of the {len(self.servers)} servers: {each}. Check --base-url "
            f"and that the servers are running. {tail}"
        )

    def summary(self) -> str:
        """Replies per server, for the log: ``http://a/v1: 120, http://b/v1: 3 (dead)``."""
        with self._cond:
            return ", ".join(
                f"{s.name}: {s.replies}" + (" (dead)" if s.dead else "") for s in self.servers
            )
