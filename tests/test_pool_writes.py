"""Writes: FIFO queue, BEGIN IMMEDIATE, commit/rollback, savepoints, no lost writes, clear timeouts."""

from __future__ import annotations

import multiprocessing
import random
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from _helpers import Worker, queued, wait_until
from _workers import hold_write_lock, write_rows
from conftest import STRESS, trace_statements

import sqlitefair


def rows(path: Path, sql: str = "select v from t order by id") -> list[object]:
    """Read from an independent plain connection: what is really committed."""
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute(sql)]
    finally:
        conn.close()


def test_commit_and_rollback(pool: sqlitefair.Pool, committed: Callable[..., list[object]]) -> None:
    with pool.transaction() as conn:
        conn.execute("insert into t(v) values ('kept')")
    with pytest.raises(ZeroDivisionError):
        with pool.transaction() as conn:
            conn.execute("insert into t(v) values ('dropped')")
            1 / 0
    assert committed() == ["kept"]


def test_sql_error_rolls_back_and_connection_is_reusable(pool: sqlitefair.Pool, committed: Callable[..., list[object]]) -> None:
    with pytest.raises(pool.backend.error, match="no such table"):
        with pool.transaction() as conn:
            conn.execute("insert into t(v) values ('dropped')")
            conn.execute("insert into missing values (1)")
    with pool.transaction() as conn:
        conn.execute("insert into t(v) values ('after')")
    assert committed() == ["after"]


def test_keyboard_interrupt_rolls_back_and_releases_the_writer(pool: sqlitefair.Pool, committed: Callable[..., list[object]]) -> None:
    with pytest.raises(KeyboardInterrupt):
        with pool.transaction() as conn:
            conn.execute("insert into t(v) values ('dropped')")
            raise KeyboardInterrupt
    with pool.transaction(timeout=1) as conn:
        conn.execute("insert into t(v) values ('after')")
    assert committed() == ["after"]


def test_savepoint_nesting_rolls_back_only_the_inner_part(pool: sqlitefair.Pool, committed: Callable[..., list[object]]) -> None:
    with pool.transaction() as outer:
        outer.execute("insert into t(v) values ('outer-1')")
        with pool.transaction() as inner:
            assert inner is outer
            inner.execute("insert into t(v) values ('inner-kept')")
        with pytest.raises(ValueError):
            with pool.transaction() as inner:
                inner.execute("insert into t(v) values ('inner-dropped')")
                with pool.transaction() as innermost:
                    innermost.execute("insert into t(v) values ('innermost-dropped')")
                raise ValueError
        outer.execute("insert into t(v) values ('outer-2')")
        # Nothing is visible to others before the outer COMMIT.
        assert committed() == []
    assert committed() == ["outer-1", "inner-kept", "outer-2"]


def test_error_in_outer_after_nested_success_rolls_everything_back(pool: sqlitefair.Pool, committed: Callable[..., list[object]]) -> None:
    with pytest.raises(RuntimeError):
        with pool.transaction():
            with pool.transaction() as inner:
                inner.execute("insert into t(v) values ('x')")
            raise RuntimeError
    assert committed() == []


