"""Executors: where the per-image stages run their chunks -- in this process, or on Ray.

A stage that works chunk by chunk (``generate``, ``pseudo-label``, ``caption``, the image
pass of ``evaluate synthetic``, CLIPScore) hands its chunks to an :class:`Executor` as tasks
and gets ``(task, result)`` pairs back *as tasks finish*, in any order. The stage's driver
(this process) records each result as it arrives -- through the same journals and atomic
writes as a local run -- so results never depend on the order in which tasks finish, a run
started with one executor resumes with the other, and the outputs are byte-identical
whichever ran the work.

- :class:`LocalExecutor` (``--executor local``, the default) runs each task here, in order.
- :class:`~groundsynth.process_pool.ProcessExecutor` (``executor="processes"``; the
  benchmarks and the transfer experiment, not the per-image stages) runs each task in a pool
  of worker processes on this machine (see :mod:`groundsynth.process_pool`).
- :class:`RayExecutor` (``--executor ray``) runs each task as a Ray task, with ``num_cpus`` /
  ``num_gpus`` (fractions allowed: ``0.25`` puts four tasks on a GPU) per task, at most
  ``max_in_flight`` submitted at a time. ``address=None`` starts a local Ray cluster for
  the run (its services on 127.0.0.1 only) and stops it afterwards; ``"auto"`` joins the
  cluster started on this machine by ``ray start --head``; ``HOST:PORT`` joins that head
  node and ``ray://HOST:PORT`` goes through Ray Client (``pip install 'ray[client]'``).
  A cluster it joined is left running; a Ray session already open in the process is reused.

On a cluster of several machines, every node needs groundsynth (and the extras the stage
uses) installed in the same Python as the driver's, and the stage's inputs and outputs on a
file system that every node mounts at the same path: workers read images and write files
themselves; only the records are written by the driver. A local cluster needs neither (its
workers run this interpreter on this file system).

Tasks are module-level functions of one argument (pickled by reference); state that is
costly to build (a model) is kept per worker process with :func:`worker_cached`.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from contextlib import suppress
from typing import Any, Protocol, TypeVar

from groundsynth._optional import lazy_import
from groundsynth.errors import GroundsynthError, InputError

__all__ = [
    "EXECUTORS",
    "Executor",
    "LocalExecutor",
    "RayExecutor",
    "TaskError",
    "check_executor_options",
    "make_executor",
    "worker_cached",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: The executors ``make_executor`` knows.
EXECUTORS: tuple[str, ...] = ("local", "processes", "ray")
#: The executors of the per-image stages (which run their chunks here or on Ray).
STAGE_EXECUTORS: tuple[str, ...] = ("local", "ray")
#: Seconds to wait for a Ray head node to accept a connection before giving up.
CONNECT_TIMEOUT = 5.0
#: Seconds to wait for cancelled tasks to stop when an executor is closed early.
CANCEL_WAIT = 10.0
_END = object()


class TaskError(GroundsynthError):
    """A task failed on a worker; the message names the task and carries the worker's error
    (which is also the exception's ``__cause__`` when it could be sent back)."""


class Executor(Protocol):
    """Runs tasks and yields ``(task, result)`` pairs as they finish (see the module doc).

    ``in_process`` tells whether tasks run in this process (so a stage may hand them objects
    it already holds, such as a loaded model) or elsewhere (tasks must carry what they need).
    Use an executor as a context manager: leaving it releases what it started.
    """

    name: str
    in_process: bool

    def map_unordered(
        self, fn: Callable[[T], R], tasks: Iterable[T], *, label: Callable[[T], str] = str
    ) -> Iterator[tuple[T, R]]: ...

    def describe(self) -> dict[str, Any]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Executor: ...

    def __exit__(self, *exc: object) -> None: ...


class LocalExecutor:
    """Runs each task in this process, in the order given; errors propagate unchanged."""

    name = "local"
    in_process = True

    def map_unordered(
        self, fn: Callable[[T], R], tasks: Iterable[T], *, label: Callable[[T], str] = str
    ) -> Iterator[tuple[T, R]]:
        """``(task, fn(task))`` for each task, one after the other (``label`` is unused)."""
        for task in tasks:
            yield task, fn(task)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------------------- addresses
def _host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``HOST:PORT`` / ``ray://HOST:PORT`` / ``[V6]:PORT``; None if not."""
    rest = address.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)


def _check_address(address: str | None) -> None:
    """Raise :class:`InputError` naming ``address`` unless it reads as a Ray address."""
    if address is None or address == "auto":
        return
    if _host_port(address) is None:
        raise InputError(
            f"bad Ray address {address!r}: give auto (the cluster `ray start --head` started "
            "on this machine), HOST:PORT of a head node, or ray://HOST:PORT (Ray Client); "
            "leave it out to start a local cluster"
        )


def _probe(address: str) -> None:
    """Fail fast, naming ``address``, when nothing accepts connections there (Ray itself
    retries for minutes)."""
    host_port = _host_port(address)
    if host_port is None:
        return
    try:
        with socket.create_connection(host_port, timeout=CONNECT_TIMEOUT):
            pass
    except OSError as exc:
        raise InputError(
            f"cannot reach a Ray cluster at {address!r} ({exc}); start one with "
            "`ray start --head` there, check the address, or leave --ray-address out to "
            "start a local cluster"
        ) from None


