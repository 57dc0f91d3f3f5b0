"""The FIFO waiting and hand-off core shared by the writer's fair lock and the reader slots.

A thread that cannot take what it wants joins a :class:`WaitQueue` and parks
on a parker of its own (a pre-acquired ``_thread`` lock; on free-threaded
builds a ``SimpleQueue``, see :class:`_QueueParker`), which blocks in C with
the GIL released.  The thread that frees a permit or a slot does not put it back for
anyone to grab: it *hands it over* to the oldest waiter, writing the grant
into the waiter before waking it, so nobody can barge in between.

Invariants, all under the owner's mutex (the queue has no lock of its own;
the semaphore or slot set that owns it passes its mutex in):

* a waiter is in ``_waiters`` exactly while it is neither granted nor
  cancelled nor gone (timed out, interrupted);
* ``waiter.grant`` is written once, by the granting thread, before the wake (a claimed
  waiter's by the holder that claimed it, without the mutex: once claimed, nobody else
  grants or wakes it; see :meth:`WaitQueue.complete`);
* a waiter that stops waiting for any reason re-checks ``grant`` under the
  mutex: a timed-out waiter keeps a grant that raced its timeout, an
  interrupted one gives it back (to the next waiter), so a grant is never
  stranded and never given twice.

Waiting itself is :func:`~sqlitefair._interrupts.interruptible`; the
bookkeeping around it is protected from ``KeyboardInterrupt``.
"""

from __future__ import annotations

import _queue
import _thread
import sysconfig
import threading
from _thread import get_ident
from collections import OrderedDict
from time import monotonic
from typing import Any, Callable, Iterable

from ._interrupts import interruptible, protected

__all__ = ("WaitQueue", "Waiter", "CancelScope", "WaitCancelled", "LockTimeout")


class WaitCancelled(Exception):
    """``acquire(cancel=scope)`` gave up because ``scope.cancel()`` was called; nothing is held."""


class LockTimeout(Exception):
    """``acquire(timeout)`` gave up; carries how long it waited and the queue it saw."""

    def __init__(self, waited: float, statistics: Any) -> None:
        super().__init__(f"no permit after {waited:.3f} s ({statistics.waiting} waiting)")
        self.waited = waited
        self.statistics = statistics


class _QueueParker:
    """A parker that blocks without spinning first: a thread parks in ``get()`` of a SimpleQueue of
    its own, and ``release()`` puts the one token that wakes it.

    Free-threaded builds only: there a ``_thread`` lock is a PyMutex, whose blocking acquire first
    spins with ``sched_yield()`` 40 times (``MAX_SPIN_COUNT`` in CPython's ``Python/lock.c``).  With
    more waiting threads than cores, those spins took over half the CPU time of ``write(fn)`` at 16
    threads on 2 cores (perf, 3.13t) and starved the thread doing the work; a SimpleQueue parks in
    the parking lot at once.  GIL builds do not spin, and keep the lock (measured alike there).
    Same contract as the lock it replaces: at most one ``release()`` per wait; interruptible."""

    __slots__ = ("_queue",)

    def __init__(self) -> None:
        self._queue = _queue.SimpleQueue()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        try:
            self._queue.get(blocking, None if timeout < 0 else timeout)
        except _queue.Empty:
            return False
        return True

    def release(self) -> None:
        self._queue.put(None)


def _locked_lock() -> Any:
    """A parker for GIL builds: a pre-acquired ``_thread`` lock."""
    parker = _thread.allocate_lock()
    parker.acquire()
    return parker


#: Makes a thread's parker: a blocked ``acquire()`` returns after one ``release()`` (or a timeout).
#: Chosen by the build: free-threaded builds' locks spin before they park (see _QueueParker).
_new_parker: Callable[[], Any] = _QueueParker if sysconfig.get_config_var("Py_GIL_DISABLED") else _locked_lock


#: Returned for a waiter nudged and not yet awake: its wake-up is pending already.
WAKE_PENDING: Any = object()