def test_every_write_transaction_begins_immediate(make_pool: Callable[..., sqlitefair.Pool]) -> None:
    """Trace every statement the writer runs: each BEGIN is BEGIN IMMEDIATE and every write is inside one."""
    statements: list[str] = []
    lock = threading.Lock()

    def trace(conn: object, role: str) -> None:
        def record(sql: str) -> None:
            with lock:
                statements.append(sql.strip())

        trace_statements(conn, record)

    pool = make_pool(readers=2, on_connect=trace)
    with pool.transaction() as conn:
        conn.execute("create table t(id integer primary key, v)")

    def work(tag: int) -> None:
        for i in range(20):
            with pool.transaction() as conn:
                conn.execute("select count(*) from t").fetchone()
                conn.execute("insert into t(v) values (?)", (tag,))
                if i % 5 == 0:
                    with pool.transaction() as inner:
                        inner.execute("update t set v = v where id = 1")

    workers = [Worker(work, n) for n in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.finish()

    begins = [s for s in statements if s.upper().startswith("BEGIN")]
    assert len(begins) >= 81
    assert {s.upper() for s in begins} == {"BEGIN IMMEDIATE"}
    in_tx = False
    for sql in statements:
        word = sql.split()[0].upper()
        if word == "BEGIN":
            assert not in_tx, "BEGIN inside an open transaction"
            in_tx = True
        elif word in ("COMMIT", "ROLLBACK", "END") and "TO" not in sql.upper():
            in_tx = False
        elif word in ("INSERT", "UPDATE", "DELETE", "CREATE", "SAVEPOINT", "RELEASE"):
            assert in_tx, f"{sql!r} ran outside BEGIN IMMEDIATE"


@pytest.mark.parametrize("seed", range(3))
def test_writers_are_served_in_arrival_order(
    pool: sqlitefair.Pool, committed: Callable[..., list[object]], seed: int
) -> None:
    """Threads queue for the writer in a known random order; their rows must land in that order."""
    order = list(range(10))
    random.Random(seed).shuffle(order)

    def write(tag: int) -> None:
        with pool.transaction() as conn:
            conn.execute("insert into t(v) values (?)", (tag,))

    workers = []
    with pool.transaction():
        for position, tag in enumerate(order):
            w = Worker(write, tag, name=f"writer-{tag}")
            w.start()
            workers.append(w)
            wait_until(lambda: queued(pool._state.writer.lock) == position + 1, what=f"writer {tag} to queue")
    for w in workers:
        w.finish()
    assert committed() == order


@pytest.mark.parametrize("handoff", ["strict", "bounded"])
def test_releasing_thread_cannot_barge_ahead_of_a_waiter(
    make_pool: Callable[..., sqlitefair.Pool], committed: Callable[..., list[object]], handoff: str
) -> None:
    """Strict: never.  Bounded: not once the waiter has waited the bound (1 ms); this one waited 20 ms."""
    pool = make_pool(readers=2, timeout=10, handoff=handoff)
    with pool.transaction() as conn:
        conn.execute("create table t(id integer primary key, v)")

    def write_waiter() -> None:
        with pool.transaction() as conn:
            conn.execute("insert into t(v) values ('waiter')")

    with pool.transaction() as conn:
        conn.execute("insert into t(v) values ('first')")
        w = Worker(write_waiter)
        w.start()
        wait_until(lambda: pool.stats().writer_queue == 1)
        time.sleep(0.02)
    with pool.transaction() as conn:  # queues behind the waiter, who already owns the writer
        conn.execute("insert into t(v) values ('again')")
    w.finish()
    assert committed() == ["first", "waiter", "again"]


def test_no_lost_or_duplicated_writes_across_threads(pool: sqlitefair.Pool, committed: Callable[..., list[object]]) -> None:
    threads = 16 * STRESS
    barrier = threading.Barrier(threads)

    def work(tag: int) -> None:
        barrier.wait(10)
        for i in range(40):
            with pool.transaction() as conn:
                (n,) = conn.execute("select count(*) from t").fetchone()
                conn.execute("insert into t(v) values (?)", (f"{tag}-{i}:{n}",))

    workers = [Worker(work, n) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.finish()
    values = committed()
    assert len(values) == threads * 40
    assert len({v.split(":")[0] for v in values}) == threads * 40  # type: ignore[union-attr]
    # Each transaction saw exactly the rows committed before it: writes were serialised.
    assert [int(v.split(":")[1]) for v in values] == list(range(threads * 40))  # type: ignore[union-attr]
    stats = pool.stats()
    assert stats.writes.count >= threads * 40 and stats.write_timeouts == 0


def test_no_lost_or_duplicated_writes_across_processes(db_path: Path) -> None:
    with sqlitefair.connect(db_path) as pool:
        with pool.transaction() as conn:
            conn.execute("create table log(id integer primary key, tag text unique, seen int)")
    processes, threads, per_thread = 3, 4, 25
    ctx = multiprocessing.get_context("spawn")
    start_at = time.time() + 2.0
    with ctx.Pool(processes) as mp:
        results = [
            mp.apply_async(write_rows, (str(db_path), p, threads, per_thread, start_at)) for p in range(processes)
        ]
        errors = [e for r in results for e in r.get(timeout=120)]
    assert errors == []
    tags = rows(db_path, "select tag from log order by id")
    assert len(tags) == processes * threads * per_thread
    assert len(set(tags)) == len(tags)
    seen = rows(db_path, "select seen from log order by id")
    assert seen == list(range(len(seen))), "a transaction did not see all rows committed before it"


def test_writer_timeout_names_the_holder(pool: sqlitefair.Pool) -> None:
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with pool.transaction():
            held.set()
            release.wait(20)

    holder = Worker(hold, name="slow-writer")
    holder.start()
    assert held.wait(10)
    try:
        with pytest.raises(sqlitefair.PoolTimeout) as info:
            with pool.transaction(timeout=0.2):
                pass
    finally:
        release.set()
        holder.finish()
    err = info.value
    assert isinstance(err, sqlite3.OperationalError) and isinstance(err, TimeoutError)
    assert isinstance(err, pool.backend.error), "catchable as the backend's own error too"
    assert err.waiting_for == "writer"
    assert err.waited is not None and err.waited >= 0.2
    assert err.timeout == 0.2
    assert err.holder == "slow-writer" and err.held_for is not None and err.held_for >= 0.2
    assert err.queued == 0
    message = str(err)
    assert "slow-writer" in message and "0.2" in message and "writer connection" in message
    assert pool.stats().write_timeouts == 1


def test_busy_timeout_when_another_process_holds_the_lock(
    pool: sqlitefair.Pool, db_path: Path, tmp_path: Path, committed: Callable[..., list[object]]
) -> None:
    ready = tmp_path / "ready"
    ctx = multiprocessing.get_context("spawn")
    other = ctx.Process(target=hold_write_lock, args=(str(db_path), 1.5, str(ready)))
    other.start()
    try:
        wait_until(ready.exists, timeout=30, what="the other process to take the lock")
        with pytest.raises(sqlitefair.PoolTimeout) as info:
            with pool.transaction(timeout=0.3):
                pass
        err = info.value
        assert err.waiting_for == "write lock"
        assert err.busy_retries is not None and err.busy_retries > 10
        assert err.waited is not None and 0.3 <= err.waited < 1.5
        assert "another" in str(err) and "process" in str(err)
        # Within the deadline, the pool waits the other process out.
        with pool.transaction(timeout=30) as conn:
            conn.execute("insert into t(v) values ('after')")
    finally:
        other.join(30)
    assert other.exitcode == 0
    assert committed() == ["after"]
    stats = pool.stats()
    assert stats.busy_retries > 10 and stats.busy_wait > 0


@pytest.mark.parametrize(
    "policy", [sqlitefair.FairRetry(), sqlitefair.ConstantRetry(0.001), sqlitefair.SQLiteBusyTimeout()]
)
def test_every_busy_policy_waits_out_another_connection(
    make_pool: Callable[..., sqlitefair.Pool],
    other_connection: Callable[[], Any],
    committed: Callable[..., list[object]],
    policy: sqlitefair.BusyPolicy,
) -> None:
    pool = make_pool(busy_policy=policy, timeout=10)
    with pool.transaction() as conn:
        conn.execute("create table t(v)")
    other = other_connection()
    other.execute("BEGIN IMMEDIATE")
    timer = threading.Timer(0.2, lambda: other.execute("COMMIT"))
    timer.start()
    try:
        with pool.transaction() as conn:
            conn.execute("insert into t values (1)")
    finally:
        timer.join()
    assert committed("select v from t") == [1]