def check_executor_options(
    executor: str,
    address: str | None,
    num_cpus: float,
    num_gpus: float,
    *,
    allowed: tuple[str, ...] = STAGE_EXECUTORS,
) -> None:
    """Check the executor options a config carries; :class:`InputError` if bad. ``allowed``:
    the executors of that stage (the per-image stages: ``local`` and ``ray``; the benchmarks
    and the experiment: :data:`EXECUTORS`)."""
    if executor not in allowed:
        raise InputError(f"unknown executor {executor!r}; valid executors: {', '.join(allowed)}")
    if address is not None and executor != "ray":
        raise InputError(f"a Ray address ({address!r}) needs the ray executor (--executor ray)")
    _check_address(address)
    if not num_cpus > 0 or not num_gpus >= 0:
        raise InputError(
            f"CPUs per task must be > 0 and GPUs per task >= 0, got {num_cpus} and {num_gpus}"
        )
    if executor == "processes" and num_gpus > 0:
        raise InputError(
            "the processes executor runs on this machine's CPUs; give GPUs to tasks with "
            "--executor ray --ray-gpus N"
        )


# ----------------------------------------------------------------------------- Ray
class RayExecutor:
    """Runs tasks as Ray tasks (see the module docstring).

    Args:
        address: ``None`` (start a local cluster), ``"auto"``, ``HOST:PORT`` or
            ``ray://HOST:PORT``.
        num_cpus: CPUs reserved per task.
        num_gpus: GPUs reserved per task (a fraction shares a GPU between tasks).
        max_in_flight: tasks submitted and not yet collected (default: twice as many as
            the cluster can run at once), which bounds the results held in memory.
        local_cpus: CPUs of a local cluster it starts (default: all of this machine's).
        init_options: more keyword arguments for ``ray.init`` (e.g. ``object_store_memory``).
    """

    name = "ray"
    in_process = False

    def __init__(
        self,
        address: str | None = None,
        num_cpus: float = 1.0,
        num_gpus: float = 0.0,
        max_in_flight: int | None = None,
        *,
        local_cpus: int | None = None,
        init_options: Mapping[str, Any] | None = None,
    ) -> None:
        check_executor_options("ray", address, num_cpus, num_gpus, allowed=EXECUTORS)
        if max_in_flight is not None and max_in_flight < 1:
            raise InputError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self.address = address
        self.num_cpus = float(num_cpus)
        self.num_gpus = float(num_gpus)
        self.max_in_flight = max_in_flight
        self.local_cpus = local_cpus
        self.init_options = dict(init_options or {})
        self._ray: Any = None
        self._owner = False  # whether close() must call ray.shutdown()
        self._pending: dict[Any, Any] = {}

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> RayExecutor:
        """Join or start the cluster (idempotent); returns ``self``."""
        if self._ray is not None:
            return self
        if self.address not in (None, "auto"):
            _probe(self.address)
        ray = lazy_import("ray")
        if ray.is_initialized():
            log.info("using the Ray session already open in this process")
        elif self.address is None:
            _start_local(ray, self.local_cpus, self.init_options)
            self._owner = True
        else:
            try:
                ray.init(address=self.address, log_to_driver=False, **self.init_options)
            except ConnectionError as exc:
                raise InputError(
                    f"cannot join the Ray cluster at {self.address!r} ({exc}); start one with "
                    "`ray start --head`, or leave --ray-address out to start a local cluster"
                ) from None
            self._owner = True
        self._ray = ray
        try:
            self._check_resources()
        except BaseException:
            self.close()  # a cluster started here for nothing stops again
            raise
        return self

    def _check_resources(self) -> None:
        have = self._ray.cluster_resources()
        cpus, gpus = float(have.get("CPU", 0)), float(have.get("GPU", 0))
        if self.num_gpus > gpus or self.num_cpus > cpus:
            message = (
                f"each task asks for {self.num_cpus:g} CPU(s) and {self.num_gpus:g} GPU(s) but "
                f"the Ray cluster has {cpus:g} CPU(s) and {gpus:g} GPU(s) in all"
            )
            if self.address is None:  # a cluster we started cannot grow
                raise InputError(message + "; lower --ray-cpus / --ray-gpus")
            log.warning("%s: tasks wait until the cluster grows", message)
        slots = cpus / self.num_cpus
        if self.num_gpus > 0:
            slots = min(slots, gpus / self.num_gpus)
        if self.max_in_flight is None:
            self.max_in_flight = max(1, int(2 * slots))

    def close(self) -> None:
        """Cancel tasks still running, then leave the cluster (stopping it if started here)."""
        if self._ray is None:
            return
        self._cancel()
        if self._owner:
            self._ray.shutdown()
        self._ray, self._owner = None, False

    def _cancel(self) -> None:
        refs = list(self._pending)
        self._pending.clear()
        if not refs:
            return
        for ref in refs:
            with suppress(Exception):  # already finished or lost: nothing left to stop
                self._ray.cancel(ref)
        # wait until they stopped, so none writes a file after the run returned
        self._ray.wait(refs, num_returns=len(refs), timeout=CANCEL_WAIT)

    def __enter__(self) -> RayExecutor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "address": self.address,
            "task_cpus": self.num_cpus,
            "task_gpus": self.num_gpus,
            "max_in_flight": self.max_in_flight,
        }

    # -- work ------------------------------------------------------------------------------
    def map_unordered(
        self, fn: Callable[[T], R], tasks: Iterable[T], *, label: Callable[[T], str] = str
    ) -> Iterator[tuple[T, R]]:
        """Run ``fn(task)`` for each task on the cluster; yield ``(task, result)`` as each
        finishes. After a task fails no more are submitted; those in flight are collected
        (and yielded when they succeed), then :class:`TaskError` names the first failure
        with ``label(task)``."""
        self.start()
        ray = self._ray
        errors = lazy_import("ray.exceptions")
        remote = ray.remote(
            num_cpus=self.num_cpus,
            num_gpus=self.num_gpus,
            max_calls=0,  # keep workers (and what they cached) between tasks, GPU ones too
        )(fn)
        pending = self._pending
        todo = iter(tasks)
        failure: TaskError | None = None
        limit = int(self.max_in_flight or 1)

        def submit() -> None:
            while failure is None and len(pending) < limit:
                task = next(todo, _END)
                if task is _END:
                    return
                pending[remote.remote(task)] = task

        submit()
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            task = pending.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except errors.RayError as exc:
                failure = failure or _task_error(label(task), exc)
                continue
            submit()  # keep the cluster busy while the caller records this result
            yield task, result
        if failure is not None:
            raise failure


