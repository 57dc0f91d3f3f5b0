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
is never held while blocking; the queue and the hand-off are
:class:`~sqlitefair._waitqueue.WaitQueue`, shared with the reader slots.
Nothing relies on the GIL, so it is correct on free-threaded builds.

Invariant (under the mutex): ``len(_holders) <= capacity``, and a waiter is
queued only while ``len(_holders) == capacity`` or older waiters are queued.
"""

from __future__ import annotations

import _thread
import sys
import threading
from _thread import get_ident
from dataclasses import dataclass, field
from time import monotonic, sleep
from typing import Any, Callable

from . import _interrupts
from ._interrupts import interruptible, protected
from ._waitqueue import WAKE_PENDING, CancelScope, LockTimeout, WaitCancelled, Waiter, WaitQueue

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


#: Free-threaded builds, barging mode: seconds a waiter first waits at the baton itself (a
#: ``_thread`` lock: PyMutex, FIFO among its waiters and handed over after 1 ms of waiting) before it
#: joins the queue.  Without a GIL a wake-up there costs less than one through the Python queue:
#: measured on 2 cores, 16 threads, short transactions, 3.13t: 1.4x the throughput, slowest waits
#: alike; on GIL builds it lost to the queue (0.6x to 0.9x), so they never wait there.
BATON_WAIT = 0.005
#: ... unless this many waiters are queued already: behind them (a turn takes tens of
#: microseconds) it would time out of BATON_WAIT anyway, and only crowd the baton.  Measured at 256
#: threads on 3.13t: 1.2x (write) and 1.5x (short) the throughput; at 16 threads it never applies.
BATON_QUEUE_MAX = 64
#: Weight of the newest turn in a barging lock's moving average of turns (``FairLock(depth=...)``).
TURN_WEIGHT = 0.125

_gil_enabled: Callable[[], bool] = getattr(sys, "_is_gil_enabled", lambda: True)


class WouldBlock(Exception):
    """``acquire_nowait()`` could not take a permit without waiting."""


class Permit:
    """One held permit: which thread was granted it and when (``time.monotonic()``).

    Permits compare by identity, so the same thread may hold several.  The
    thread's name is looked up only when someone asks for it.  (Slotted: a
    write checkout is a subclass, slotted too, so that its attribute accesses
    on the hot path are the interpreter's cheapest.)
    """

    __slots__ = ("thread_ident", "since", "_name")

    def __init__(self, thread_ident: int, since: float, name: str | None = None) -> None:
        self.thread_ident = thread_ident
        self.since = since
        self._name = name

    @property
    def thread_name(self) -> str:
        if getattr(self, "_name", None) is None:  # a checkout that is its own permit leaves it unset
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


class FairSemaphore:
    """A counting semaphore that grants permits in strict arrival order."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self._capacity = capacity
        self._mutex = threading.Lock()
        self._holders: dict[Permit, None] = {}
        self._queue = WaitQueue(self._mutex)

    @property
    def capacity(self) -> int:
        return self._capacity

    @protected
    def acquire_nowait(self) -> Permit:
        """Take a permit if one is free and nobody is queued, else raise :class:`WouldBlock`."""
        with self._mutex:
            if self._queue.count or len(self._holders) >= self._capacity:
                raise WouldBlock
            permit = Permit(get_ident(), monotonic())
            self._holders[permit] = None
            return permit

    @protected
    def acquire(self, timeout: float | None = None, *, cancel: CancelScope | None = None) -> Permit:
        """Wait in FIFO order for a permit; ``timeout=None`` waits forever.

        Raises :class:`LockTimeout` when ``timeout`` seconds pass first, and
        :class:`WaitCancelled` when ``cancel`` is cancelled first.
        """
        if cancel is not None and cancel.cancelled:
            raise WaitCancelled("the wait was cancelled before it began")
        with self._mutex:
            if not self._queue.count and len(self._holders) < self._capacity:
                permit = Permit(get_ident(), monotonic())
                self._holders[permit] = None
                return permit
            waiter = self._queue.join_locked(cancel)
        permit: Permit = self._queue.wait(
            waiter, timeout, give_back=self.release, statistics_locked=self._statistics_locked
        )
        return permit

    @protected
    def release(self, permit: Permit) -> None:
        """Return ``permit``; the oldest waiter, if any, becomes its next holder."""
        with self._mutex:
            try:
                del self._holders[permit]
            except KeyError:
                raise RuntimeError("release() of a permit that is not held") from None
            if self._queue.count:
                self._queue.hand_over_locked(self._grant_locked)

    @protected
    def discard(self, permit: Permit) -> bool:
        """Return ``permit`` if it is still held; True if it was.  Safe to call twice (cleanup paths)."""
        with self._mutex:
            if permit not in self._holders:
                return False
            self._release_locked(permit)
            return True

    def _release_locked(self, permit: Permit) -> None:
        del self._holders[permit]
        if self._queue.count:
            self._queue.hand_over_locked(self._grant_locked)

    def _grant_locked(self, waiter: Waiter) -> Permit:
        granted = Permit(waiter.ident, monotonic())
        self._holders[granted] = None
        return granted

    def holds(self, permit: Permit) -> bool:
        """Whether ``permit`` is still held (not yet released)."""
        with self._mutex:
            return permit in self._holders

    def queued_or_holding(self, thread_ident: int) -> bool:
        """Whether thread ``thread_ident`` waits in the queue or holds a permit.

        Lets a caller that starts waiters on other threads (the asyncio facade)
        wait until one has joined the queue before starting the next.
        """
        with self._mutex:
            return self._queue.has_thread_locked(thread_ident) or any(
                p.thread_ident == thread_ident for p in self._holders
            )

    def held_by_current_thread(self) -> bool:
        """Whether the calling thread holds at least one permit."""
        me = get_ident()
        with self._mutex:
            return any(p.thread_ident == me for p in self._holders)

    def statistics(self) -> LockStatistics:
        with self._mutex:
            return self._statistics_locked()

    def _statistics_locked(self) -> LockStatistics:
        return LockStatistics(
            capacity=self._capacity,
            held=len(self._holders),
            waiting=len(self._queue),
            holders=tuple(self._holders),
            oldest_waiter_since=self._queue.oldest_since_locked(),
        )

    def __repr__(self) -> str:
        s = self.statistics()
        return f"<{type(self).__name__} held={s.held}/{s.capacity} waiting={s.waiting}>"


