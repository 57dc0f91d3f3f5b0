"""An exception at every line of the pool's acquire and release paths leaves the pool whole.

Deterministic, not by timing: a scenario (a transaction, a nested one, a
read, a ``write(fn)`` call with and without group commit; uncontended,
queued behind another thread, and handing over to a queued thread) runs once under ``sys.settrace`` to list the line events of
the pool's own code, then once per line event with an exception injected
exactly there:

* ``signal``: a real SIGINT raised at that line (``signal.raise_signal``), as
  a Ctrl-C or ``kill -INT`` would land: the pool's bookkeeping defers it,
  its waits take it at once;
* ``raise``: an exception raised at that line of the pool-level code
  (``_writer``, ``_readers``, ``_combining``), as a ``MemoryError`` or a warning turned into
  an error would be.  (The lock's few mutex-held lines rely on deferral and
  are covered by the ``signal`` mode.  A ``try:`` line is skipped here: it
  compiles to a ``NOP``, which can neither raise nor take a signal, and which
  CPython's exception table leaves uncovered, so an exception injected there
  would escape handlers that nothing real can escape.)

After every run: nobody holds or queues for the writer or a reader, a new
transaction and a read succeed at once, the scenario's block is in the
database all-or-nothing, and not at all if its body did not finish; no
deferred interrupt is left behind.
"""

from __future__ import annotations

import fcntl
import linecache
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import CodeType, FrameType
from typing import Any, Callable

import pytest

import sqlitefair
from sqlitefair import (
    _combining,
    _defaults,
    _fairlock,
    _interrupts,
    _procqueue,
    _readers,
    _slots,
    _wal,
    _waitqueue,
    _writer,
)

pytestmark = pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="signals are delivered to the main thread"
)

_PATH_MODULES = (_writer, _readers, _combining, _fairlock, _slots, _waitqueue, _wal, _procqueue)
_POOL_LEVEL = {Path(m.__file__).resolve() for m in (_writer, _readers, _combining)}  # type: ignore[arg-type]
_PATH_FILES = {Path(m.__file__).resolve() for m in _PATH_MODULES}  # type: ignore[arg-type]
_SKIP_NAMES = {"statistics", "_statistics_locked", "__repr__", "wait_stats", "queued_or_holding", "held_by_current_thread"}


class Injected(BaseException):
    """Stands for an exception that can arrive anywhere (MemoryError, a warning as error)."""


def _target(code: CodeType) -> bool:
    return Path(code.co_filename).resolve() in _PATH_FILES and code.co_name not in _SKIP_NAMES


