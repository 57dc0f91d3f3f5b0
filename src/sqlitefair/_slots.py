"""Reader slots: N connections checked out in FIFO order, with no shared lock while nobody waits.

Why not a :class:`~sqlitefair.FairSemaphore` and an idle list: on a
free-threaded build with many more threads than CPUs, a process-wide lock
taken on every checkout turns into a convoy (a thread is preempted near it,
and once a waiter has waited 1 ms CPython's lock hands itself to a parked
thread, which first has to be scheduled).  Measured with 32 threads on 2 CPUs:
reads fell to 0.45x of one thread, while per-thread connections kept 2x.

So each slot has its own lock, held while the slot is checked out.  A thread
first tries the slot it used last, then the others, never blocking.  Only when
every slot is taken does it queue, under the one shared mutex, and a thread
that returns a slot while others queue hands a free slot to the oldest of them.

Fairness: the lock-free path is taken only while nobody is queued.  A waiter
publishes itself (the queue's ``count``) before its last look at the slots,
and a releasing thread reads ``count`` after unlocking its slot; with the
atomic operations of CPython's locks one of the two always sees the other.
Waiters also look again every ``RECHECK`` seconds, so even a hand-over lost
to some memory-ordering corner case costs at most that, never a hang.  The
queue and the hand-off are the same :class:`~sqlitefair._waitqueue.WaitQueue`
the writer's lock uses.

Invariant: a slot's ``lock`` is held exactly while the slot is checked out;
``owner`` (the pool's checkout object, or None) and ``holder`` are written
only by whoever holds that lock, and cleared before it is released.
"""

from __future__ import annotations

import threading
from _thread import get_ident
from time import monotonic
from typing import Any

from . import _defaults
from ._fairlock import LockStatistics, Permit
from ._interrupts import protected
from ._stats import WaitStats, _WaitSeries, percentile
from ._waitqueue import CancelScope, WaitCancelled, Waiter, WaitQueue

__all__ = ("FairSlots", "Slot")

#: Seconds between a queued thread's own looks for a free slot (a backstop; hand-over is direct).
RECHECK = 0.05


class Slot:
    """One slot: its ``lock`` is held while it is checked out; ``item`` is what it hands out (a connection)."""

    __slots__ = ("lock", "item", "holder", "owner", "since", "_stat_lock", "_waits")

    def __init__(self, window: int) -> None:
        self.lock = threading.Lock()
        self.item: Any = None
        self.holder: int | None = None  # thread ident of the holder (diagnostics)
        self.owner: object = None  # the checkout that holds it, for idempotent give-back
        self.since = 0.0
        self._stat_lock = threading.Lock()  # the holder and stats() only: never contended for long
        self._waits = _WaitSeries(window)


