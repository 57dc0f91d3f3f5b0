"""Ownership of a checkout: who may end a block, in which order, and what is left when it ends badly.

A ``with`` block belongs to the thread (or asyncio task) that entered it.  A
block ended on another thread, blocks of one transaction nested out of
last-in-first-out order, a connection closed inside its block, a database
file deleted under the pool, an error raised while the writer was being
handed out: each of these must end with either a committed block or a
clear error and nothing committed, and must leave the pool whole (the
writer free, nobody skipping the queue, no connection left open).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import sqlite3
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator, TypeVar

import pytest
from _helpers import Worker
from conftest import open_plain

import sqlitefair
import sqlitefair.aio

T = TypeVar("T")


class _Absent(Exception):
    """Stands in for an exception class this version of sqlitefair does not have (never raised)."""


NestingError: type[BaseException] = getattr(sqlitefair, "NestingError", _Absent)
TransactionControlError: type[BaseException] = getattr(sqlitefair, "TransactionControlError", _Absent)

#: How long a test waits for a thread or a future before calling it stuck.
LIMIT = 10.0


@pytest.fixture
def make(db_path: Path, backend: str) -> Iterator[Callable[..., sqlitefair.Pool]]:
    """Pools on ``db_path`` with a table ``t(id integer primary key, v)``; closed at teardown."""
    pools: list[sqlitefair.Pool] = []

    def factory(path: Path = db_path, **kwargs: Any) -> sqlitefair.Pool:
        kwargs.setdefault("backend", backend)
        kwargs.setdefault("timeout", LIMIT)
        p = sqlitefair.connect(path, **kwargs)
        pools.append(p)
        with p.transaction() as conn:
            conn.execute("create table if not exists t(id integer primary key, v)")
        return p

    yield factory
    for p in pools:
        p.close(timeout=2)


def rows(path: Path, backend: str) -> list[Any]:
    """The committed values of ``t``, read by an independent plain connection."""
    conn = open_plain(path, backend)
    try:
        return [row[0] for row in conn.execute("select v from t order by id").fetchall()]
    finally:
        conn.close()


def writer_free(pool: sqlitefair.Pool) -> bool:
    return not pool.stats().writer_in_use


class HeldWriter:
    """A thread holding the writer (inside a transaction) until release()."""

    def __init__(self, pool: sqlitefair.Pool) -> None:
        self._go = threading.Event()
        self._holding = threading.Event()

        def hold() -> None:
            with pool.transaction() as conn:
                conn.execute("insert into t(v) values ('C')")
                self._holding.set()
                self._go.wait(LIMIT)

        self.thread = Worker(hold, name="holder-C")
        self.thread.start()
        assert self._holding.wait(LIMIT), "the holder never got the writer"

    def release(self) -> None:
        self._go.set()
        self.thread.finish(LIMIT)


# -- 1. a block entered on one thread and ended on another ------------------------------

MOVES = ["resume", "statement", "close"]


def _block_on_a(pool: sqlitefair.Pool, how: str) -> Iterator[Any]:
    with pool.transaction() as conn:
        conn.execute("insert into t(v) values ('on A')")
        yield conn
        if how == "statement":
            conn.execute("insert into t(v) values ('on B')")


def _finish_on_b(gen: Iterator[Any], how: str) -> BaseException | None:
    """Resume (or close) ``gen`` on the calling thread; the exception it ended with, if any."""
    try:
        if how == "close":
            gen.close()  # type: ignore[attr-defined]
            return None
        next(gen)
    except StopIteration:
        return None
    except BaseException as exc:  # noqa: BLE001 - returned for the assertions
        return exc
    raise AssertionError("the generator yielded twice")


def move_block(pool: sqlitefair.Pool, db_path: Path, backend: str, how: str, executor: ThreadPoolExecutor) -> Any:
    """Enter a transaction on this thread (A), end it on the executor's thread (B); check (a).

    Returns the transaction's connection.
    """
    gen = _block_on_a(pool, how)
    conn = next(gen)
    try:
        outcome = executor.submit(_finish_on_b, gen, how).result(LIMIT)
    finally:
        with contextlib.suppress(Exception):  # already finished, unless something went wrong
            gen.close()  # type: ignore[attr-defined]
    if how == "resume":
        assert outcome is None, f"ending the block on thread B failed: {outcome!r}"
        assert rows(db_path, backend) == ["on A"]  # committed on B
    elif how == "statement":
        assert isinstance(outcome, sqlitefair.NotCheckedOut), outcome
        assert rows(db_path, backend) == []  # rolled back, nothing of it committed
    else:
        assert outcome is None, f"closing the block on thread B failed: {outcome!r}"
        assert rows(db_path, backend) == []  # GeneratorExit: rolled back
    return conn


@pytest.fixture
def thread_b() -> Iterator[ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(1, thread_name_prefix="thread-B")
    yield executor
    executor.shutdown(wait=False)


@pytest.mark.parametrize("how", MOVES)
def test_block_ended_on_another_thread_frees_the_writer_for_both_threads(
    make: Callable[..., sqlitefair.Pool], db_path: Path, backend: str, how: str, thread_b: ThreadPoolExecutor
) -> None:
    pool = make()
    move_block(pool, db_path, backend, how, thread_b)
    assert writer_free(pool)
    before = rows(db_path, backend)

    def write(value: str) -> None:
        with pool.transaction(timeout=1) as conn:
            conn.execute("insert into t(v) values (?)", (value,))

    write("A again")  # thread A: a transaction of its own, not a savepoint of the ended one
    thread_b.submit(write, "B again").result(LIMIT)
    assert rows(db_path, backend) == before + ["A again", "B again"]
    assert writer_free(pool)
    with pool.read() as conn:  # and A reads through a reader
        assert [r[0] for r in conn.execute("select v from t order by id")] == before + ["A again", "B again"]
    assert pool.stats().readers_in_use == 0


@pytest.mark.parametrize("how", MOVES)
def test_after_a_block_ended_on_another_thread_reads_on_the_first_get_a_reader(
    make: Callable[..., sqlitefair.Pool], db_path: Path, backend: str, how: str, thread_b: ThreadPoolExecutor
) -> None:
    pool = make()
    writer = move_block(pool, db_path, backend, how, thread_b)
    before = rows(db_path, backend)
    with pool.read(timeout=1) as conn:
        assert conn is not writer, "read() on thread A still handed out the writer of the ended transaction"
        with pytest.raises(pool.backend.error, match="readonly"):
            conn.execute("insert into t(v) values ('through a reader')")
        assert [r[0] for r in conn.execute("select v from t order by id")] == before
    assert pool.stats().readers_in_use == 0
    assert rows(db_path, backend) == before
    assert writer_free(pool)


@pytest.mark.parametrize("how", MOVES)
def test_after_a_block_ended_on_another_thread_the_first_thread_queues_for_the_writer(
    make: Callable[..., sqlitefair.Pool], db_path: Path, backend: str, how: str, thread_b: ThreadPoolExecutor
) -> None:
    pool = make()
    move_block(pool, db_path, backend, how, thread_b)
    before = rows(db_path, backend)
    holder = HeldWriter(pool)
    try:
        start = time.monotonic()
        entered: list[Any] = []
        with pytest.raises(sqlitefair.PoolTimeout):
            with pool.transaction(timeout=0.2) as conn:  # must not slip into C's transaction as a savepoint
                entered.append(conn)
        assert not entered
        assert time.monotonic() - start >= 0.15
    finally:
        holder.release()
    assert rows(db_path, backend) == before + ["C"]
    assert writer_free(pool)
    with pool.transaction(timeout=1) as conn:
        conn.execute("insert into t(v) values ('A after C')")
    assert rows(db_path, backend) == before + ["C", "A after C"]


# -- 2. nested blocks ended out of order on one thread ------------------------------------


def _nested(pool: sqlitefair.Pool, value: str) -> Iterator[None]:
    with pool.transaction() as conn:
        conn.execute("insert into t(v) values (?)", (value,))
        yield


def test_nested_blocks_ended_out_of_order_are_refused_and_nothing_commits(
    make: Callable[..., sqlitefair.Pool], db_path: Path, backend: str
) -> None:
    pool = make()
    x = _nested(pool, "x")
    y = _nested(pool, "y")
    try:
        with pytest.raises((NestingError, TransactionControlError)) as outer_error:
            with pool.transaction() as conn:
                conn.execute("insert into t(v) values ('outer')")
                next(x)
                next(y)
                with pytest.raises(NestingError):
                    next(x, None)  # X ends while Y, entered after it, is still open
                with contextlib.suppress(sqlitefair.SqlitefairError):
                    next(y, None)
    finally:
        for gen in (y, x):  # ended already, unless something went wrong: not left to the garbage collector
            with contextlib.suppress(Exception):
                gen.close()  # type: ignore[attr-defined]
    assert isinstance(outer_error.value, sqlitefair.SqlitefairError)
    assert rows(db_path, backend) == []  # neither the outer transaction nor any part of it
    assert writer_free(pool)
    with pool.transaction(timeout=1) as conn:
        conn.execute("insert into t(v) values ('after')")
        with pool.transaction() as inner:
            inner.execute("insert into t(v) values ('nested after')")
    assert rows(db_path, backend) == ["after", "nested after"]
    with pool.read(timeout=1) as conn:
        with pytest.raises(pool.backend.error, match="readonly"):
            conn.execute("insert into t(v) values ('no')")


# -- 3. sibling asyncio tasks nested in one async transaction -----------------------------


def run(coro: Awaitable[T], limit: float = 60.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, limit)

    return asyncio.run(bounded())


class Boom(Exception):
    pass


@pytest.fixture
def apool(db_path: Path, backend: str) -> Iterator[sqlitefair.aio.AsyncPool]:
    p = sqlitefair.aio.connect(db_path, readers=2, timeout=LIMIT, backend=backend)
    with p.pool.transaction() as conn:
        conn.execute("create table t(id integer primary key, v)")
    yield p
    if not p.closed:
        asyncio.run(p.close(timeout=2))


async def _sibling(apool: sqlitefair.aio.AsyncPool, name: str, fail: bool, pause: float = 0) -> str:
    async with apool.transaction() as c:
        await c.execute("insert into t(v) values (?)", (f"{name}1",))
        await asyncio.sleep(pause)
        await c.execute("insert into t(v) values (?)", (f"{name}2",))
        if fail:
            raise Boom(name)
    return name


@pytest.mark.parametrize("b_pause", [0, 0.05], ids=["b-at-once", "b-later"])
@pytest.mark.parametrize("failing", ["a", "b"])
def test_sibling_tasks_do_not_interleave_savepoints(
    apool: sqlitefair.aio.AsyncPool, db_path: Path, backend: str, failing: str, b_pause: float
) -> None:
    """Two tasks each nest a block in the task that started them; "b" sometimes pauses longer, so that
    its second statement comes after "a" ended (interleaved savepoints would split it)."""

    async def main() -> list[Any]:
        async with apool.transaction() as outer:
            await outer.execute("insert into t(v) values ('outer1')")
            results = await asyncio.gather(
                _sibling(apool, "a", failing == "a"),
                _sibling(apool, "b", failing == "b", b_pause),
                return_exceptions=True,
            )
            await outer.execute("insert into t(v) values ('outer2')")
            # One after the other in the same task, nested blocks still work.
            async with apool.transaction() as c:
                await c.execute("insert into t(v) values ('seq1')")
            with contextlib.suppress(Boom):
                async with apool.transaction() as c:
                    await c.execute("insert into t(v) values ('seq rolled back')")
                    raise Boom("seq")
            async with apool.transaction() as c:
                await c.execute("insert into t(v) values ('seq2')")
        return list(results)

    results = run(main())
    completed = [name for name, result in zip("ab", results) if result == name]
    expected = ["outer1", "outer2", "seq1", "seq2"] + [f"{name}{i}" for name in completed for i in (1, 2)]
    assert sorted(rows(db_path, backend)) == sorted(expected), results  # no half of a sibling
    refused = [r for r in results if isinstance(r, NestingError)]
    assert len(refused) == 1, f"expected exactly one sibling refused with NestingError, got {results!r}"
    for name, result in zip("ab", results):
        assert result == name or isinstance(result, (Boom, NestingError)), (name, result)
    assert writer_free(apool.pool)
    assert apool.in_use == 0


def test_sequential_nested_async_blocks_commit(apool: sqlitefair.aio.AsyncPool, db_path: Path, backend: str) -> None:
    """Siblings that run one after the other inside one transaction are fine; a concurrent one is refused."""

    async def main() -> list[Any]:
        async with apool.transaction() as outer:
            await outer.execute("insert into t(v) values ('outer')")
            first = await asyncio.create_task(_sibling(apool, "a", False))
            second = await asyncio.gather(_sibling(apool, "b", True), return_exceptions=True)
            third = await asyncio.create_task(_sibling(apool, "c", False))
            # Started while "d" is inside its block: refused, "d" unharmed.
            results = await asyncio.gather(_sibling(apool, "d", False), _sibling(apool, "e", False), return_exceptions=True)
        return [first, *second, third, *results]

    results = run(main())
    assert results[:2] == ["a", results[1]] and isinstance(results[1], Boom)
    assert results[2] == "c"
    done = [r for r in results[3:] if isinstance(r, str)]
    assert len(done) == 1 and sum(isinstance(r, NestingError) for r in results[3:]) == 1, results
    expected = ["outer", "a1", "a2", "c1", "c2", f"{done[0]}1", f"{done[0]}2"]
    assert sorted(rows(db_path, backend)) == sorted(expected)
    assert writer_free(apool.pool)


# -- 4. conn.close() inside a write block ------------------------------------------------


def _closed_errors(backend: str) -> tuple[type[BaseException], ...]:
    errors: tuple[type[BaseException], ...] = (sqlitefair.SqlitefairError, sqlite3.ProgrammingError)
    if backend == "apsw":
        import apsw

        errors += (apsw.ConnectionClosedError,)
    return errors


def test_closing_the_connection_inside_a_block_fails_the_block_and_the_pool_recovers(
    make: Callable[..., sqlitefair.Pool], db_path: Path, backend: str
) -> None:
    pool = make()
    with pool.transaction() as conn:
        conn.execute("insert into t(v) values ('before')")
    with pytest.raises(_closed_errors(backend)):
        with pool.transaction() as conn:
            conn.execute("insert into t(v) values ('closed inside')")
            conn.close()
    assert rows(db_path, backend) == ["before"]
    assert writer_free(pool)
    for i in range(3):
        with pool.transaction(timeout=1) as conn:
            conn.execute("insert into t(v) values (?)", (f"next {i}",))
    assert rows(db_path, backend) == ["before", "next 0", "next 1", "next 2"]
    with pool.read(timeout=1) as conn:
        assert conn.execute("select count(*) from t").fetchone()[0] == 4


# -- 5. the database file deleted or replaced under the pool --------------------------------


def _delete_or_replace(db_path: Path, backend: str, how: str) -> None:
    if how == "deleted":
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    else:
        other = db_path.with_name("other.db")
        conn = open_plain(other, backend)
        conn.execute("create table elsewhere(v)")
        conn.close()
        os.replace(other, db_path)


def _snapshot(folder: Path) -> dict[Path, bytes]:
    return {f: f.read_bytes() for f in sorted(folder.iterdir()) if not f.name.endswith("-shm")}


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_every_transaction_after_the_file_was_deleted_or_replaced_fails(
    make: Callable[..., sqlitefair.Pool], db_path: Path, backend: str, how: str
) -> None:
    pool = make()
    with pool.transaction() as conn:
        conn.execute("insert into t(v) values ('before')")
    _delete_or_replace(db_path, backend, how)
    files = sorted(db_path.parent.iterdir())
    contents = _snapshot(db_path.parent)
    outcomes: list[str] = []
    for i in range(50):  # as fast as possible: no grace period in which a write may still go through
        try:
            with pool.transaction(timeout=1) as conn:
                conn.execute("insert into t(v) values (?)", (i,))
        except sqlitefair.OpenError:
            outcomes.append("refused")
        else:
            outcomes.append("committed")
    assert outcomes == ["refused"] * 50, f"{outcomes.count('committed')} of 50 transactions committed: {outcomes}"
    assert writer_free(pool)
    assert sorted(db_path.parent.iterdir()) == files  # nothing created
    assert _snapshot(db_path.parent) == contents  # nothing written


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_file_deleted_or_replaced_inside_a_block_is_not_acknowledged(
    make: Callable[..., sqlitefair.Pool], db_path: Path, backend: str, how: str
) -> None:
    pool = make()
    with pool.transaction() as conn:
        conn.execute("insert into t(v) values ('before')")
    with pytest.raises(sqlitefair.SqlitefairError):
        with pool.transaction() as conn:
            conn.execute("insert into t(v) values ('inside')")
            _delete_or_replace(db_path, backend, how)
    assert writer_free(pool)
    files = sorted(db_path.parent.iterdir())
    contents = _snapshot(db_path.parent)
    with pytest.raises(sqlitefair.OpenError):
        with pool.transaction(timeout=1) as conn:
            conn.execute("insert into t(v) values ('after')")
    assert sorted(db_path.parent.iterdir()) == files
    assert _snapshot(db_path.parent) == contents


# -- 6. timeouts: infinity means none; beyond what threads can wait is refused at once ---------


def _hold_for(pool: sqlitefair.Pool, kind: str, seconds: float) -> Worker:
    inside = threading.Event()

    def hold() -> None:
        with pool.transaction() if kind == "writer" else pool.read():
            inside.set()
            time.sleep(seconds)

    w = Worker(hold, name=f"holder-{kind}")
    w.start()
    assert inside.wait(LIMIT)
    return w


def test_infinite_timeout_at_connect_means_no_timeout(make: Callable[..., sqlitefair.Pool], db_path: Path, backend: str) -> None:
    pool = make(timeout=math.inf, readers=1)
    holder = _hold_for(pool, "writer", 0.3)
    try:
        start = time.monotonic()
        with pool.transaction() as conn:  # waits for the holder, no OverflowError
            conn.execute("insert into t(v) values ('waited')")
        assert time.monotonic() - start >= 0.2
    finally:
        holder.finish(LIMIT)
    holder = _hold_for(pool, "reader", 0.3)
    try:
        with pool.read() as conn:
            assert conn.execute("select v from t").fetchall() == [("waited",)]
    finally:
        holder.finish(LIMIT)
    assert rows(db_path, backend) == ["waited"]
    assert pool.timeout is None


def test_infinite_timeout_per_call_waits(make: Callable[..., sqlitefair.Pool], db_path: Path, backend: str) -> None:
    pool = make(readers=1)
    holder = _hold_for(pool, "writer", 0.3)
    try:
        with pool.transaction(timeout=float("inf")) as conn:
            conn.execute("insert into t(v) values ('waited')")
    finally:
        holder.finish(LIMIT)
    holder = _hold_for(pool, "reader", 0.3)
    try:
        with pool.read(timeout=float("inf")) as conn:
            assert conn.execute("select v from t").fetchall() == [("waited",)]
    finally:
        holder.finish(LIMIT)
    assert rows(db_path, backend) == ["waited"]


@pytest.mark.parametrize("value", [1e10, threading.TIMEOUT_MAX * 2])
def test_transaction_timeout_beyond_the_thread_limit_is_refused_at_the_call(
    make: Callable[..., sqlitefair.Pool], value: float
) -> None:
    pool = make()
    with pytest.raises(sqlitefair.ConfigurationError):
        pool.transaction(timeout=value)  # at the call, the pool idle: not only under contention
    assert writer_free(pool)


def test_read_timeout_beyond_the_thread_limit_is_refused_at_the_call(make: Callable[..., sqlitefair.Pool]) -> None:
    pool = make()
    with pytest.raises(sqlitefair.ConfigurationError):
        pool.read(timeout=1e10)
    assert pool.stats().readers_in_use == 0


# -- 7. close() inside the same thread's read ------------------------------------------------


@pytest.mark.parametrize("readers", [1, 2])
def test_close_inside_own_read_is_refused_at_once(db_path: Path, backend: str, readers: int) -> None:
    pool = sqlitefair.connect(db_path, readers=readers, timeout=None, backend=backend)
    refused: list[BaseException] = []

    def close_inside_read() -> float:
        with pool.read() as conn:
            conn.execute("select 1").fetchone()
            start = time.monotonic()
            try:
                pool.close()
            except sqlitefair.SqlitefairError as exc:
                refused.append(exc)
            return time.monotonic() - start

    w = Worker(close_inside_read, name="reader-closing")
    w.start()
    w.join(5)
    assert not w.is_alive(), "close() inside the thread's own read() waited for itself"
    took = w.finish(0)
    assert refused, "close() inside the thread's own read() did not raise"
    assert took < 1.0
    assert not pool.closed
    with pool.read() as conn:  # still usable
        conn.execute("select 1").fetchone()
    pool.close(timeout=5)
    assert pool.closed
    assert pool.stats().readers_open == 0


# -- 8. close() timing out: connections still out are closed when they come back ----------------


def _base_execute(conn: Any, backend: str) -> Any:
    if backend == "apsw":
        import apsw

        return apsw.Connection.execute(conn, "select 1")
    return sqlite3.Connection.execute(conn, "select 1")


def _assert_closed(conn: Any, backend: str, role: str) -> None:
    if backend == "apsw":
        import apsw

        with pytest.raises(apsw.ConnectionClosedError):
            _base_execute(conn, backend)
            raise AssertionError(f"the {role} connection is still open")
    else:
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            _base_execute(conn, backend)
            raise AssertionError(f"the {role} connection is still open")


@pytest.mark.parametrize("first_back", ["writer", "reader"])
def test_close_timeout_closes_the_writer_and_readers_when_they_come_back(
    db_path: Path, backend: str, first_back: str
) -> None:
    """A regression guard: the code before the ownership rewrite passed this too (the writer left
    open after a timed-out close() did not reproduce with the holders returning after the timeout)."""
    pool = sqlitefair.connect(db_path, readers=2, timeout=LIMIT, backend=backend)
    with pool.transaction() as conn:
        conn.execute("create table t(id integer primary key, v)")
    held: dict[str, Any] = {}
    inside = {"writer": threading.Event(), "reader": threading.Event()}
    go = {"writer": threading.Event(), "reader": threading.Event()}

    def write() -> None:
        with pool.transaction() as conn:
            conn.execute("insert into t(v) values ('late')")
            held["writer"] = conn
            inside["writer"].set()
            go["writer"].wait(LIMIT)

    def read() -> None:
        with pool.read() as conn:
            conn.execute("select count(*) from t").fetchone()
            held["reader"] = conn
            inside["reader"].set()
            go["reader"].wait(LIMIT)

    workers = {"writer": Worker(write, name="writer"), "reader": Worker(read, name="reader")}
    for role, w in workers.items():
        w.start()
        assert inside[role].wait(LIMIT)
    with pytest.raises(sqlitefair.PoolTimeout):
        pool.close(timeout=0.1)
    order = [first_back, "reader" if first_back == "writer" else "writer"]
    for role in order:
        go[role].set()
        workers[role].finish(LIMIT)
    for role in order:
        _assert_closed(held[role], backend, role)
    assert pool.stats().readers_open == 0
    assert not pool.stats().writer_in_use
    with pytest.raises(sqlitefair.PoolClosed):
        with pool.transaction():
            pass


# -- 9. a warning turned into an error while the writer waits for another connection's lock -------


def test_wal_reset_warning_as_error_leaves_the_pool_whole(db_path: Path) -> None:
    if not sqlitefair.has_wal_reset_bug(sqlite3.sqlite_version):
        pytest.skip(f"SQLite {sqlite3.sqlite_version} has no WAL-reset bug: the pool does not warn")
    pool = sqlitefair.connect(db_path, readers=1, timeout=LIMIT)
    other = open_plain(db_path, "sqlite3")
    try:
        with pool.transaction() as conn:
            conn.execute("create table t(id integer primary key, v)")
        other.execute("pragma busy_timeout = 0")  # "at once": fail rather than wait if the lock is held
        escaped: list[BaseException] = []
        body_ran = False
        with warnings.catch_warnings():
            warnings.simplefilter("error", sqlitefair.WalResetBugWarning)
            other.execute("BEGIN IMMEDIATE")
            other.execute("insert into t(v) values ('other')")
            timer = threading.Timer(0.05, other.execute, ("COMMIT",))
            timer.start()
            try:
                with pool.transaction() as conn:  # waits for the other writer, then warns
                    body_ran = True
                    conn.execute("insert into t(v) values ('pool')")
            except sqlitefair.WalResetBugWarning as exc:
                escaped.append(exc)
            finally:
                timer.join(LIMIT)
        assert not timer.is_alive()
        assert pool.stats().busy_retries > 0, "the pool never waited for the other connection's lock"
        assert writer_free(pool), "the writer stayed checked out after the warning"
        other.execute("BEGIN IMMEDIATE")  # the database is not locked by the pool
        other.execute("insert into t(v) values ('other again')")
        other.execute("COMMIT")
        with pool.transaction(timeout=1) as conn:
            conn.execute("insert into t(v) values ('pool again')")
        values = rows(db_path, "sqlite3")
        assert [v for v in values if v != "pool"] == ["other", "other again", "pool again"]
        if not body_ran:  # the warning escaped __enter__: nothing of the block may be committed
            assert "pool" not in values
        elif not escaped:  # the block ran and reported success: it committed
            assert values == ["other", "pool", "other again", "pool again"]
    except BaseException:
        other.close()
        with contextlib.suppress(Exception):  # do not hide the failure behind a close() that times out
            pool.close(timeout=1)
        raise
    other.close()
    pool.close(timeout=2)


def test_a_block_looked_up_just_as_its_transaction_ends_is_not_taken_for_an_open_one(
    make: Callable[..., sqlitefair.Pool],
) -> None:
    """Another thread with a copy of the context can find a block open and look at its root right
    after the transaction ended (found by review: AttributeError on the ended root). Both lookups must
    then treat it as another thread's transaction."""
    from sqlitefair import _readers, _writer

    pool = make()
    with pool.transaction() as conn:
        conn.execute("insert into t(v) values ('x')")
        tx = _writer._current.get()
    assert tx is not None and tx._root is _writer._ENDED  # ended, as a racing thread would find it
    nested = pool.transaction()
    with pytest.raises(NestingError):
        nested._enter_savepoint(tx)  # the step after enclosing_transaction() returned tx
    nested._entered = True
    read = pool.read()
    original = _readers.enclosing_transaction
    _readers.enclosing_transaction = lambda state: tx  # type: ignore[assignment]
    try:
        token = _writer._current.set(tx)
        try:
            with read as rconn:  # a reader of its own, not the ended transaction's connection
                assert rconn is not conn
        finally:
            _writer._current.reset(token)
    finally:
        _readers.enclosing_transaction = original  # type: ignore[assignment]