class Tracer:
    """Lists the lines of the pool's code run on this thread; fires the injection at the first run of ``at``."""

    def __init__(self, mode: str | None, at: tuple[str, int] | None = None) -> None:
        self.mode = mode
        self.at = at
        self.count = 0
        self.seen: list[tuple[str, int]] = []
        self.fired: tuple[str, int] | None = None

    def __call__(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event == "call":
            return self.local if _target(frame.f_code) else None
        return None

    def local(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event != "line":
            return self.local
        where = (f"{Path(frame.f_code.co_filename).name}:{frame.f_code.co_qualname}", frame.f_lineno)
        self.count += 1
        if self.mode is None:
            self.seen.append(where)
        elif where == self.at and self.fired is None:
            if self.mode == "raise" and (
                Path(frame.f_code.co_filename).resolve() not in _POOL_LEVEL
                or _is_try_line(frame.f_code.co_filename, frame.f_lineno)
            ):
                return self.local  # lock internals (covered by the signal mode), and try: NOPs
            self.fired = where
            if self.mode == "signal":
                signal.raise_signal(signal.SIGINT)
            else:
                raise Injected(f"injected at {where}")
        return self.local


# -- scenarios: each runs one block k in the main thread, with helper threads where needed --------


def _insert_block(conn: Any, k: int, done: list[int]) -> None:
    conn.execute("insert into t(k, part) values (?, 'a')", (k,))
    conn.execute("insert into t(k, part) values (?, 'b')", (k,))
    done.append(k)


class Flag:
    """A lock-free event for the scenarios.  A KeyboardInterrupt can land at any bytecode of the main
    thread, and one landing inside ``threading.Event``'s own lock leaves that lock held (a CPython
    limitation, not the pool's), so the threads of a scenario poll plain flags instead."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = False

    def set(self) -> None:
        self.value = True

    def is_set(self) -> bool:
        return self.value

    def wait(self, limit: float) -> bool:
        deadline = time.monotonic() + limit
        while not self.value and time.monotonic() < deadline:
            time.sleep(0.0005)
        return self.value


def _wait_for(predicate: Callable[[], bool], stop: Flag, limit: float = 5.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate() and not stop.is_set() and time.monotonic() < deadline:
        time.sleep(0.0005)


def writer_alone(pool: sqlitefair.Pool, k: int, done: list[int], stop: Flag) -> list[threading.Thread]:
    with pool.transaction(timeout=5) as conn:
        _insert_block(conn, k, done)
    return []


def writer_nested(pool: sqlitefair.Pool, k: int, done: list[int], stop: Flag) -> list[threading.Thread]:
    with pool.transaction(timeout=5) as conn:
        conn.execute("insert into t(k, part) values (?, 'a')", (k,))
        with pool.transaction() as inner:
            inner.execute("insert into t(k, part) values (?, 'b')", (k,))
        done.append(k)
    return []


def _behind_a_holder(pool: sqlitefair.Pool, stop: Flag, run: Callable[[], object]) -> list[threading.Thread]:
    """``run()`` in this thread while another thread holds the writer until this one has queued."""
    held = Flag()

    def holder() -> None:
        with pool.transaction(timeout=5):
            held.set()
            _wait_for(lambda: pool.stats().writer_queue >= 1, stop)

    t = threading.Thread(target=holder)
    t.start()
    held.wait(5)
    try:
        run()
    finally:
        stop.set()
    return [t]


def writer_queued(pool: sqlitefair.Pool, k: int, done: list[int], stop: Flag) -> list[threading.Thread]:
    """Another thread holds the writer until this one has queued: the slow path and the hand-over."""

    def block() -> None:
        with pool.transaction(timeout=5) as conn:
            _insert_block(conn, k, done)

    return _behind_a_holder(pool, stop, block)


def writer_hands_over(pool: sqlitefair.Pool, k: int, done: list[int], stop: Flag) -> list[threading.Thread]:
    """This thread releases the writer while another thread waits for it."""
    entered = Flag()

    def follower() -> None:
        entered.wait(5)
        with pool.transaction(timeout=5):
            pass

    t = threading.Thread(target=follower)
    t.start()
    try:
        with pool.transaction(timeout=5) as conn:
            entered.set()
            _insert_block(conn, k, done)
            _wait_for(lambda: pool.stats().writer_queue >= 1, stop)
    finally:
        entered.set()
    return [t]


def writer_barges(pool: sqlitefair.Pool, k: int, done: list[int], stop: Flag) -> list[threading.Thread]:
    """As writer_hands_over, with handoff="bounded" and a bound no waiter reaches: the release frees
    the writer and wakes the waiter to compete for it (the other path of a release)."""
    return writer_hands_over(pool, k, done, stop)


def _someone_queued_across_processes(path: str) -> bool:
    """Whether a waiter holds a ticket slot of the cross-process queue (asked through a descriptor of our own)."""
    fd = os.open(_procqueue.side_file(path), os.O_RDWR)
    try:
        request = _procqueue._FLOCK.pack(fcntl.F_WRLCK, 0, _procqueue._SLOT_BASE, 8 * _procqueue.SLOTS, 0)
        answer = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, request)
        return _procqueue._FLOCK.unpack(answer)[0] != fcntl.F_UNLCK
    finally:
        os.close(fd)


_other_pools: dict[str, sqlitefair.Pool] = {}


def writer_behind_other_process(pool: sqlitefair.Pool, k: int, done: list[int], stop: Flag) -> list[threading.Thread]:
    """Another pool on the file (standing for another process) holds the writer's turn until this
    one waits in the cross-process queue: the ticket, the helper thread's wait, the grant."""
    if pool.path not in _other_pools:
        _other_pools[pool.path] = sqlitefair.connect(pool.path, readers=1, timeout=5)
    other = _other_pools[pool.path]
    held = Flag()

    def holder() -> None:
        with other.transaction(timeout=5):
            held.set()
            _wait_for(lambda: _someone_queued_across_processes(pool.path), stop)

    t = threading.Thread(target=holder)
    t.start()
    held.wait(5)
    try:
        with pool.transaction(timeout=5) as conn:
            _insert_block(conn, k, done)
    finally:
        stop.set()
    return [t]


def read_alone(pool: sqlitefair.Pool, k: int, done: list[int], stop: Flag) -> list[threading.Thread]:
    with pool.read(timeout=5) as conn:
        conn.execute("select count(*) from t").fetchone()
        done.append(k)
    return []


def read_queued(pool: sqlitefair.Pool, k: int, done: list[int], stop: Flag) -> list[threading.Thread]:
    held = Flag()

    def holder() -> None:
        with pool.read(timeout=5):
            held.set()
            _wait_for(lambda: pool.stats().reader_queue >= 1, stop)

    t = threading.Thread(target=holder)
    t.start()
    held.wait(5)
    try:
        with pool.read(timeout=5) as conn:
            conn.execute("select count(*) from t").fetchone()
            done.append(k)
    finally:
        stop.set()
    return [t]


def read_hands_over(pool: sqlitefair.Pool, k: int, done: list[int], stop: Flag) -> list[threading.Thread]:
    entered = Flag()

    def follower() -> None:
        entered.wait(5)
        with pool.read(timeout=5):
            pass

    t = threading.Thread(target=follower)
    t.start()
    try:
        with pool.read(timeout=5) as conn:
            entered.set()
            conn.execute("select count(*) from t").fetchone()
            done.append(k)
            _wait_for(lambda: pool.stats().reader_queue >= 1, stop)
    finally:
        entered.set()
    return [t]


def writer_checkpoints(pool: sqlitefair.Pool, k: int, done: list[int], stop: Flag) -> list[threading.Thread]:
    """As writer_alone, with the WAL over its limit: the commit pauses the readers and checkpoints (see _run)."""
    return writer_alone(pool, k, done, stop)


def writer_first_use(pool: sqlitefair.Pool, k: int, done: list[int], stop: Flag) -> list[threading.Thread]:
    """As writer_alone, on a pool whose writer connection is not open yet (see _run)."""
    return writer_alone(pool, k, done, stop)


def read_first_use(pool: sqlitefair.Pool, k: int, done: list[int], stop: Flag) -> list[threading.Thread]:
    """As read_alone, on a pool whose reader connection is not open yet and no slot is this thread's own."""
    return read_alone(pool, k, done, stop)


def _write_block(conn: Any, k: int, done: list[int]) -> int:
    _insert_block(conn, k, done)
    return k


def write_group(pool: sqlitefair.Pool, k: int, done: list[int], stop: Flag) -> list[threading.Thread]:
    """``pool.write(fn)`` with group commit: the call queues, is granted the writer, runs in a
    savepoint of a group's transaction (the main thread runs its own call only)."""
    assert pool.write(_write_block, k, done, timeout=5) == k
    return []


def write_group_queued(pool: sqlitefair.Pool, k: int, done: list[int], stop: Flag) -> list[threading.Thread]:
    """As write_group, queued behind a transaction of another thread: the call's wait, its grant."""

    def call() -> None:
        assert pool.write(_write_block, k, done, timeout=5) == k

    return _behind_a_holder(pool, stop, call)


def write_group_hands_over(pool: sqlitefair.Pool, k: int, done: list[int], stop: Flag) -> list[threading.Thread]:
    """As write_group, while another thread's write() call queues behind it: the hand-over."""
    entered = Flag()

    def follower() -> None:
        entered.wait(5)
        pool.write(lambda conn: None, timeout=5)

    def call(conn: Any) -> int:
        entered.set()
        _insert_block(conn, k, done)
        _wait_for(lambda: pool.stats().writer_queue >= 1, stop)
        return k

    t = threading.Thread(target=follower)
    t.start()
    try:
        assert pool.write(call, timeout=5) == k
    finally:
        entered.set()
    return [t]


def write_combining(pool: sqlitefair.Pool, k: int, done: list[int], stop: Flag) -> list[threading.Thread]:
    """As write_group_queued, without group commit, on the combining path (forced on GIL builds,
    see _run): the call runs in a lent transaction of its own."""
    return write_group_queued(pool, k, done, stop)


_WRITE_SCENARIOS = (write_group, write_group_queued, write_group_hands_over, write_combining)


def _forget_connections(pool: sqlitefair.Pool) -> None:
    """Close the pool's idle connections, so that the next checkout opens one (its first-use path)."""
    state = pool._state
    if state.writer.conn is not None:
        state.writer.drop(state.writer.conn)
    state.readers.close_idle()
    state.readers.slots._home.slot = None


SCENARIOS = [
    writer_alone, writer_checkpoints, writer_first_use, writer_nested, writer_queued, writer_hands_over,
    writer_barges, writer_behind_other_process, read_alone, read_first_use, read_queued, read_hands_over,
    *_WRITE_SCENARIOS,
]


def _run(pool: sqlitefair.Pool, scenario: Any, k: int, tracer: Tracer) -> tuple[list[int], BaseException | None]:
    done: list[int] = []
    stop = Flag()
    threads: list[threading.Thread] = []
    error: BaseException | None = None
    if scenario in (writer_first_use, read_first_use):
        _forget_connections(pool)
    # The WAL's size is looked at after a commit at most every 0.5 s: never here, except in the
    # scenario that makes every commit checkpoint, so that each run takes the same lines.
    pool._wal.due = 0.0 if scenario is writer_checkpoints else float("inf")
    pool._wal._limit = 0
    sys.settrace(tracer)
    try:
        threads = scenario(pool, k, done, stop)
        sys.settrace(None)
        deadline = time.monotonic() + 2
        while _interrupts._deferred and time.monotonic() < deadline:  # a deferred SIGINT is resent in ~1 ms
            time.sleep(0.0005)
    except (KeyboardInterrupt, Injected) as exc:
        error = exc
    finally:
        sys.settrace(None)
        stop.set()
    for t in threads:
        t.join(10)
        assert not t.is_alive(), "a helper thread hung"
    # Threads the scenario started but did not return (it raised): give them time to finish.
    for t in threading.enumerate():
        if t is not threading.current_thread() and not t.daemon and t.name.startswith("Thread-"):
            t.join(10)
    return done, error


def _assert_whole(pool: sqlitefair.Pool, probe: Any, k: int, done: list[int], where: object) -> None:
    assert not _interrupts._deferred, f"{where}: a deferred KeyboardInterrupt was left behind"
    assert sys.getprofile() is None, f"{where}: the delivery hook was left installed"
    stats = pool.stats()
    deadline = time.monotonic() + 1
    while stats.writer_in_use and time.monotonic() < deadline:  # the turn keeper may hold it an instant
        time.sleep(0.001)
        stats = pool.stats()
    assert not stats.writer_in_use and stats.writer_queue == 0, f"{where}: writer left held/queued: {stats}"
    lock = pool._state.writer.lock
    assert lock._lender is None and lock._borrower is None, f"{where}: the writer was left lent"
    assert stats.readers_in_use == 0 and stats.reader_queue == 0, f"{where}: reader left held/queued: {stats}"
    with pool.transaction(timeout=1) as conn:
        conn.execute("insert into t(k, part) values (?, 'probe')", (k,))
    with pool.read(timeout=1) as conn:
        parts = sorted(r[0] for r in conn.execute("select part from t where k = ? and part != 'probe'", (k,)))
    assert parts in ([], ["a", "b"]), f"{where}: half a block committed: {parts}"
    if k not in done:
        assert parts == [], f"{where}: the block's body never finished, yet its rows are committed"
    # Nobody left SQLite's write lock taken, nor the cross-process turn (a waiter that gave up
    # leaves the queue as soon as its helper's wait ends: allow it a moment).
    probe.execute("BEGIN IMMEDIATE")
    probe.execute("ROLLBACK")
    deadline = time.monotonic() + 2
    while True:
        fd = os.open(_procqueue.side_file(pool.path), os.O_RDWR)
        try:
            free = _procqueue._try_take(fd)
        finally:
            os.close(fd)
        if free or time.monotonic() > deadline:
            break
        time.sleep(0.005)
    assert free, f"{where}: the cross-process turn was left taken"


def _try_lines(seen: list[tuple[str, int]] | set[tuple[str, int]]) -> set[tuple[str, int]]:
    files = {Path(m.__file__).name: m.__file__ for m in _PATH_MODULES}  # type: ignore[misc]
    return {w for w in seen if _is_try_line(files[w[0].split(":")[0]], w[1])}


def _is_try_line(filename: str, lineno: int) -> bool:
    return linecache.getline(filename, lineno).split("#")[0].strip() == "try:"


@pytest.mark.parametrize("mode", ["signal", "raise"])
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_an_exception_at_every_line_leaves_the_pool_whole(
    tmp_path: Path, scenario: Any, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    path = tmp_path / "app.db"
    # Every transaction takes the cross-process turn and gives it back (no turn kept for the next),
    # so that each run takes the same lines.
    monkeypatch.setattr(_defaults, "PROCESS_TURN", 0.0)
    # Which way a release goes must not depend on timing: strict hand-off, or (writer_barges) a
    # barging bound so long that the waiter is always woken to compete.
    if scenario is writer_barges:
        monkeypatch.setattr(_defaults, "BARGING_WINDOW", 3600.0)
    pool = sqlitefair.connect(
        path,
        readers=1,
        timeout=5,
        handoff="bounded" if scenario is writer_barges else "strict",
        group_commit=scenario in _WRITE_SCENARIOS and scenario is not write_combining,
    )
    if scenario is write_combining:
        monkeypatch.setattr(_combining, "combines", lambda pool: True)
    assert _interrupts.signal_protection_active(), "the deferring SIGINT handler is not installed"
    with pool.transaction() as conn:
        conn.execute("create table t(k, part)")
    probe = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        _run(pool, scenario, -1, Tracer(None))  # warm-up: connections opened, home slot set
        clean = Tracer(None)
        done, error = _run(pool, scenario, 0, clean)
        assert error is None and done == [0]
        seen = set(clean.seen)
        assert len(seen) > 10, f"the tracer saw only {len(seen)} lines"
        fired: set[tuple[str, int]] = set()
        raised = 0
        k = 0
        for at in sorted(seen):
            for _attempt in range(3):  # a line run only under some timing (a wake-up) may need another try
                k += 1
                tracer = Tracer(mode, at)
                done, error = _run(pool, scenario, k, tracer)
                _assert_whole(pool, probe, k, done, f"{scenario.__name__}, {mode} at {at}")
                if tracer.fired is not None:
                    fired.add(tracer.fired)
                    raised += error is not None
                    break
                if mode == "raise" and not at[0].startswith(("_writer.py", "_readers.py")):
                    break
        if mode == "signal":
            missed = seen - fired
            assert not missed, f"lines never injected at: {sorted(missed)}"
        else:
            pool_level = {
                w for w in seen if w[0].startswith(("_writer.py", "_readers.py")) and w not in _try_lines(seen)
            }
            missed = pool_level - fired
            assert not missed, f"pool-level lines never injected at: {sorted(missed)}"
        assert raised > 0, "no injection ever surfaced as an exception: the test proves nothing"
    finally:
        probe.close()
        pool.close()
        other = _other_pools.pop(pool.path, None)
        if other is not None:
            other.close()
