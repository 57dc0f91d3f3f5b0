"""The FIFO-fair semaphore and the reader slots: arrival order is service order, no barging,
no lost permits.  Tests that take a ``kind`` run against both (``FairSlots`` is the reader
queue, with a lock-free path while nobody waits)."""

from __future__ import annotations

import random
import sys
import threading
import time
from pathlib import Path

import pytest
from _helpers import Worker, queued, wait_until
from conftest import STRESS

from sqlitefair import CancelScope, FairLock, FairSemaphore, LockTimeout, WaitCancelled, WouldBlock
from sqlitefair._fairlock import Permit
from sqlitefair._slots import FairSlots


@pytest.fixture(params=["semaphore", "slots", "lock", "barging-lock"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def make(kind: str, capacity: int = 1) -> FairSemaphore | FairSlots | FairLock:
    if kind in ("lock", "barging-lock"):
        if capacity != 1:
            pytest.skip("a FairLock has one permit")
        return FairLock(barging=0.001) if kind == "barging-lock" else FairLock()
    return FairSemaphore(capacity) if kind == "semaphore" else FairSlots(capacity)


def test_uncontended_acquire_and_release() -> None:
    lock = FairLock()
    permit = lock.acquire()
    assert lock.owner is permit
    assert permit.thread_ident == threading.get_ident()
    lock.release(permit)
    assert lock.owner is None
    assert lock.statistics().held == 0


@pytest.mark.parametrize("seed", range(5))
def test_waiters_are_served_in_arrival_order(seed: int, kind: str) -> None:
    """Threads queue in a known (random) order; they must get the lock in exactly that order."""
    lock = make(kind)
    served: list[int] = []
    holder = lock.acquire()
    order = list(range(8))
    random.Random(seed).shuffle(order)

    def work(tag: int) -> None:
        permit = lock.acquire(timeout=20)
        served.append(tag)
        lock.release(permit)

    # queued(), not statistics().waiting: a waiter's place is fixed when it queues (one that waits at
    # a barging lock's baton and that the scheduler keeps off the CPU past BATON_WAIT may be
    # overtaken: the bound, not FIFO).
    workers = []
    for position, tag in enumerate(order):
        w = Worker(work, tag, name=f"waiter-{tag}")
        w.start()
        workers.append(w)
        wait_until(lambda: queued(lock) == position + 1, what=f"waiter {tag} to queue")
    lock.release(holder)
    for w in workers:
        w.finish()
    assert served == order


def test_release_hands_off_directly_no_barging(kind: str) -> None:
    """After release() the oldest waiter owns the lock: the releasing thread cannot take it back."""
    if kind == "barging-lock":
        pytest.skip("bounded barging lets a running thread take a freed lock first, by design (see the starvation test)")
    lock = make(kind)
    first = lock.acquire()
    got_it = threading.Event()
    proceed = threading.Event()

    def waiter() -> None:
        permit = lock.acquire(timeout=20)
        got_it.set()
        proceed.wait(20)
        lock.release(permit)

    w = Worker(waiter)
    w.start()
    wait_until(lambda: lock.statistics().waiting == 1)
    lock.release(first)
    # The waiter may not even have run yet, but it already owns the lock.
    with pytest.raises(LockTimeout):
        lock.acquire(timeout=0)
    holders = lock.statistics().holders
    assert [p.thread_ident for p in holders] == [w.ident]
    proceed.set()
    w.finish()
    assert got_it.is_set()


def test_newcomer_queues_behind_waiters_even_when_free() -> None:
    """acquire_nowait() fails while anyone is queued, even at the instant the lock is free."""
    sem = FairSemaphore(2)
    a = sem.acquire()
    b = sem.acquire()
    w = Worker(lambda: sem.release(sem.acquire(timeout=20)))
    w.start()
    wait_until(lambda: sem.statistics().waiting == 1)
    with pytest.raises(WouldBlock):
        sem.acquire_nowait()
    sem.release(a)
    w.finish()
    sem.release(b)
    assert sem.statistics().held == 0


def test_timeout_leaves_the_queue_and_reports_what_it_saw(kind: str) -> None:
    lock = make(kind)
    holder = lock.acquire()
    start = time.monotonic()
    with pytest.raises(LockTimeout) as info:
        lock.acquire(timeout=0.05)
    assert time.monotonic() - start >= 0.05
    assert info.value.waited >= 0.05
    assert info.value.statistics.held == 1
    assert lock.statistics().waiting == 0
    lock.release(holder)
    lock.release(lock.acquire(timeout=0))


def test_timed_out_waiter_does_not_block_those_behind_it(kind: str) -> None:
    lock = make(kind)
    holder = lock.acquire()
    impatient = Worker(lambda: lock.acquire(timeout=0.05), name="impatient")
    impatient.start()
    wait_until(lambda: lock.statistics().waiting == 1)
    patient = Worker(lambda: lock.release(lock.acquire(timeout=20)), name="patient")
    patient.start()
    wait_until(lambda: lock.statistics().waiting == 2)
    with pytest.raises(LockTimeout):
        impatient.finish()
    lock.release(holder)
    patient.finish()
    assert lock.statistics().held == 0


def test_grant_racing_a_timeout_is_never_lost(kind: str) -> None:
    """Release exactly around the waiter's deadline many times: every permit ends up released."""
    lock = make(kind)
    outcomes = {"granted": 0, "timed_out": 0}
    for i in range(200):
        holder = lock.acquire()

        def waiter() -> None:
            try:
                permit = lock.acquire(timeout=0.001)
            except LockTimeout:
                outcomes["timed_out"] += 1
            else:
                outcomes["granted"] += 1
                lock.release(permit)

        w = Worker(waiter)
        w.start()
        wait_until(lambda: lock.statistics().waiting == 1 or not w.is_alive())
        time.sleep(0.001 * (i % 3) / 2)
        lock.release(holder)
        w.finish()
        stats = lock.statistics()
        assert (stats.held, stats.waiting) == (0, 0), f"iteration {i}: {stats}"
    assert sum(outcomes.values()) == 200


def test_interrupted_waiter_passes_a_granted_permit_on(kind: str) -> None:
    """An exception raised while parked (like KeyboardInterrupt) must not strand a permit."""
    lock = make(kind)
    holder = lock.acquire()

    class Boom(BaseException):
        pass

    from sqlitefair import _waitqueue

    real_parker = _waitqueue._new_parker

    class ExplodingParker:
        """Parks like the build's parker, but raises once woken, as a signal handler would."""

        def __init__(self) -> None:
            self._parker = real_parker()

        def acquire(self, *args: object) -> bool:
            self._parker.acquire(*args)
            raise Boom

        def release(self) -> None:
            self._parker.release()

    _waitqueue._new_parker = ExplodingParker  # type: ignore[assignment]
    try:
        w = Worker(lambda: lock.acquire(timeout=20), name="interrupted")
        w.start()
        wait_until(lambda: queued(lock) == 1)  # in the queue, with the exploding parker
    finally:
        _waitqueue._new_parker = real_parker  # type: ignore[assignment]
    follower = Worker(lambda: lock.release(lock.acquire(timeout=20)), name="follower")
    follower.start()
    wait_until(lambda: lock.statistics().waiting == 2)
    lock.release(holder)  # granted to the exploding waiter, which must pass it on
    with pytest.raises(Boom):
        w.finish()
    follower.finish()
    assert lock.statistics().held == 0


def test_no_lost_or_duplicated_permits_under_stress(kind: str) -> None:
    sem = make(kind, 3)
    inside = 0
    peak = 0
    count_lock = threading.Lock()
    threads = 12 * STRESS
    barrier = threading.Barrier(threads)

    def work() -> None:
        nonlocal inside, peak
        barrier.wait(10)
        for _ in range(300):
            permit = sem.acquire(timeout=20)
            with count_lock:
                inside += 1
                peak = max(peak, inside)
            with count_lock:
                inside -= 1
            sem.release(permit)

    workers = [Worker(work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.finish()
    assert 1 <= peak <= 3
    stats = sem.statistics()
    assert (stats.held, stats.waiting) == (0, 0)


# -- cancellation from another thread ---------------------------------------------------


def test_cancelled_waiter_leaves_the_queue_at_once_and_the_rest_keep_their_order(kind: str) -> None:
    lock = make(kind)
    held = lock.acquire()
    served: list[str] = []
    scopes = {name: CancelScope() for name in "abc"}
    workers = {}

    def wait(name: str) -> None:
        permit = lock.acquire(timeout=20, cancel=scopes[name])
        served.append(name)
        lock.release(permit)

    for queued, name in enumerate("abc", start=1):
        workers[name] = Worker(wait, name, name=name)
        workers[name].start()
        wait_until(lambda q=queued: lock.statistics().waiting == q, what=f"{name} to queue")
    scopes["b"].cancel()
    with pytest.raises(WaitCancelled):
        workers["b"].finish()  # returns while the lock is still held
    assert lock.statistics().waiting == 2
    lock.release(held)
    workers["a"].finish()
    workers["c"].finish()
    assert served == ["a", "c"]


def test_cancel_before_acquire_fails_at_once_and_after_a_grant_does_nothing() -> None:
    lock = FairLock()
    early = CancelScope()
    early.cancel()
    with pytest.raises(WaitCancelled):
        lock.acquire(cancel=early)
    assert lock.statistics().held == 0
    late = CancelScope()
    permit = lock.acquire(cancel=late)
    late.cancel()
    assert lock.owner is permit
    lock.release(permit)
    stats = lock.statistics()
    assert (stats.held, stats.waiting) == (0, 0)


def test_cancellation_racing_grants_and_timeouts_never_loses_a_permit(kind: str) -> None:
    """Waiters cancelled at random moments, some timing out: each ends with exactly one
    outcome, and every permit granted comes back."""
    sem = make(kind, 2)
    threads = 8 * STRESS
    rounds = 150
    outcomes = {"granted": 0, "cancelled": 0, "timed out": 0}
    count_lock = threading.Lock()
    live: list[CancelScope] = []
    stop = threading.Event()

    def canceller() -> None:
        rng = random.Random(1)
        while not stop.is_set():
            with count_lock:
                scope = rng.choice(live) if live else None
            if scope is not None:
                scope.cancel()
            time.sleep(rng.random() * 0.0005)

    def work(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(rounds):
            scope = CancelScope()
            with count_lock:
                live.append(scope)
            try:
                permit = sem.acquire(timeout=rng.choice([0.0005, 0.005, 5.0]), cancel=scope)
            except WaitCancelled:
                outcome = "cancelled"
            except LockTimeout:
                outcome = "timed out"
            else:
                outcome = "granted"
                time.sleep(rng.random() * 0.0002)
                sem.release(permit)
            with count_lock:
                live.remove(scope)
                outcomes[outcome] += 1

    chaos = Worker(canceller)
    chaos.start()
    workers = [Worker(work, seed) for seed in range(threads)]
    for w in workers:
        w.start()
    try:
        for w in workers:
            w.finish(60)
    finally:
        stop.set()
        chaos.finish()
    assert sum(outcomes.values()) == threads * rounds
    assert outcomes["granted"] > 0 and outcomes["cancelled"] > 0, outcomes
    stats = sem.statistics()
    assert (stats.held, stats.waiting) == (0, 0)
    both = [sem.acquire(timeout=1), sem.acquire(timeout=1)]  # both permits are free again
    for permit in both:
        sem.release(permit)


def test_release_of_unknown_permit_is_an_error() -> None:
    a, b = FairLock(), FairLock()
    permit = a.acquire()
    with pytest.raises(RuntimeError, match="not held"):
        b.release(permit)
    a.release(permit)
    with pytest.raises(RuntimeError, match="not held"):
        a.release(permit)


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        FairSemaphore(0)


def test_slots_keep_their_items_and_a_thread_gets_its_last_slot_back() -> None:
    slots = FairSlots(3)
    first = slots.acquire()
    first.item = "connection-1"
    other = Worker(lambda: slots.acquire())
    other.start()
    taken_by_other = other.finish()
    slots.release(first)
    again = slots.acquire()
    assert again is first and again.item == "connection-1"
    slots.release(again)
    slots.release(taken_by_other)
    assert slots.statistics().held == 0
    assert slots.wait_stats().count == 3


@pytest.mark.parametrize("barging", [None, 0.001])
def test_a_thread_that_takes_the_lock_again_and_again_never_starves_a_waiter(barging: float | None) -> None:
    """Bounded barging lets a running thread re-take a freed lock, but only while the oldest waiter
    is younger than the bound: then the waiter is handed the lock (no starvation)."""
    lock = FairLock(barging=barging)
    stop = threading.Event()
    rounds = [0]

    def greedy() -> None:
        while not stop.is_set():
            permit = lock.acquire(timeout=20)
            rounds[0] += 1
            lock.release(permit)

    hog = Worker(greedy, name="greedy")
    hog.start()
    wait_until(lambda: rounds[0] > 100, what="the greedy thread to run")
    try:
        for _ in range(20):
            permit = lock.acquire(timeout=10)  # raises LockTimeout if starved
            lock.release(permit)
    finally:
        stop.set()
        hog.finish()
    assert lock.statistics().held == 0 and lock.statistics().waiting == 0


@pytest.mark.parametrize("timeout", [0.0, -0.5, -1.0])
def test_a_timeout_of_zero_or_less_does_not_wait(timeout: float) -> None:
    """``acquire(timeout <= 0)`` on a held lock raises LockTimeout at once, as the queue treats it
    (``max(timeout, 0)``): on a free-threaded build the barging lock's first phase passed it to the
    baton's ``_thread`` lock, where -1 means "wait forever" and other negatives raise ValueError."""
    from sqlitefair import Permit

    lock = FairLock(barging=0.001)
    holder = lock.acquire()
    try:
        w = Worker(lambda: lock.acquire(timeout, permit=Permit(0, 0.0)), name="no-wait")
        w.start()
        w.join(2)
        assert not w.is_alive(), f"acquire({timeout}) still waits after 2 s"
        assert isinstance(w.error, LockTimeout), repr(w.error)
    finally:
        lock.release(holder)
        w.join(5)
    assert lock.statistics().waiting == 0


def test_barging_lock_waiters_that_arrived_while_it_was_held_are_served_in_arrival_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """"Waiters stay FIFO among themselves" (FairLock(barging=...)).  On a free-threaded build a
    waiter first waits at the baton and joins the queue when that times out; a waiter whose
    time-out wake-up comes late (a loaded machine: the thread is not scheduled at once; simulated
    here by a longer BATON_WAIT for the first one) joined the queue behind a waiter that arrived
    after it, and was served after it although the lock was held throughout."""
    from sqlitefair import Permit, _fairlock

    lock = FairLock(barging=0.001)
    holder = lock.acquire()
    served: list[str] = []

    def work(tag: str) -> None:
        permit = lock.acquire(timeout=20, permit=Permit(0, 0.0))
        served.append(tag)
        lock.release(permit)

    monkeypatch.setattr(_fairlock, "BATON_WAIT", 0.3)
    first = Worker(work, "first", name="first")
    first.start()
    wait_until(lambda: lock.statistics().waiting == 1, what="the first waiter")
    monkeypatch.setattr(_fairlock, "BATON_WAIT", 0.005)
    second = Worker(work, "second", name="second")
    second.start()
    wait_until(lambda: lock.statistics().waiting == 2, what="the second waiter")
    wait_until(lambda: queued(lock) == 2, what="both to queue")
    time.sleep(0.002)
    lock.release(holder)
    first.finish()
    second.finish()
    assert served == ["first", "second"]


@pytest.mark.skipif(getattr(sys, "_is_gil_enabled", lambda: True)(), reason="the baton wait is for free-threaded builds")
def test_behind_a_long_queue_a_waiter_queues_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """With BATON_QUEUE_MAX waiters queued, a newcomer joins the queue without waiting at the baton."""
    from sqlitefair import _fairlock

    monkeypatch.setattr(_fairlock, "BATON_QUEUE_MAX", 1)
    monkeypatch.setattr(_fairlock, "BATON_WAIT", 30.0)  # a waiter that does wait there stays there
    lock = FairLock(barging=0.001)
    holder = lock.acquire()
    first = Worker(lambda: lock.release(lock.acquire(timeout=60, queue=True)), name="queued")
    first.start()
    wait_until(lambda: queued(lock) == 1, what="the first waiter to queue")
    second = Worker(lambda: lock.release(lock.acquire(timeout=60)), name="behind")
    second.start()
    wait_until(lambda: queued(lock) == 2, what="the second waiter to queue at once, not after BATON_WAIT")
    assert lock._at_baton == []
    lock.release(holder)
    first.finish()
    second.finish()


def test_a_caller_parks_on_the_builds_parker() -> None:
    """Free-threaded builds park on a SimpleQueue, GIL builds on a pre-acquired lock; a release
    before the park is not lost, and a timed park returns False."""
    import sysconfig

    from sqlitefair import _waitqueue

    parker = _waitqueue._new_parker()
    is_ft = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    assert isinstance(parker, _waitqueue._QueueParker) is is_ft
    start = time.monotonic()
    assert parker.acquire(True, 0.05) is False
    assert time.monotonic() - start >= 0.04
    parker.release()
    assert parker.acquire(True, 5) is True


@pytest.mark.parametrize("parker", ["thread-lock", "simple-queue"])
def test_a_claimed_waiter_nudged_just_before_gets_its_grant_once(parker: str) -> None:
    """A holder that claims a queued ``write()`` call (combining) may find it just woken to compete
    for a freed lock (bounded hand-off) and not yet awake.  Completing the call then releases the
    waiter's parker a second time: that must not raise (a ``_thread`` lock released twice, the
    parker of GIL builds), and the waiter must wake with the call's grant, once."""
    from sqlitefair._waitqueue import Waiter, WaitQueue, _locked_lock, _QueueParker

    class Call(Permit):
        pass

    lock = FairLock(barging=10.0)
    holder = lock.acquire()
    waiter = Waiter(_locked_lock() if parker == "thread-lock" else _QueueParker())
    waiter.permit = Call(0, 0.0)
    waiter.competes = True
    with lock._mutex:
        lock._queue.add_locked(waiter)
        assert lock._queue.nudge_locked()  # its parker released: a wake-up pending
        assert lock._queue.claim_head_locked(Call, 1) == [waiter]
    grant = object()
    WaitQueue.complete([(waiter, grant)])  # the parker's second release
    got = lock._queue.wait(waiter, 5.0, give_back=lock.release, statistics_locked=lock._statistics_locked)
    assert got is grant
    assert queued(lock) == 0 and lock.owner is holder
    lock.release(holder)
    assert not lock.locked()


def _deep_queue(lock: FairLock, waiters: int, head_age: float, head_ahead: int) -> list:  # type: ignore[type-arg]
    """Queue ``waiters`` competing waiters on the held ``lock`` (no threads: their parkers are only
    released), the oldest ``head_age`` seconds old and queued behind ``head_ahead`` others (since
    served), the others just arrived; return them in order."""
    from sqlitefair._waitqueue import Waiter, _locked_lock

    now = time.monotonic()
    made = []
    for k in range(waiters):
        waiter = Waiter(_locked_lock())
        waiter.permit = Permit(0, 0.0)
        waiter.competes = True
        waiter.since = now - head_age if k == 0 else now
        made.append(waiter)
    with lock._mutex:
        for waiter in made:
            lock._queue.add_locked(waiter)
    made[0].ahead = head_ahead
    return made


def _release_after_a_mean_turn(lock: FairLock, holder: Permit, turn: float) -> None:
    lock._turn = turn
    holder.since = time.monotonic() - turn  # held for one mean turn: the average stays about the same
    lock.release(holder)


@pytest.mark.parametrize(
    ("head_ahead", "head_age", "barges"),
    [
        (100, 0.005, True),  # 1.5 x (100 + 1) x 0.4 ms = 61 ms: at 5 ms it may still be overtaken
        (100, 0.2, False),  # ... older than that, it is handed the lock
        (0, 0.005, False),  # queued behind nobody (99 came after it): 1.5 x 1 x 0.4 ms, so the 1 ms bound
    ],
)
def test_a_waiter_that_queued_behind_others_may_be_overtaken_for_a_multiple_of_its_strict_fifo_wait(
    head_ahead: int, head_age: float, barges: bool
) -> None:
    """``FairLock(barging=..., depth=...)``: a waiter that queued behind N others would wait about
    N + 1 turns under strict hand-off anyway, so a release still frees the lock for whoever runs
    first (and wakes the oldest waiter to compete) while the oldest has waited less than ``depth``
    x (N + 1) x the mean turn, and hands it over once it has waited longer.  The waiters that
    queued after it do not count: a burst of newcomers must not lengthen its wait."""
    lock = FairLock(barging=0.001, depth=1.5)
    holder = lock.acquire()
    queue = _deep_queue(lock, 100, head_age, head_ahead)
    _release_after_a_mean_turn(lock, holder, 0.0004)
    head = queue[0]
    if barges:
        assert not lock.locked() and lock.owner is None, "the lock should be free for whoever runs first"
        assert head.nudged and head.grant is None and queued(lock) == 100
    else:
        assert lock.owner is head.permit and head.grant is head.permit, "the oldest waiter should hold the lock"
        assert queued(lock) == 99


def test_a_short_queue_keeps_the_barging_bound() -> None:
    """``depth`` only lengthens the bound: a waiter whose strict-FIFO wait is short may still be
    overtaken for ``barging`` seconds."""
    lock = FairLock(barging=0.05, depth=1.5)
    holder = lock.acquire()
    queue = _deep_queue(lock, 1, 0.01, 0)  # 1.5 x 1 x 1 ms is less than 10 ms, and 50 ms more
    _release_after_a_mean_turn(lock, holder, 0.001)
    assert not lock.locked() and queue[0].nudged and queue[0].grant is None


def test_one_long_turn_does_not_open_a_deep_queue_to_barging() -> None:
    """Each turn counts at most ``barging`` in the mean turn: a holder that kept the lock for
    seconds (a long transaction) must not make the bound seconds long for the waiters behind it."""
    lock = FairLock(barging=0.001, depth=1.5)
    holder = lock.acquire()
    holder.since = time.monotonic() - 10.0
    queue = _deep_queue(lock, 100, 0.05, 100)  # uncapped, the bound would be 1.5 x 101 x 1.25 s
    lock.release(holder)
    assert lock.owner is queue[0].permit, "the oldest waiter (50 ms) should be handed the lock"
    assert lock._turn <= 0.001 * 0.125 + 1e-12


def test_a_combiners_hold_counts_as_one_turn_per_call_it_ran() -> None:
    """A holder that ran queued ``write()`` calls for their callers (flat combining) held the lock
    for all of their turns: its hold is that many samples of the mean turn, not one long one,
    which would make every waiter's bound as many times too long."""
    from sqlitefair._waitqueue import Waiter, _locked_lock

    class Call(Permit):
        pass

    lock = FairLock(barging=0.05, depth=1.5)
    holder = lock.acquire()
    with lock._mutex:
        for _ in range(9):
            waiter = Waiter(_locked_lock())
            waiter.permit = Call(0, 0.0)
            lock._queue.add_locked(waiter)
    assert len(lock._claim_next(holder, Call, limit=9)) == 9  # the holder runs 9 calls: 10 turns
    _deep_queue(lock, 10, 0.0, 10)
    lock._turn = 0.004
    holder.since = time.monotonic() - 0.04  # 40 ms for 10 turns: 4 ms each (as one turn: 40 ms)
    lock.release(holder)
    assert lock._turn < 0.006, f"mean turn {lock._turn * 1e3:.1f} ms: the hold was taken for one turn"


def test_depth_must_be_finite_and_not_negative() -> None:
    for depth in (-1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="depth"):
            FairLock(barging=0.001, depth=depth)


def test_the_pool_and_the_django_backend_bound_barging_by_the_queue_depth(tmp_path: Path) -> None:
    """The writer lock of a pool (bounded hand-off) and of the Django backend's gate get
    ``BARGING_DEPTH``; strict hand-off never barges."""
    import sqlitefair
    from sqlitefair import _defaults

    with sqlitefair.connect(tmp_path / "a.db") as pool:
        lock = pool._state.writer.lock
        assert (lock._barging, lock._depth) == (_defaults.BARGING_WINDOW, _defaults.BARGING_DEPTH)
    with sqlitefair.connect(tmp_path / "b.db", handoff="strict") as pool:
        assert pool._state.writer.lock._barging is None
    pytest.importorskip("django")
    from sqlitefair.django.base import _Gate

    lock = _Gate("c", None, False).lock
    assert (lock._barging, lock._depth) == (_defaults.BARGING_WINDOW, _defaults.BARGING_DEPTH)