class FairLock:
    """A FIFO-fair mutual-exclusion lock whose uncontended acquire takes no mutex.

    The *baton*, a plain ``_thread`` lock, is locked exactly while the lock has
    a holder or is being handed to one: ``release()`` with waiters queued makes
    the oldest waiter the holder without ever unlocking the baton.  So an
    ``acquire()`` that finds the baton free knows, from that one non-blocking
    C call, that nobody holds the lock and nobody is queued, and takes it
    without the mutex; it can never overtake a waiter.  (The reader slots use
    the same idea per slot, see ``_slots``.)

    ``acquire(permit=...)`` records a caller's own object as the holder (a
    write checkout is its own permit), which saves making a :class:`Permit`
    on every transaction.

    Invariants:

    * the baton is locked if and only if ``_holder`` is set, except in the one
      step between a successful ``baton.acquire(False)`` and the store of
      ``_holder`` (protected code: a SIGINT is deferred past it);
    * strict hand-off: under the mutex, a queued waiter implies a locked
      baton: the baton is unlocked only under the mutex and only when nobody
      is queued, and a waiter joins the queue only under the mutex, after
      failing to take the baton there.  With ``barging``, the baton is also
      unlocked when the oldest waiter is younger than the bound; that waiter
      is then woken to compete, and any thread may take the baton first;
    * ``_holder`` is replaced by the holder itself (acquire, release) or, on a
      hand-over, under the mutex by the thread that releases;
    * ``_at_baton`` holds one item per thread blocked on the baton itself
      (barging mode, free-threaded builds, never the main thread): it is
      counted from before that wait until it holds the lock or, under the
      mutex, joins the queue, so ``close()`` can wait until none is left.
    """

    def __init__(self, *, barging: float | None = None, depth: float = 0.0) -> None:
        """``barging``: None for strict hand-off (every release with waiters hands the lock to the
        oldest); else seconds: a release hands over only to a waiter that has waited that long, and
        otherwise frees the lock and wakes the oldest waiter to compete for it, so that a running
        thread may take it first (PyMutex's rule since Python 3.13, with its 1 ms).  Waiters stay
        FIFO among themselves; nobody waits much longer than the bound plus a holder's turn.  On a
        free-threaded build a waiter first waits up to BATON_WAIT at the baton itself (FIFO there,
        PyMutex's own 1 ms rule), then queues in its place by arrival; that wait is the bound there.

        ``depth`` (with ``barging``): a waiter that queued behind N others may be overtaken until
        it has waited ``depth`` x (N + 1) x the mean turn, when that is longer than ``barging``:
        about ``depth`` times what strict FIFO order would make it wait anyway.  (The mean turn is
        a moving average of the holders' turns, each sample capped at ``barging``, a hold that ran
        queued ``write()`` calls for others counting as one turn per call.)  With a fixed bound a
        queue more than ``barging`` of turns deep never lets anyone barge, and pays a thread
        wake-up per turn."""
        if barging is not None and not barging >= 0:
            raise ValueError(f"barging must be None or seconds >= 0, got {barging!r}")
        if not 0 <= depth < float("inf"):
            raise ValueError(f"depth must be a finite number >= 0, got {depth!r}")
        self._barging = barging
        self._depth = depth
        # Barging with depth, both under the mutex: the moving average of a turn (seconds), and the
        # calls the current holder ran for other waiters (_claim_next) since the last sample.
        self._turn = 0.0
        self._served = 0
        self._mutex = threading.Lock()
        self._baton = _thread.allocate_lock()
        self._holder: Permit | None = None
        self._queue = WaitQueue(self._mutex, self._after_leave_locked)
        # A holder may lend the lock to one permit of its own (lend()): that permit's acquire takes
        # it at once, and its release gives it back to the lender instead of handing it on.
        self._lender: Permit | None = None
        self._borrower: Permit | None = None
        # One item per thread waiting at the baton (free-threaded builds, barging mode): appends and
        # pops of a list are atomic there, and only statistics read its length.
        self._at_baton: list[None] = []

    @property
    def capacity(self) -> int:
        return 1

    @property
    def owner(self) -> Permit | None:
        """The current holder's permit, or ``None`` when free."""
        return self._holder

    def locked(self) -> bool:
        """Whether somebody holds the lock (or it is being handed over)."""
        return self._baton.locked()

    def has_waiters(self) -> bool:
        """Whether a thread waits for the lock now (a hint: read without the mutex)."""
        return bool(self._queue.count or self._at_baton)

    @protected
    def acquire_nowait(self, *, permit: Permit | None = None) -> Permit:
        """Take the lock if it is free (then nobody is queued), else raise :class:`WouldBlock`."""
        if not self._baton.acquire(False):
            raise WouldBlock
        return self._take(permit, monotonic())

    @protected
    def acquire(
        self,
        timeout: float | None = None,
        *,
        cancel: CancelScope | None = None,
        permit: Permit | None = None,
        now: float | None = None,
        queue: bool = False,
    ) -> Permit:
        """Wait in FIFO order for the lock; ``timeout=None`` waits forever.

        Returns the permit to pass to :meth:`release`: ``permit`` when given
        (its ``thread_ident`` and ``since`` are set here), else a new
        :class:`Permit`.  ``now``: the caller's ``time.monotonic()``, if it has
        just read it (saves a clock read).  ``queue``: join the FIFO queue at once, never wait at
        the baton (a ``write()`` call: a combiner takes up only queued calls).  Raises :class:`LockTimeout` when
        ``timeout`` seconds pass first, and :class:`WaitCancelled` when
        ``cancel`` is cancelled first.
        """
        if cancel is not None and cancel.cancelled:
            raise WaitCancelled("the wait was cancelled before it began")
        # Free: nobody is queued (strict), or the oldest waiter is young and was woken to compete
        # (barging). The common case, without the mutex.
        if self._baton.acquire(False):
            # self._take(), inlined: this runs on every transaction
            if permit is None:
                permit = Permit(get_ident(), monotonic() if now is None else now)
            else:
                permit.thread_ident = get_ident()
                permit.since = monotonic() if now is None else now
            self._holder = permit
            return permit
        if permit is self._borrower and permit is not None and self._holder is self._lender:
            # Lent by its holder, this thread (see _lend): the baton stays locked, the lock changes
            # hands without the mutex, since only the holder changes a held lock's holder.
            return self._take(permit, monotonic() if now is None else now)
        if (
            self._barging is not None
            and not queue
            and cancel is None
            and (timeout is None or timeout > 0)  # (a _thread lock's -1 is "forever", other negatives raise)
            and (permit is None or permit is not self._borrower)  # a borrower takes its loan below
            and get_ident() != _interrupts._main_ident
            and not _gil_enabled()
            and self._queue.count < BATON_QUEUE_MAX  # (a racy read: a heuristic)
        ):
            # Free-threaded: wait at the baton itself first (see BATON_WAIT); counted as waiting.
            # Never the main thread: that wait is a C call inside this protected frame, where a
            # Ctrl-C would be deferred until the wait ends (or, the lock taken, land in the caller's
            # block); waiting must stay interruptible (see _interrupts).
            if now is None:
                now = monotonic()
            at_baton = self._at_baton
            at_baton.append(None)
            try:
                taken = self._baton.acquire(True, BATON_WAIT if timeout is None or timeout > BATON_WAIT else timeout)
            except BaseException:
                at_baton.pop()
                raise
            if taken:
                at_baton.pop()
                return self._take(permit, monotonic())
        else:
            at_baton = None
        with self._mutex:
            if at_baton is not None:  # counted at the baton until it holds the lock or is queued (_wait_out_baton)
                at_baton.pop()
            if self._baton.acquire(False):  # released meanwhile (nobody queued, or barging is on)
                return self._take(permit, monotonic())
            if at_baton is not None:  # it arrived earlier and waited at the baton: its place is by arrival
                waiter = self._queue.join_locked(cancel, arrived=now)
            else:
                waiter = self._queue.join_locked(cancel)
                if now is not None and now < waiter.since:  # the caller's clock read, just before
                    waiter.since = now
            waiter.permit = permit
            waiter.competes = self._barging is not None
        return self._wait_queued(waiter, timeout)

    @protected
    def _queue_call(self, call: Permit, arrived: float, timeout: float | None) -> Permit:
        """:meth:`acquire` for a ``write()`` call (``permit=call``, ``queue=True``, no cancel scope):
        take the lock if it is free, else join the FIFO queue at once, by ``arrived``, where a
        combiner may take the call up.  Returns ``call``: granted the lock, or its work done by a
        combiner (``call.done``).  Written out, not through :meth:`acquire`: every ``write()``
        caller runs it, and on a GIL build a caller's Python delays the combiner."""
        if self._baton.acquire(False):
            return self._take(call, arrived)
        waiter = Waiter()  # made before the mutex is taken: every caller and the combiner queue on it
        waiter.since = arrived
        waiter.permit = call
        waiter.competes = self._barging is not None
        with self._mutex:
            if self._baton.acquire(False):  # released meanwhile
                return self._take(call, monotonic())
            self._queue.add_locked(waiter)
        return self._wait_queued(waiter, timeout)

    def _wait_queued(self, waiter: Waiter, timeout: float | None) -> Permit:
        """Park ``waiter``, queued under the mutex, until it holds the lock (or, a ``write()`` call
        taken up by a combiner, until its work is done)."""
        granted: Permit = self._queue.wait(
            waiter,
            timeout,
            give_back=self.release,
            statistics_locked=self._statistics_locked,
            try_take_locked=self._try_take_locked,
        )
        return granted

    @interruptible
    def _wait_out_baton(self, deadline: float | None = None) -> None:
        """Wait until no thread waits at the baton (each leaves it within BATON_WAIT: holding the
        lock, or queued), or until ``deadline`` (``time.monotonic()``).  For ``close()``: once new
        checkouts are refused, it queues behind every thread that was already waiting."""
        while self._at_baton and (deadline is None or monotonic() < deadline):
            sleep(0.0002)

    def _try_take_locked(self, waiter: Waiter) -> Permit | None:
        """A waiter woken to compete takes the lock if it is still free (barging mode)."""
        if self._baton.acquire(False):
            return self._take(waiter.permit, monotonic())
        return None

    def _after_leave_locked(self) -> None:
        """A waiter left the queue without the lock.  If the lock is free (barging: it was freed for
        whoever runs first, and that waiter may have been the one woken to compete), the new oldest
        waiter must know: woken to compete, or handed the lock if it does not compete."""
        if self._barging is None or not self._queue.count or self._baton.locked():
            return
        if not self._queue.nudge_locked() and self._baton.acquire(False):
            if not self._queue.hand_over_locked(self._grant_locked):  # pragma: no cover - count > 0
                self._baton.release()

    def _barge_locked(self, held_since: float) -> bool:
        """With waiters queued, whether to free the lock for whoever runs first instead of handing
        it over: barging mode, and the oldest waiter (woken now to compete) is younger than the
        bound, ``barging`` or ``depth`` x its strict-FIFO wait (the waiters it queued behind, and
        the holder, x the mean turn), whichever is longer.  ``held_since``: when the releasing
        holder was granted the lock (a turn's sample)."""
        queue = self._queue
        head = queue.oldest_locked()
        if head is None or not head.competes:
            return False
        now = monotonic()
        window: float = self._barging  # type: ignore[assignment]
        if self._depth:
            held = (now - held_since) / (1 + self._served)  # a combiner's hold: one turn per call it ran
            self._served = 0
            turn = self._turn = self._turn + ((held if held < window else window) - self._turn) * TURN_WEIGHT
            bound = self._depth * (head.ahead + 1) * turn
            if bound > window:
                window = bound
        if now - head.since >= window:
            return False
        return queue.nudge_locked()

    def _take(self, permit: Permit | None, now: float) -> Permit:
        """Record the caller, who has just taken the baton, as the holder."""
        if permit is None:
            permit = Permit(get_ident(), now)
        else:
            permit.thread_ident = get_ident()
            permit.since = now
        self._holder = permit
        return permit

    @protected
    def release(self, permit: Permit) -> None:
        """Return ``permit``; the oldest waiter, if any, becomes the next holder."""
        if permit is self._borrower and permit is not None and self._holder is permit:
            self._holder = self._lender  # lent: back to the lender, who holds it on (no mutex: see _lend)
            return
        wake = None
        with self._mutex:
            if self._holder is not permit or permit is None:
                raise RuntimeError("release() of a permit that is not held")
            if self._lender is not None:  # the lender lets go: its loan ends with it
                self._lender = self._borrower = None
            if self._queue.count and (self._barging is None or not self._barge_locked(permit.since)):
                # To the oldest waiter (the baton stays locked: it goes with the lock), woken below.
                wake = self._queue.pass_on_locked(self._grant_locked)
            if wake is None:
                self._holder = None
                self._baton.release()
        if wake is not None and wake is not WAKE_PENDING:
            wake.release()  # once the mutex is free: the new holder's first step takes it

    @protected
    def discard(self, permit: Permit) -> bool:
        """Return ``permit`` if it is still held; True if it was.  Safe to call twice (cleanup paths).

        Only the holder gives its permit back, so nobody can take it between the look and the
        release: the release is :meth:`release`'s own (loans, barging, hand-over alike)."""
        if not self.holds(permit):
            return False
        self.release(permit)
        return True

    @protected
    def _acquire_or_join(self, permit: Permit, parker: Any) -> Waiter | None:
        """For a caller that cannot park a thread (an event loop): take the lock for ``permit`` if it
        is free (None), else queue a waiter that ``parker.release()`` wakes; the caller then reads
        ``waiter.grant`` and leaves with :meth:`_leave_queue` if it stops waiting."""
        with self._mutex:
            if self._baton.acquire(False):
                self._take(permit, monotonic())
                return None
            waiter = self._queue.join_locked(None, parker)
            waiter.permit = permit
            return waiter

    @protected
    def _leave_queue(self, waiter: Waiter) -> str:
        """A waiter of :meth:`_acquire_or_join` stops waiting: ``"left"`` (out of the queue, nothing
        held), ``"granted"`` (it holds the lock: release it) or ``"claimed"`` (a holder runs its work)."""
        with self._mutex:
            if waiter.claimed:
                return "claimed"
            if waiter.grant is not None:
                return "granted"
            self._queue.leave_locked(waiter)
            return "left"

    @protected
    def _lend(self, holder: Permit, borrower: Permit) -> None:
        """Let ``borrower`` (a permit of the holder's own, e.g. a transaction it opens) take the lock
        while ``holder`` holds it: its acquire succeeds at once and its release returns the lock to
        ``holder``.  One loan at a time; :meth:`_end_loan` ends it.

        Loans take no mutex: only the thread holding the lock lends it, borrows it (the borrower is
        its own permit) and ends the loan, and while the lock is held nobody else changes
        ``_holder`` (a hand-over happens only in the holder's own release).  Other threads may read
        either permit as the holder meanwhile; both are that thread's."""
        if self._holder is not holder or holder is None:
            raise RuntimeError("lend() by a permit that does not hold the lock")
        self._borrower = borrower
        self._lender = holder

    @protected
    def _end_loan(self, holder: Permit) -> None:
        """End the loan of ``holder``; if the borrower still holds the lock, it is ``holder``'s again."""
        if self._lender is not holder:
            return
        if self._holder is self._borrower:
            self._holder = holder
        self._lender = self._borrower = None

    @protected
    def _claim_next(
        self,
        holder: Permit,
        kind: type,
        done: list[tuple[Waiter, Any]] | None = None,
        limit: int = 1,
    ) -> list[Waiter]:
        """The holder takes the oldest waiters out of the queue, up to ``limit`` and while each
        one's permit is a ``kind``, to do their work (flat combining); wake each with
        ``_complete(waiter, grant)`` when done.  ``done``: pairs of (waiter, grant) to complete
        as well, once the claim has let the mutex go."""
        with self._mutex:
            if self._holder is not holder or holder is None:
                raise RuntimeError("claim_next() by a permit that does not hold the lock")
            claimed = self._queue.claim_head_locked(kind, limit)
            self._served += len(claimed)
        if done:  # (without the mutex: see WaitQueue.complete)
            WaitQueue.complete(done)
        return claimed

    @staticmethod
    def _complete(waiter: Waiter, grant: Any) -> None:
        """Wake a waiter taken by :meth:`_claim_next`: its wait returns ``grant``."""
        WaitQueue.complete(((waiter, grant),))

    def _grant_locked(self, waiter: Waiter) -> Permit:
        permit = waiter.permit
        if permit is None:
            permit = Permit(waiter.ident, monotonic())
        else:
            permit.thread_ident = waiter.ident
            permit.since = monotonic()
        self._holder = permit
        return permit

    def holds(self, permit: Permit) -> bool:
        """Whether ``permit`` is still held (not yet released)."""
        return permit is not None and self._holder is permit

    def queued_or_holding(self, thread_ident: int) -> bool:
        """Whether thread ``thread_ident`` waits in the queue or holds the lock (see FairSemaphore)."""
        with self._mutex:
            holder = self._holder
            return self._queue.has_thread_locked(thread_ident) or (
                holder is not None and holder.thread_ident == thread_ident
            )

    def held_by_current_thread(self) -> bool:
        """Whether the calling thread holds the lock."""
        holder = self._holder
        return holder is not None and holder.thread_ident == get_ident()

    def statistics(self) -> LockStatistics:
        with self._mutex:
            return self._statistics_locked()

    def _statistics_locked(self) -> LockStatistics:
        holder = self._holder
        return LockStatistics(
            capacity=1,
            held=1 if self._baton.locked() else 0,
            waiting=len(self._queue) + len(self._at_baton),
            holders=() if holder is None else (holder,),
            oldest_waiter_since=self._queue.oldest_since_locked(),
        )

    def __repr__(self) -> str:
        s = self.statistics()
        return f"<{type(self).__name__} held={s.held}/1 waiting={s.waiting}>"
