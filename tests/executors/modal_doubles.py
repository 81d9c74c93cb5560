"""A stand-in for Modal's service at exactly the boundary the modal executor calls.

The executor uses four things from Modal once its App runs: ``function.spawn.aio(request_dict)``,
and on the FunctionCall it returns ``.object_id``, ``.get.aio()`` and ``.cancel.aio(...)``, plus
``FunctionCall.from_id(id)``. :class:`FakeModal` implements those with Modal's documented semantics:

- a spawned call runs whether or not anyone awaits it; cancelling the local ``get`` does not cancel
  it (only ``cancel`` does);
- calls wait for a free container (``max_containers``); a container is created on demand and keeps
  serving until it is lost or retires (``stop_fetching_inputs``);
- an input whose function raises is retried up to ``max_retries`` times (``modal.Retries``), each time on
  a healthy container; after that ``get`` raises the last error;
- an input whose container is lost (preempted before it ran: ``lose_container``; killed while it ran:
  ``crash_container``) is rescheduled outside ``Retries``, until a crash limit (``max_reschedules``,
  standing for Modal's crash-rate threshold) fails it;
- ``from_id`` finds any call this "service" knows, including ones spawned by an earlier process.

The container function is the real one (:class:`ContainerJudge` around a real CPU judge), run in a
worker thread as Modal runs a synchronous method.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
from collections.abc import Callable
from typing import Any


class Aio:
    """A Modal-style method: only the ``.aio`` variant may be used inside an event loop."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.aio = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("blocking Modal call inside the event loop: use .aio")


class ContainerLost(Exception):
    """The fake's infrastructure fault: the container was preempted or died under the input."""


class ContainerDied(BaseException):
    """The container's process dies in the middle of an input (nothing in it runs after this)."""


class _Dying:
    """A judge whose container dies while it judges."""

    def __init__(self, rid: str, judge: Any) -> None:
        self.rid, self.judge = rid, judge  # the real one: its processes are cleaned up with the container

    def evaluate(self, req: Any) -> Any:
        raise ContainerDied(f"container killed while judging {self.rid}")

    def close(self) -> None:
        self.judge.close()


class CallCancelled(Exception):
    """What ``get`` raises for a cancelled call."""


class CallNotFound(Exception):
    """What ``get`` raises for an id the service does not know (expired, or its app was stopped)."""


class FakeCall:
    def __init__(self, call_id: str, task: asyncio.Task[Any] | None, service: FakeModal) -> None:
        self.object_id = call_id
        self._task = task
        self._service = service
        self.get = Aio(self._get)
        self.cancel = Aio(self._cancel)

    async def _get(self, timeout: float | None = None) -> Any:
        if self._task is None:
            raise CallNotFound(f"no function call {self.object_id}")
        try:
            # shielded: a client that stops waiting does not stop the call
            return await asyncio.shield(self._task)
        except asyncio.CancelledError:
            if self._task.cancelled():
                raise CallCancelled(f"{self.object_id} was cancelled") from None
            raise

    async def _cancel(self, terminate_containers: bool = False) -> None:
        self._service.cancelled.append((self.object_id, terminate_containers))
        if self._task is not None:
            self._task.cancel()


class FakeModal:
    def __init__(self, container_factory: Callable[[Callable[[], None]], Any], *, max_containers: int = 2,
                 max_retries: int = 2, delays: dict[str, float] | None = None,
                 lose_container: dict[str, int] | None = None, crash_container: dict[str, int] | None = None,
                 max_reschedules: int = 6) -> None:
        self.container_factory = container_factory
        self.max_containers = max_containers
        self.max_retries = max_retries
        self.delays = dict(delays or {})  # request id -> seconds queued before it runs (a cold start, say)
        self.lose_container = dict(lose_container or {})  # request id -> attempts that lose their container
        self.crash_container = dict(crash_container or {})  # request id -> attempts whose container dies mid-way
        self.max_reschedules = max_reschedules
        self.reschedules: collections.Counter[str] = collections.Counter()
        self.calls: dict[str, FakeCall] = {}
        self.spawned: list[str] = []  # request ids, in spawn order
        self.finished: list[str] = []  # request ids, in completion order
        self.attempts: collections.Counter[str] = collections.Counter()
        self.errors: list[tuple[str, str]] = []
        self.cancelled: list[tuple[str, bool]] = []
        self.from_id_calls: list[str] = []
        self.containers_made = 0
        self.retired = 0
        self._idle: list[Any] = []
        self._all: list[Any] = []
        self._slots: asyncio.Semaphore | None = None
        self._ids = itertools.count(1)
        self.spawn = Aio(self._spawn)

    # -- what the executor calls ----------------------------------------------------------------
    async def _spawn(self, request: dict[str, Any]) -> FakeCall:
        call_id = f"fc-{next(self._ids):04d}"
        self.spawned.append(request["request_id"])
        call = FakeCall(call_id, asyncio.ensure_future(self._run(request)), self)
        self.calls[call_id] = call
        return call

    def from_id(self, call_id: str) -> FakeCall:
        self.from_id_calls.append(call_id)
        return self.calls.get(call_id) or FakeCall(call_id, None, self)

    # -- the service ----------------------------------------------------------------------------
    async def _run(self, request: dict[str, Any]) -> Any:
        rid = request["request_id"]
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_containers)
        await asyncio.sleep(self.delays.get(rid, 0.0))
        last: BaseException | None = None
        failures = 0
        while failures <= self.max_retries:
            self.attempts[rid] += 1
            async with self._slots:
                container = self._idle.pop() if self._idle else self._new_container()
                lost = self.lose_container.get(rid, 0) >= self.attempts[rid]
                if self.crash_container.get(rid, 0) >= self.attempts[rid]:
                    container.judge = _Dying(rid, container.judge)
                try:
                    if lost:
                        raise ContainerDied(f"container lost under {rid} (attempt {self.attempts[rid]})")
                    result = await asyncio.to_thread(container.evaluate, request)
                except ContainerDied as exc:  # rescheduled outside Retries, up to the crash limit
                    self.errors.append((rid, f"ContainerLost: {exc}"))
                    self._drop(container, dead=True)
                    self.reschedules[rid] += 1
                    if self.reschedules[rid] > self.max_reschedules:
                        raise ContainerLost(f"{exc}; Modal stopped rescheduling the input") from None
                    continue
                except Exception as exc:  # noqa: BLE001 - Modal retries whatever the function raised
                    last = exc
                    failures += 1
                    self.errors.append((rid, f"{type(exc).__name__}: {exc}"))
                    self._drop(container)
                    continue
                if getattr(container, "_fake_retired", False):
                    self._drop(container)
                else:
                    self._idle.append(container)
                self.finished.append(rid)
                return result
        assert last is not None
        raise last

    def _new_container(self) -> Any:
        self.containers_made += 1
        holder: dict[str, Any] = {}

        def retire() -> None:  # what modal.experimental.stop_fetching_inputs does to this container
            holder["container"]._fake_retired = True
            self.retired += 1

        container = self.container_factory(retire)
        holder["container"] = container
        self._all.append(container)
        return container

    def _drop(self, container: Any, dead: bool = False) -> None:
        if container in self._idle:
            self._idle.remove(container)
        if dead and container in self._all:  # a dead container's processes are gone
            self._all.remove(container)
            close = getattr(container, "close", None)
            if close is not None:
                close()

    def close(self) -> None:
        for container in self._all:
            close = getattr(container, "close", None)
            if close is not None:
                close()
        self._all.clear()
        self._idle.clear()