class FairSlots:
    """``capacity`` slots granted in arrival order; the pool's reader connections live in them."""

    def __init__(self, capacity: int, *, window: int = _defaults.STATS_WINDOW) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        per_slot = max(64, window // capacity)
        self._slots = tuple(Slot(per_slot) for _ in range(capacity))
        self._mutex = threading.Lock()  # guards the queue
        self._queue = WaitQueue(self._mutex)
        self._home = threading.local()  # .slot: the slot this thread had last

    @property
    def capacity(self) -> int:
        return len(self._slots)

    # -- checking out ---------------------------------------------------------

    @protected
    def acquire(
        self,
        timeout: float | None = None,
        *,
        cancel: CancelScope | None = None,
        record: bool = True,
        owner: object = None,
    ) -> Slot:
        """A slot, in FIFO order; raises :class:`LockTimeout` or :class:`WaitCancelled`.

        ``owner`` is recorded on the slot so that :meth:`discard` by the same
        owner is safe to repeat.  ``record=False`` keeps this wait out of
        :meth:`wait_stats` (the pool's own holds).
        """
        if cancel is not None and cancel.cancelled:
            raise WaitCancelled("the wait was cancelled before it began")
        if not self._queue.count:
            slot = self._try_take()
            if slot is not None:
                slot.owner = owner
                slot.holder, slot.since = get_ident(), monotonic()
                if record:
                    with slot._stat_lock:
                        slot._waits.add(0.0)
                return slot
        with self._mutex:
            waiter = self._queue.join_locked(cancel)
            self._hand_over_locked()  # a slot may be free already: then the oldest waiter gets it
        slot = self._queue.wait(
            waiter,
            timeout,
            give_back=self.release,
            statistics_locked=self._statistics_locked,
            poll_locked=self._hand_over_locked,
            recheck=RECHECK,
        )
        slot.owner = owner
        if record:
            with slot._stat_lock:
                slot._waits.add(slot.since - waiter.since)
        self._home.slot = slot
        return slot

    def _try_take(self) -> Slot | None:
        """Lock a free slot without blocking: this thread's last one first."""
        home: Slot | None = getattr(self._home, "slot", None)
        if home is not None and home.lock.acquire(False):
            return home
        for slot in self._slots:
            if slot is not home and slot.lock.acquire(False):
                self._home.slot = slot
                return slot
        return None

    def _hand_over_locked(self) -> None:
        """Give free slots to the oldest waiters (under the mutex)."""
        while self._queue.hand_over_locked(self._take_for_locked):
            pass

    def _take_for_locked(self, waiter: Waiter) -> Slot | None:
        for slot in self._slots:
            if slot.lock.acquire(False):
                slot.holder, slot.since = waiter.ident, monotonic()
                return slot
        return None

    @protected
    def release(self, slot: Slot) -> None:
        """Return ``slot`` (its ``item`` stays in it); the oldest waiter, if any, gets a free slot."""
        if not slot.lock.locked():
            raise RuntimeError("release() of a slot that is not checked out")
        slot.owner = None
        slot.holder = None
        slot.lock.release()
        if self._queue.count:  # read after the unlock: see the module docstring
            with self._mutex:
                self._hand_over_locked()

    @protected
    def discard(self, slot: Slot, owner: object) -> bool:
        """Release ``slot`` if ``owner`` still holds it; True if it did.  Safe to repeat."""
        if owner is None or slot.owner is not owner or not slot.lock.locked():
            return False
        self.release(slot)
        return True

    @protected
    def take_free_items(self) -> list[Any]:
        """Remove and return the items of the slots nobody holds, without waiting (a closing pool)."""
        items = []
        for slot in self._slots:
            if slot.item is not None and slot.lock.acquire(False):
                items.append(slot.item)
                slot.item = None
                self.release(slot)  # hands it to a waiter, if one queued meanwhile
        return items

    # -- looking ----------------------------------------------------------------

    def statistics(self) -> LockStatistics:
        with self._mutex:
            return self._statistics_locked()

    def _statistics_locked(self) -> LockStatistics:
        holders = []
        held = 0
        for slot in self._slots:
            if slot.lock.locked():
                held += 1
                ident = slot.holder
                if ident is not None:
                    holders.append(Permit(ident, slot.since))
        return LockStatistics(
            capacity=len(self._slots),
            held=held,
            waiting=len(self._queue),
            holders=tuple(holders),
            oldest_waiter_since=self._queue.oldest_since_locked(),
        )

    def queued_or_holding(self, thread_ident: int) -> bool:
        """Whether thread ``thread_ident`` waits in the queue or holds a slot (for the asyncio facade)."""
        with self._mutex:
            if self._queue.has_thread_locked(thread_ident):
                return True
        return any(s.holder == thread_ident for s in self._slots)

    def held_by_current_thread(self) -> bool:
        me = get_ident()
        return any(s.holder == me and s.lock.locked() for s in self._slots)

    def wait_stats(self) -> WaitStats:
        """How long granted acquires waited, over all slots (percentiles over each slot's recent waits)."""
        count, total, longest, recent = 0, 0.0, 0.0, []
        for slot in self._slots:
            with slot._stat_lock:
                series = slot._waits
                count += series.count
                total += series.total
                longest = max(longest, series.max)
                recent.extend(series.recent)
        recent.sort()
        return WaitStats(count, percentile(recent, 0.50), percentile(recent, 0.99), longest, total)

    def __repr__(self) -> str:
        s = self.statistics()
        return f"<FairSlots held={s.held}/{s.capacity} waiting={s.waiting}>"