class Waiter:
    """One parked thread: what it was granted, who it is, since when."""

    __slots__ = ("parker", "grant", "ident", "since", "cancelled", "permit", "claimed", "nudged", "competes", "ahead")

    def __init__(self, parker: Any = None) -> None:
        if parker is None:  # a thread that parks (else an event loop's waiter)
            parker = _new_parker()
        #: ``parker.release()`` wakes the waiter: a lock its thread blocks on, or (an event loop's
        #: waiter, which parks no thread) an object whose release() schedules a wake-up on the loop.
        self.parker = parker
        self.grant: Any = None  # a Permit (writer) or a Slot (readers), written by the granting thread
        self.cancelled = False
        self.permit: Any = None  # the object the waiter wants recorded as holder (FairLock), if any
        #: Taken out of the queue by the holder, who does the waiter's work for it (combining):
        #: no timeout applies any more, and its grant comes when the work is done.
        self.claimed = False
        #: May be woken to compete for a freed permit (``nudge_locked``), rather than only handed one:
        #: a thread that runs ``wait`` with ``try_take_locked``; never an event loop's waiter.
        self.competes = False
        self.nudged = False  # woken to compete, and has not looked yet
        self.ahead = 0  # waiters queued before it when it joined (its strict-FIFO wait, in turns)
        self.ident = get_ident()  # (its name is looked up only if a permit's holder is asked for it)
        self.since = monotonic()


class CancelScope:
    """Lets one thread cancel another thread's ``acquire(cancel=scope)``.

    ``cancel()`` before the acquire makes it fail at once; during the wait it
    takes the waiter out of the queue and wakes it; after a grant it does
    nothing (the holder keeps what it got and must give it back).  One scope
    is meant for one acquire.
    """

    __slots__ = ("_lock", "_cancelled", "_target")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled = False
        self._target: tuple[WaitQueue, Waiter] | None = None

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            target = self._target
        if target is not None:  # outside our lock: the queue's mutex is always taken first
            queue, waiter = target
            queue.cancel(waiter)

    def _attach_locked(self, queue: WaitQueue, waiter: Waiter) -> None:
        """Called under the queue owner's mutex as ``waiter`` joins it."""
        with self._lock:
            if self._cancelled:
                raise WaitCancelled("the wait was cancelled before it began")
            self._target = (queue, waiter)


@interruptible
def _park(parker: Any, deadline: float | None, recheck: float | None) -> bool:
    """Block until woken, the deadline or the recheck pause; True if woken.  A KeyboardInterrupt lands here."""
    if deadline is None:
        return parker.acquire() if recheck is None else parker.acquire(True, recheck)
    pause = deadline - monotonic()
    if recheck is not None and recheck < pause:
        pause = recheck
    return pause > 0 and parker.acquire(True, pause)


