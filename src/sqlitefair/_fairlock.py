"""FIFO-fair semaphore and lock for real threads, with direct hand-off.

Why not ``threading.Lock`` / ``Semaphore`` / ``queue.Queue``: they let a
newcomer grab a freed permit before a thread that has been waiting for a
second, so under contention some callers wait far longer than others.

How this one is fair (after anyio's ``Lock`` and trio's ``ParkingLot``):

* **No barging**: the fast path is taken only when nobody is queued.
* **Direct hand-off**: ``release()`` makes the oldest waiter the holder
  *before* waking it, so a permit is never free between two holders.
* **Races resolved by state**: a waiter whose wait ends (timeout,
  ``KeyboardInterrupt``) re-checks under the mutex whether it was granted a
  permit in the meantime; if it was, a timed-out waiter keeps it and an
  interrupted one passes it on.
* **Cancellable from another thread**: ``acquire(cancel=scope)`` and
  ``scope.cancel()`` take the waiter out of the queue and wake it with
  :class:`WaitCancelled` (unless it was granted first: then it keeps the
  permit), so a waiter nobody wants any more does not take its turn.

One small ``threading.Lock`` (the mutex) guards the queue and the holders and
is never held while blocking; each waiter parks on its own pre-acquired
``_thread`` lock, which blocks in C with the GIL released.  Nothing relies on
the GIL, so it is correct on free-threaded builds.
"""

from __future__ import annotations

import _thread
import threading
from _thread import get_ident
from collections import OrderedDict
from dataclasses import dataclass, field
from time import monotonic
from typing import Any

__all__ = (
    "FairSemaphore",
    "FairLock",
    "Permit",
    "LockStatistics",
    "WouldBlock",
    "LockTimeout",
    "CancelScope",
    "WaitCancelled",
)


class WouldBlock(Exception):
    """``acquire_nowait()`` could not take a permit without waiting."""


class LockTimeout(Exception):
    """``acquire(timeout)`` gave up; carries how long it waited and the queue it saw."""

    def __init__(self, waited: float, statistics: LockStatistics) -> None:
        super().__init__(f"no permit after {waited:.3f} s ({statistics.waiting} waiting)")
        self.waited = waited
        self.statistics = statistics


class WaitCancelled(Exception):
    """``acquire(cancel=scope)`` gave up because ``scope.cancel()`` was called; no permit is held."""


class CancelScope:
    """Lets one thread cancel another thread's ``acquire(cancel=scope)``.

    ``cancel()`` before the acquire makes it fail at once; during the wait it
    takes the waiter out of the queue and wakes it; after a grant it does
    nothing (the holder keeps its permit and must release it).  One scope is
    meant for one acquire.
    """

    __slots__ = ("_lock", "_cancelled", "_target")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled = False
        self._target: tuple[FairSemaphore, _Waiter] | None = None

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            target = self._target
        if target is not None:  # taken outside our lock: the semaphore's mutex is always taken first
            semaphore, waiter = target
            semaphore._cancel_waiter(waiter)

    def _attach_locked(self, semaphore: FairSemaphore, waiter: _Waiter) -> None:
        """Called under ``semaphore``'s mutex as ``waiter`` joins its queue."""
        with self._lock:
            if self._cancelled:
                raise WaitCancelled("the wait was cancelled before it began")
            self._target = (semaphore, waiter)


class Permit:
    """One held permit: which thread was granted it and when (``time.monotonic()``).

    Permits compare by identity, so the same thread may hold several.  (A plain
    slotted class made on every acquire, on the pool's hot path: the thread's
    name is looked up only when someone asks for it.)
    """

    __slots__ = ("thread_ident", "since", "_name")

    def __init__(self, thread_ident: int, since: float, name: str | None = None) -> None:
        self.thread_ident = thread_ident
        self.since = since
        self._name = name

    @property
    def thread_name(self) -> str:
        if self._name is None:
            thread = next((t for t in threading.enumerate() if t.ident == self.thread_ident), None)
            self._name = thread.name if thread is not None else f"<exited thread {self.thread_ident}>"
        return self._name

    def __repr__(self) -> str:
        return f"Permit(thread_ident={self.thread_ident}, thread_name={self.thread_name!r}, since={self.since})"


@dataclass(frozen=True)
class LockStatistics:
    """A consistent snapshot of a fair semaphore, taken under its mutex."""

    capacity: int
    held: int
    waiting: int
    holders: tuple[Permit, ...] = field(default=())
    oldest_waiter_since: float | None = None


class _Waiter:
    __slots__ = ("parker", "permit", "ident", "name", "since", "cancelled")

    def __init__(self) -> None:
        self.parker = _thread.allocate_lock()
        self.parker.acquire()
        self.permit: Any = None  # what it is handed: a Permit (FairSemaphore) or a Slot (FairSlots)
        self.cancelled = False
        thread = threading.current_thread()
        self.ident = thread.ident or 0
        self.name = thread.name
        self.since = monotonic()