def _task_error(what: str, exc: Exception) -> TaskError:
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        error = TaskError(f"{what} failed on a Ray worker: {type(cause).__name__}: {cause}")
        error.__cause__ = cause
        return error
    return TaskError(f"{what} failed on a Ray worker: {type(exc).__name__}: {exc}")


def _start_local(ray: Any, cpus: int | None, options: Mapping[str, Any]) -> None:
    """Start a single-machine cluster whose services listen on 127.0.0.1 only.

    Ray turns ``127.0.0.1`` into this machine's outward address unless its single-machine
    mode is on (``ray_constants.ENABLE_RAY_CLUSTER``, what ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
    sets at import); it is switched on for the start only.
    """
    kwargs: dict[str, Any] = {
        "num_cpus": cpus,
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.WARNING,
        "_node_ip_address": "127.0.0.1",
        **options,
    }
    try:
        constants = importlib.import_module("ray._private.ray_constants")
        before = constants.ENABLE_RAY_CLUSTER
    except (ImportError, AttributeError):  # another Ray layout: start it as Ray decides
        log.warning("cannot keep the local Ray cluster on 127.0.0.1 with this Ray version")
        ray.init(**kwargs)
        return
    constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(**kwargs)
    finally:
        constants.ENABLE_RAY_CLUSTER = before
    log.info("started a local Ray cluster (%s CPUs)", cpus or os.cpu_count())


def make_executor(
    name: str = "local",
    address: str | None = None,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    *,
    max_in_flight: int | None = None,
) -> Executor:
    """The executor called ``name`` (``local``, ``processes`` or ``ray``; see the module
    docstring); ``processes`` inside :func:`groundsynth.process_pool.sharing` is the
    shared pool.

    Nothing starts until it is entered (``with make_executor(...) as ex``). Raises
    :class:`InputError` for an unknown name, a malformed address or bad resources; joining a
    cluster that cannot be reached raises it on entering, naming the address.
    """
    check_executor_options(name, address, num_cpus, num_gpus, allowed=EXECUTORS)
    if name == "local":
        return LocalExecutor()
    if name == "processes":
        from groundsynth.process_pool import shared_or_new

        return shared_or_new(num_cpus, max_in_flight)
    return RayExecutor(address, num_cpus, num_gpus, max_in_flight)


# ----------------------------------------------------------------------------- workers
#: kind -> (identity, value): what :func:`worker_cached` keeps in this process.
_CACHE: dict[str, tuple[Hashable, Any]] = {}


def worker_cached(kind: str, identity: Hashable, build: Callable[[], Any]) -> tuple[Any, bool]:
    """``(value, built)``: the value this process keeps for ``kind`` if it was built for
    ``identity``, else ``build()`` (then kept, replacing -- and closing, when it has
    ``close()`` -- the one of another identity). ``built`` tells whether it was built now.

    Tasks call it to load a model once per worker process, e.g. keyed by a checkpoint's
    path and digest, rather than once per task.
    """
    held = _CACHE.get(kind)
    if held is not None and held[0] == identity:
        return held[1], False
    if held is not None:
        _CACHE.pop(kind)
        close = getattr(held[1], "close", None)
        if callable(close):
            close()
    value = build()
    _CACHE[kind] = (identity, value)
    return value, True