class WaitQueue:
    """Threads waiting in arrival order for grants handed over by other threads."""

    __slots__ = ("_mutex", "_waiters", "count", "_on_leave_locked")

    def __init__(self, mutex: Any, on_leave_locked: Callable[[], None] | None = None) -> None:
        self._mutex = mutex  # the owner's; held around every *_locked call
        #: Called (under the mutex) after a waiter left without a grant (timeout, interrupt,
        #: cancel): an owner that frees permits without handing them over (barging) wakes the next.
        self._on_leave_locked = on_leave_locked
        self._waiters: OrderedDict[Waiter, None] = OrderedDict()
        #: len(_waiters), also read without the mutex on lock-free fast paths.
        self.count = 0

    def __bool__(self) -> bool:
        return bool(self._waiters)

    def __len__(self) -> int:
        return len(self._waiters)

    def oldest_since_locked(self) -> float | None:
        return next(iter(self._waiters)).since if self._waiters else None

    def has_thread_locked(self, ident: int) -> bool:
        return any(w.ident == ident for w in self._waiters)

    def join_locked(self, cancel: CancelScope | None, parker: Any = None, arrived: float | None = None) -> Waiter:
        """Queue the calling thread (raises WaitCancelled, queueing nothing, if ``cancel`` already fired).

        ``arrived``: when it began waiting, if earlier (it waited elsewhere first: a FairLock's
        baton); it then goes ahead of the waiters that arrived after it, so the queue stays in
        arrival order."""
        waiter = Waiter(parker)
        if cancel is not None:
            cancel._attach_locked(self, waiter)
        waiters = self._waiters
        if arrived is not None and arrived < waiter.since:
            waiter.since = arrived
            later = [w for w in waiters if w.since > arrived] if waiters and next(reversed(waiters)).since > arrived else ()
            waiters[waiter] = None
            for w in later:  # (rare, and a few waiters: they stay in their order, behind it)
                waiters.move_to_end(w)
            waiter.ahead = self.count - len(later)
        else:
            waiters[waiter] = None
            waiter.ahead = self.count
        self.count += 1
        return waiter

    def add_locked(self, waiter: Waiter) -> None:
        """Queue ``waiter``, made beforehand by the thread that waits (no cancel scope, joins at the
        back): made outside the mutex, it holds the mutex for less time."""
        self._waiters[waiter] = None
        waiter.ahead = self.count
        self.count += 1

    def leave_locked(self, waiter: Waiter) -> None:
        """Take ``waiter`` out of the queue (nothing if it is not in it): it left without a grant."""
        self._remove_locked(waiter)
        if self._on_leave_locked is not None:
            self._on_leave_locked()

    def _remove_locked(self, waiter: Waiter) -> None:
        if self._waiters.pop(waiter, False) is None:
            self.count -= 1

    @protected
    def hand_over_locked(self, make_grant: Callable[[Waiter], Any]) -> bool:
        """Give the oldest waiter ``make_grant(waiter)`` (None: nothing to give) and wake it."""
        parker = self.pass_on_locked(make_grant)
        if parker is None:
            return False
        if parker is not WAKE_PENDING:
            parker.release()
        return True

    def pass_on_locked(self, make_grant: Callable[[Waiter], Any]) -> Any:
        """:meth:`hand_over_locked` without the wake-up: return None if nothing was handed over,
        else the parker that the caller releases once it has let the mutex go (woken under it, the
        new holder on another core would at once block on it: on a free-threaded build, spinning),
        or ``WAKE_PENDING`` if the waiter's wake-up is pending already."""
        if not self._waiters:
            return None
        waiter = next(iter(self._waiters))
        grant = make_grant(waiter)
        if grant is None:
            return None
        self._remove_locked(waiter)
        waiter.grant = grant
        return self._wake_up_locked(waiter)

    @staticmethod
    def _wake_up_locked(waiter: Waiter) -> Any:
        """What wakes ``waiter``: its parker, to release (once), or ``WAKE_PENDING`` if it was
        nudged and is not yet awake: that wake-up is pending already, and releasing its parker
        twice would raise."""
        if waiter.nudged:
            waiter.nudged = False
            return WAKE_PENDING
        return waiter.parker

    @classmethod
    def _wake_locked(cls, waiter: Waiter) -> None:
        """Wake ``waiter`` now (it then looks at its state)."""
        parker = cls._wake_up_locked(waiter)
        if parker is not WAKE_PENDING:
            parker.release()

    def nudge_locked(self) -> bool:
        """Wake the oldest waiter, if it competes, to try to take what was just freed (it stays at
        the head of the queue if somebody else takes it first); False if it does not compete."""
        if not self._waiters:
            return False
        waiter = next(iter(self._waiters))
        if not waiter.competes:
            return False
        if not waiter.nudged:  # once: its parker is released at most once per look
            waiter.nudged = True
            waiter.parker.release()
        return True

    def oldest_locked(self) -> Waiter | None:
        return next(iter(self._waiters)) if self._waiters else None

    def claim_head_locked(self, kind: type, limit: int = 1) -> list[Waiter]:
        """Take the oldest waiters out of the queue, up to ``limit`` and while each one's permit is a
        ``kind`` (a ``write()`` call), to do their work for them (in order).

        The caller (the holder) later wakes each with :meth:`complete`."""
        claimed: list[Waiter] = []
        waiters = self._waiters
        for waiter in waiters:
            if len(claimed) == limit or not isinstance(waiter.permit, kind):
                break
            waiter.claimed = True
            claimed.append(waiter)
        for waiter in claimed:  # (not while iterating over the queue)
            del waiters[waiter]
        self.count -= len(claimed)
        return claimed

    @staticmethod
    def complete(done: Iterable[tuple[Waiter, Any]]) -> None:
        """Wake each waiter of ``done`` (claimed, its work done) with its grant, what its wait returns.

        No mutex: a claimed waiter is out of the queue, where nothing else wakes it any more, and
        its wait reads the grant after the wake-up.  (Under the mutex, a waiter woken on another
        core would at once block on it: on a free-threaded build, spinning.)  Its parker may be
        released twice: a nudge to compete (``nudge_locked``) may have come just before the
        claim.  If that waiter is not awake yet, a ``_thread`` lock's second release raises and
        is not needed: it wakes, and finds its grant.  A parker released after its waiter
        stopped waiting (interrupted while claimed) wakes nobody."""
        for waiter, grant in done:
            waiter.grant = grant
            try:
                waiter.parker.release()
            except RuntimeError:  # (a _thread lock) released by the nudge, not yet taken: it wakes
                pass

    @protected
    def cancel(self, waiter: Waiter) -> None:
        """Take ``waiter`` out of the queue and wake it, unless it was granted already."""
        with self._mutex:
            if waiter.grant is None and not waiter.cancelled and waiter in self._waiters:
                self.leave_locked(waiter)
                waiter.cancelled = True
                self._wake_locked(waiter)

    @protected
    def wait(
        self,
        waiter: Waiter,
        timeout: float | None,
        *,
        give_back: Callable[[Any], None],
        statistics_locked: Callable[[], Any],
        poll_locked: Callable[[], None] | None = None,
        recheck: float | None = None,
        try_take_locked: Callable[[Waiter], Any] | None = None,
    ) -> Any:
        """Park ``waiter`` until it is granted something, and return that.

        Raises :class:`LockTimeout` after ``timeout`` seconds and
        :class:`WaitCancelled` when cancelled.  ``poll_locked`` (under the
        mutex, every ``recheck`` seconds) lets the owner hand over what its
        lock-free paths freed; ``give_back(grant)`` returns a grant that
        arrived as the wait was interrupted.
        """
        deadline = None if timeout is None else waiter.since + max(timeout, 0.0)
        try:
            while True:
                woken = _park(waiter.parker, deadline, recheck)
                if woken and waiter.grant is not None:
                    # Granted: written once, before the wake that this was (a grant racing a nudge's
                    # wake clears the nudge under the mutex).  Taking the mutex only to read it would
                    # contend with every thread queueing or claiming meanwhile (a group commit wakes
                    # its callers all at once): on free-threaded builds, spinning.
                    return waiter.grant
                with self._mutex:
                    nudged = False
                    if woken:  # this wake-up was the pending one, if it was nudged
                        nudged, waiter.nudged = waiter.nudged, False
                    if waiter.grant is not None or waiter.cancelled:
                        break
                    if waiter.claimed:  # its work is being done: no timeout any more
                        deadline = None
                        continue
                    if nudged:  # woken to compete for a freed permit
                        grant = None if try_take_locked is None else try_take_locked(waiter)
                        if grant is not None:
                            self._remove_locked(waiter)
                            waiter.grant = grant
                            break
                        continue  # overtaken: park again, still the oldest
                    if woken:  # pragma: no cover - every wake-up sets grant, cancelled, claimed or nudged
                        continue
                    if poll_locked is not None:
                        poll_locked()
                        if waiter.grant is not None:
                            break
                    if deadline is not None and monotonic() >= deadline:
                        self.leave_locked(waiter)
                        raise LockTimeout(monotonic() - waiter.since, statistics_locked())
        except LockTimeout:
            raise
        except BaseException:
            # Interrupted (KeyboardInterrupt, a signal handler's exception): leave no ghost waiter and
            # no stranded grant behind.
            with self._mutex:
                grant = waiter.grant
                if grant is None and not waiter.claimed:
                    self.leave_locked(waiter)  # (a claimed waiter is out already: its work still runs)
            if grant is not None and not waiter.claimed:
                give_back(grant)
            raise
        if waiter.grant is not None:
            return waiter.grant
        raise WaitCancelled(f"the wait was cancelled after {monotonic() - waiter.since:.3f} s")