class FairSemaphore:
    """A counting semaphore that grants permits in strict arrival order."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self._capacity = capacity
        self._mutex = threading.Lock()
        self._holders: dict[Permit, None] = {}
        self._waiters: OrderedDict[_Waiter, None] = OrderedDict()

    @property
    def capacity(self) -> int:
        return self._capacity

    def acquire_nowait(self) -> Permit:
        """Take a permit if one is free and nobody is queued, else raise :class:`WouldBlock`."""
        with self._mutex:
            if self._waiters or len(self._holders) >= self._capacity:
                raise WouldBlock
            permit = Permit(get_ident(), monotonic())
            self._holders[permit] = None
            return permit

    def acquire(self, timeout: float | None = None, *, cancel: CancelScope | None = None) -> Permit:
        """Wait in FIFO order for a permit; ``timeout=None`` waits forever.

        Raises :class:`LockTimeout` when ``timeout`` seconds pass first, and
        :class:`WaitCancelled` when ``cancel`` is cancelled first.
        """
        if cancel is not None and cancel.cancelled:
            raise WaitCancelled("the wait was cancelled before it began")
        with self._mutex:
            if not self._waiters and len(self._holders) < self._capacity:
                permit = Permit(get_ident(), monotonic())
                self._holders[permit] = None
                return permit
            waiter = _Waiter()
            if cancel is not None:
                cancel._attach_locked(self, waiter)
            self._waiters[waiter] = None
        try:
            if timeout is None:
                woken = waiter.parker.acquire()
            else:
                woken = waiter.parker.acquire(True, max(timeout, 0.0))
        except BaseException:
            # Interrupted (KeyboardInterrupt, a signal handler's exception):
            # never leave a granted permit stranded, never leave a ghost waiter.
            with self._mutex:
                if waiter.permit is not None:
                    self._release_locked(waiter.permit)
                elif not waiter.cancelled:
                    del self._waiters[waiter]
            raise
        if woken and waiter.permit is not None:
            return waiter.permit
        with self._mutex:
            # A release() may have granted us the permit just as the wait timed out.
            if waiter.permit is not None:
                return waiter.permit
            if waiter.cancelled:  # cancel() already took us out of the queue
                raise WaitCancelled(f"the wait was cancelled after {monotonic() - waiter.since:.3f} s")
            del self._waiters[waiter]
            stats = self._statistics_locked()
        raise LockTimeout(monotonic() - waiter.since, stats)

    def _cancel_waiter(self, waiter: _Waiter) -> None:
        """Take ``waiter`` out of the queue and wake it, unless it was granted a permit already."""
        with self._mutex:
            if waiter.permit is None and not waiter.cancelled and waiter in self._waiters:
                del self._waiters[waiter]
                waiter.cancelled = True
                waiter.parker.release()

    def release(self, permit: Permit) -> None:
        """Return ``permit``; the oldest waiter, if any, becomes its next holder."""
        with self._mutex:
            self._release_locked(permit)

    def _release_locked(self, permit: Permit) -> None:
        try:
            del self._holders[permit]
        except KeyError:
            raise RuntimeError("release() of a permit that is not held") from None
        if self._waiters:
            waiter, _ = self._waiters.popitem(last=False)
            granted = Permit(waiter.ident, monotonic(), waiter.name)
            self._holders[granted] = None
            waiter.permit = granted
            waiter.parker.release()

    def queued_or_holding(self, thread_ident: int) -> bool:
        """Whether thread ``thread_ident`` waits in the queue or holds a permit.

        Lets a caller that starts waiters on other threads (the asyncio facade)
        wait until one has joined the queue before starting the next.
        """
        with self._mutex:
            return any(w.ident == thread_ident for w in self._waiters) or any(
                p.thread_ident == thread_ident for p in self._holders
            )

    def held_by_current_thread(self) -> bool:
        """Whether the calling thread holds at least one permit."""
        me = threading.get_ident()
        with self._mutex:
            return any(p.thread_ident == me for p in self._holders)

    def statistics(self) -> LockStatistics:
        with self._mutex:
            return self._statistics_locked()

    def _statistics_locked(self) -> LockStatistics:
        oldest = next(iter(self._waiters)).since if self._waiters else None
        return LockStatistics(
            capacity=self._capacity,
            held=len(self._holders),
            waiting=len(self._waiters),
            holders=tuple(self._holders),
            oldest_waiter_since=oldest,
        )

    def __repr__(self) -> str:
        s = self.statistics()
        return f"<{type(self).__name__} held={s.held}/{s.capacity} waiting={s.waiting}>"


class FairLock(FairSemaphore):
    """A FIFO-fair mutual-exclusion lock (a :class:`FairSemaphore` of one)."""

    def __init__(self) -> None:
        super().__init__(1)

    @property
    def owner(self) -> Permit | None:
        """The current holder's permit, or ``None`` when free."""
        with self._mutex:
            return next(iter(self._holders), None)
