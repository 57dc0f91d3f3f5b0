"""sqlitefair.aio: the asyncio facade. Every test runs its own event loop with asyncio.run()."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator, TypeVar

import pytest
from _helpers import Worker

import sqlitefair
import sqlitefair.aio
from sqlitefair.aio import AsyncPool

T = TypeVar("T")


def run(coro: Awaitable[T], limit: float = 60.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, limit)

    return asyncio.run(bounded())


async def until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll on the event loop (so it must stay responsive) until ``predicate`` holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.001)


def writer_free(pool: sqlitefair.Pool) -> bool:
    return not pool.stats().writer_in_use


@pytest.fixture
def apool(db_path: Path, backend: str) -> Iterator[AsyncPool]:
    p = sqlitefair.aio.connect(db_path, readers=2, timeout=10, backend=backend)
    with p.pool.transaction() as conn:
        conn.execute("create table t(id integer primary key, v)")
        conn.execute("create table counter(n integer not null)")
        conn.execute("insert into counter values (0)")
    yield p
    if not p.closed:
        asyncio.run(p.close(timeout=10))
    assert p.in_use == 0


def committed(pool: sqlitefair.Pool) -> list[Any]:
    with pool.read() as conn:
        return [row[0] for row in conn.execute("select v from t order by id")]


class HeldWriter:
    """A plain thread holding the writer until release()."""

    def __init__(self, pool: sqlitefair.Pool) -> None:
        self._go = threading.Event()
        self._holding = threading.Event()

        def hold() -> None:
            with pool.transaction():
                self._holding.set()
                self._go.wait(30)

        self.thread = Worker(hold, name="holder")
        self.thread.start()
        assert self._holding.wait(10)

    def release(self) -> None:
        self._go.set()
        self.thread.finish()


# -- basics ---------------------------------------------------------------------------


def test_transaction_commits_and_read_sees_it(apool: AsyncPool) -> None:
    async def main() -> None:
        async with apool.transaction() as conn:
            cur = await conn.execute("insert into t(v) values (?)", ("a",))
            assert cur.rowcount == 1 and cur.lastrowid == 1
            cur = await conn.executemany("insert into t(v) values (?)", [("b",), ("c",)])
            assert conn.kind == "transaction"
        async with apool.read() as conn:
            assert conn.kind == "read"
            assert [tuple(r) for r in await conn.fetchall("select id, v from t order by id")] == [
                (1, "a"), (2, "b"), (3, "c")
            ]
            assert tuple(await conn.fetchone("select v from t where id = ?", (2,))) == ("b",)
            assert await conn.fetchone("select v from t where id = ?", (99,)) is None
            cur = await conn.execute("select v from t order by id")
            assert cur.description is None or cur.description[0][0] == "v"
            assert tuple(await cur.fetchone()) == ("a",)
            assert [tuple(r) for r in await cur.fetchmany(1)] == [("b",)]
            assert [tuple(r) for r in await cur.fetchall()] == [("c",)]
            assert [r[0] async for r in await conn.execute("select v from t order by id")] == ["a", "b", "c"]
            assert await conn.run(lambda raw, x: raw.execute("select ? * 2", (x,)).fetchone()[0], 21) == 42

    run(main())
    assert committed(apool.pool) == ["a", "b", "c"]


def test_exception_rolls_back_and_propagates(apool: AsyncPool) -> None:
    async def main() -> None:
        with pytest.raises(ZeroDivisionError):
            async with apool.transaction() as conn:
                await conn.execute("insert into t(v) values ('x')")
                1 / 0  # noqa: B018
        with pytest.raises(Exception, match="no such table"):  # sqlite3 or apsw error
            async with apool.transaction() as conn:
                await conn.execute("insert into missing values (1)")
        with pytest.raises(Exception, match="readonly"):
            async with apool.read() as conn:
                await conn.execute("insert into t(v) values ('r')")

    run(main())
    assert committed(apool.pool) == []
    assert writer_free(apool.pool)


def test_every_step_of_a_block_runs_on_one_worker_thread(apool: AsyncPool) -> None:
    async def main() -> None:
        loop_thread = threading.get_ident()
        for make in (apool.transaction, apool.read):
            async with make() as conn:
                idents = {await conn.run(lambda raw: threading.get_ident()) for _ in range(5)}
                await conn.fetchall("select 1")
                idents.add(await conn.run(lambda raw: threading.get_ident()))
            assert len(idents) == 1 and loop_thread not in idents

    run(main())


def test_the_event_loop_keeps_running_while_a_task_queues(apool: AsyncPool) -> None:
    holder = HeldWriter(apool.pool)

    async def main() -> None:
        async def write() -> None:
            async with apool.transaction() as conn:
                await conn.execute("insert into t(v) values ('queued')")

        task = asyncio.create_task(write())
        # This poll runs on the event loop: it can only succeed if the queued task does not block it.
        await until(lambda: apool.stats().writer_queue == 1, "the task to queue")
        assert not task.done()
        holder.release()
        await task

    run(main())
    assert committed(apool.pool) == ["queued"]


def test_use_after_the_block_is_refused(apool: AsyncPool) -> None:
    async def main() -> None:
        async with apool.read() as conn:
            cur = await conn.execute("select 1 union all select 2")
        with pytest.raises(sqlitefair.SqlitefairError, match="ended"):
            await conn.fetchall("select 1")
        with pytest.raises(sqlitefair.SqlitefairError, match="ended"):
            await cur.fetchall()
        cm = apool.transaction()
        async with cm:
            pass
        with pytest.raises(sqlitefair.SqlitefairError, match="already entered"):
            async with cm:
                pass

    run(main())


def test_pool_timeout_propagates(apool: AsyncPool) -> None:
    holder = HeldWriter(apool.pool)
    try:

        async def main() -> None:
            with pytest.raises(sqlitefair.PoolTimeout) as info:
                async with apool.transaction(timeout=0.05):
                    pass
            assert info.value.waiting_for == "writer"
            assert "sqlitefair-aio" not in str(info.value.holder)

        run(main())
    finally:
        holder.release()
    assert apool.in_use == 0


# -- fairness -----------------------------------------------------------------------


def test_writers_get_the_writer_in_arrival_order_handshake(apool: AsyncPool) -> None:
    """a, b, c, ... start one after another, each once the one before is queued."""
    holder = HeldWriter(apool.pool)
    order: list[int] = []

    async def main() -> None:
        async def write(i: int) -> None:
            async with apool.transaction() as conn:
                order.append(i)
                await conn.execute("insert into t(v) values (?)", (i,))

        tasks = []
        for i in range(6):
            tasks.append(asyncio.create_task(write(i)))
            queued = i + 1
            await until(lambda: apool.stats().writer_queue == queued, f"writer {i} to queue")  # noqa: B023
        holder.release()
        await asyncio.gather(*tasks)

    run(main())
    assert order == list(range(6))
    assert committed(apool.pool) == list(range(6))


def test_writers_queue_in_arrival_order_even_when_started_at_once(apool: AsyncPool) -> None:
    """No handshake: the facade itself makes each worker thread queue after the one before it."""
    holder = HeldWriter(apool.pool)
    order: list[int] = []

    async def main() -> None:
        async def write(i: int) -> None:
            async with apool.transaction():
                order.append(i)

        tasks = [asyncio.create_task(write(i)) for i in range(12)]
        await until(lambda: apool.stats().writer_queue == 12, "all writers to queue")
        holder.release()
        await asyncio.gather(*tasks)

    for _ in range(3):
        order.clear()
        run(main())
        assert order == list(range(12))
        holder = HeldWriter(apool.pool)
    holder.release()


def test_readers_run_in_parallel_on_separate_threads(apool: AsyncPool) -> None:
    async def main() -> None:
        both_in = asyncio.Event()
        inside = 0
        idents = set()

        async def read() -> None:
            nonlocal inside
            async with apool.read() as conn:
                idents.add(await conn.run(lambda raw: threading.get_ident()))
                inside += 1
                if inside == 2:  # both blocks hold a reader at this moment
                    assert apool.stats().readers_in_use == 2
                    both_in.set()
                await both_in.wait()

        await asyncio.gather(read(), read())
        assert len(idents) == 2

    run(main())


def test_concurrent_read_then_write_loses_no_update(apool: AsyncPool) -> None:
    async def main() -> None:
        async def increment() -> None:
            async with apool.transaction() as conn:
                (n,) = await conn.fetchone("select n from counter")
                await asyncio.sleep(0)  # let other tasks run (and queue) in between
                await conn.execute("update counter set n = ?", (n + 1,))

        async def reader() -> None:
            for _ in range(10):
                async with apool.read() as conn:
                    await conn.fetchone("select n from counter")

        await asyncio.gather(*(increment() for _ in range(60)), *(reader() for _ in range(4)))
        async with apool.read() as conn:
            assert tuple(await conn.fetchone("select n from counter")) == (60,)

    run(main())
    assert apool.in_use == 0


# -- cancellation -------------------------------------------------------------------


def test_cancelled_while_queued_leaves_the_queue_at_once(apool: AsyncPool) -> None:
    """A cancelled waiter does not take its turn: its thread leaves the queue while the
    writer is still held, and the writer goes straight to the next task."""
    holder = HeldWriter(apool.pool)
    writes_before = apool.stats().writes.count

    async def main() -> None:
        entered = []

        async def write(v: str) -> None:
            async with apool.transaction() as conn:
                entered.append(v)
                await conn.execute("insert into t(v) values (?)", (v,))

        b = asyncio.create_task(write("b"))
        await until(lambda: apool.stats().writer_queue == 1, "b to queue")
        b.cancel()
        with pytest.raises(asyncio.CancelledError):
            await b
        # b's thread is out of the queue and back, although the writer is still held
        # (well before the pool's 10 s timeout would have taken it out).
        await until(lambda: apool.in_use == 0 and apool.stats().writer_queue == 0, "b's thread to leave", timeout=3)
        assert not writer_free(apool.pool)
        c = asyncio.create_task(write("c"))
        await until(lambda: apool.stats().writer_queue == 1, "c to queue")
        holder.release()
        await c
        await until(lambda: apool.in_use == 0, "every worker thread back")
        assert entered == ["c"]
        assert apool.stats().writes.count == writes_before + 1  # c's; b never had the writer
        stats = apool.stats()
        assert stats.writer_queue == 0 and stats.reader_queue == 0 and stats.readers_in_use == 0
        assert writer_free(apool.pool)
        async with apool.transaction(timeout=1) as conn:
            await conn.execute("insert into t(v) values ('d')")

    run(main())
    assert committed(apool.pool) == ["c", "d"]


def test_cancelled_inside_the_block_rolls_back(apool: AsyncPool) -> None:
    async def main() -> None:
        inside = asyncio.Event()

        async def write() -> None:
            async with apool.transaction() as conn:
                await conn.execute("insert into t(v) values ('lost')")
                inside.set()
                await asyncio.Event().wait()  # forever

        task = asyncio.create_task(write())
        await inside.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert writer_free(apool.pool) and apool.in_use == 0
        async with apool.transaction(timeout=1) as conn:
            await conn.execute("insert into t(v) values ('next')")

    run(main())
    assert committed(apool.pool) == ["next"]


def test_cancelled_inside_a_read_returns_the_reader(apool: AsyncPool) -> None:
    async def main() -> None:
        inside = asyncio.Event()

        async def read() -> None:
            async with apool.read() as conn:
                await conn.execute("select 1 union all select 2")  # left unfinished
                inside.set()
                await asyncio.Event().wait()

        task = asyncio.create_task(read())
        await inside.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert apool.stats().readers_in_use == 0 and apool.in_use == 0

    run(main())


@pytest.mark.parametrize("how", ["timeout", "wait_for"])
def test_asyncio_timeouts_around_a_checkout(apool: AsyncPool, how: str) -> None:
    holder = HeldWriter(apool.pool)

    async def main() -> None:
        async def write() -> None:
            async with apool.transaction() as conn:
                await conn.execute("insert into t(v) values ('late')")

        with pytest.raises(TimeoutError):
            if how == "timeout":
                async with asyncio.timeout(0.05):
                    await write()
            else:
                await asyncio.wait_for(write(), 0.05)
        # Its thread leaves the queue at once, while the writer is still held.
        await until(lambda: apool.in_use == 0, "the abandoned thread to leave the queue", timeout=3)
        assert apool.stats().writer_queue == 0 and not writer_free(apool.pool)
        holder.release()
        assert writer_free(apool.pool)

    run(main())
    assert committed(apool.pool) == []


def test_timeout_inside_the_block_rolls_back(apool: AsyncPool) -> None:
    async def main() -> None:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                async with apool.transaction() as conn:
                    await conn.execute("insert into t(v) values ('x')")
                    await asyncio.sleep(10)
        assert writer_free(apool.pool) and apool.in_use == 0

    run(main())
    assert committed(apool.pool) == []


def test_many_cancellations_leak_nothing(apool: AsyncPool) -> None:
    async def main() -> list[int]:
        async def write(i: int) -> None:
            async with apool.transaction() as conn:
                await conn.execute("insert into t(v) values (?)", (i,))
                await asyncio.sleep(0.001)

        tasks = [asyncio.create_task(write(i)) for i in range(40)]
        for i, task in enumerate(tasks):
            if i % 3 == 1:
                await asyncio.sleep(0.001 * (i % 4))
                task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await until(lambda: apool.in_use == 0, "all workers back")
        assert writer_free(apool.pool) and apool.stats().writer_queue == 0
        done = sorted(i for i, r in enumerate(results) if r is None)
        return done

    done = run(main())
    assert sorted(committed(apool.pool)) == done  # every completed block committed, no cancelled one did


# -- nesting ------------------------------------------------------------------------


def test_nested_transaction_is_a_savepoint_and_read_sees_own_writes(apool: AsyncPool) -> None:
    async def main() -> None:
        async with apool.transaction() as outer:
            outer_thread = await outer.run(lambda raw: threading.get_ident())
            await outer.execute("insert into t(v) values ('outer')")
            with pytest.raises(ValueError):
                async with apool.transaction() as inner:
                    assert await inner.run(lambda raw: threading.get_ident()) == outer_thread
                    await inner.execute("insert into t(v) values ('inner')")
                    raise ValueError
            async with apool.transaction() as inner:
                await inner.execute("insert into t(v) values ('kept')")
            async with apool.read() as conn:  # the writer: sees the uncommitted rows
                assert [r[0] for r in await conn.fetchall("select v from t order by id")] == ["outer", "kept"]
            assert apool.stats().readers_in_use == 0

    run(main())
    assert committed(apool.pool) == ["outer", "kept"]


def test_other_pools_do_not_nest(apool: AsyncPool, tmp_path: Path, backend: str) -> None:
    async def main() -> None:
        async with sqlitefair.aio.connect(tmp_path / "other.db", backend=backend) as other:
            async with apool.transaction():
                async with other.transaction() as conn:
                    await conn.execute("create table x(a)")
        assert other.closed

    run(main())


# -- lifecycle ----------------------------------------------------------------------


def test_close_then_checkouts_raise_pool_closed(apool: AsyncPool) -> None:
    async def main() -> None:
        async with apool.read() as conn:
            await conn.fetchone("select 1")
        await apool.close()
        assert apool.closed and apool.pool.closed
        with pytest.raises(sqlitefair.PoolClosed):
            async with apool.transaction():
                pass

    run(main())
    assert "closed" in repr(apool)


def test_worker_threads_are_reused_and_bounded(db_path: Path) -> None:
    apool = sqlitefair.aio.connect(db_path, readers=4, idle_threads=2)

    async def main() -> set[int]:
        idents: set[int] = set()

        async def read() -> None:
            async with apool.read() as conn:
                idents.add(await conn.run(lambda raw: threading.get_ident()))
                await asyncio.sleep(0.01)

        await asyncio.gather(*(read() for _ in range(4)))
        for _ in range(5):
            await read()
        return idents

    before = {t.name for t in threading.enumerate()}
    try:
        idents = run(main())
        assert len(idents) == 4  # one per concurrent block; the sequential ones reused a kept thread
        alive = [t for t in threading.enumerate() if t.name.startswith("sqlitefair-aio") and t.name not in before]
        assert len(alive) <= 2
    finally:
        asyncio.run(apool.close())


def test_wrapping_an_existing_pool_and_rejecting_bad_arguments(db_path: Path) -> None:
    pool = sqlitefair.connect(db_path)
    apool = AsyncPool(pool)
    assert apool.pool is pool
    with pytest.raises(TypeError):
        AsyncPool("app.db")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        AsyncPool(pool, idle_threads=-1)
    asyncio.run(apool.close())
    assert pool.closed


# -- run_transaction / run_read: a whole block as one job -----------------------------


def test_run_transaction_commits_returns_and_rolls_back(apool: AsyncPool) -> None:
    def insert(conn: Any, value: str, *, twice: bool = False) -> int:
        conn.execute("insert into t(v) values (?)", (value,))
        if twice:
            conn.execute("insert into t(v) values (?)", (value,))
        return threading.get_ident()

    def fail(conn: Any) -> None:
        conn.execute("insert into t(v) values ('no')")
        raise KeyError("boom")

    async def main() -> None:
        ident = await apool.run_transaction(insert, "a", twice=True)
        assert ident != threading.get_ident()
        with pytest.raises(KeyError):
            await apool.run_transaction(fail)
        rows = await apool.run_read(lambda conn: [r[0] for r in conn.execute("select v from t order by id")])
        assert rows == ["a", "a"]
        with pytest.raises(Exception, match="readonly"):
            await apool.run_read(lambda conn: conn.execute("insert into t(v) values ('r')"))

    run(main())
    assert committed(apool.pool) == ["a", "a"]
    assert writer_free(apool.pool) and apool.in_use == 0


def test_run_transaction_inside_a_transaction_is_a_savepoint(apool: AsyncPool) -> None:
    async def main() -> None:
        async with apool.transaction() as conn:
            await conn.execute("insert into t(v) values ('outer')")
            await apool.run_transaction(lambda c: c.execute("insert into t(v) values ('inner')"))
            with pytest.raises(ValueError):
                await apool.run_transaction(lambda c: (c.execute("insert into t(v) values ('undone')"), int("x")))
            seen = await apool.run_read(lambda c: [r[0] for r in c.execute("select v from t order by id")])
            assert seen == ["outer", "inner"]  # the transaction's own connection

    run(main())
    assert committed(apool.pool) == ["outer", "inner"]


def test_run_transaction_keeps_arrival_order_and_cancellation_skips_the_function(apool: AsyncPool) -> None:
    holder = HeldWriter(apool.pool)
    ran: list[str] = []

    def write(conn: Any, v: str) -> None:
        ran.append(v)
        conn.execute("insert into t(v) values (?)", (v,))

    async def main() -> None:
        tasks = {v: asyncio.create_task(apool.run_transaction(write, v)) for v in "abcde"}
        await until(lambda: apool.stats().writer_queue == 5, "all to queue")
        tasks["c"].cancel()
        with pytest.raises(asyncio.CancelledError):
            await tasks["c"]
        holder.release()
        await asyncio.gather(*(t for v, t in tasks.items() if v != "c"))
        await until(lambda: apool.in_use == 0, "all workers back")

    run(main())
    assert ran == ["a", "b", "d", "e"]
    assert committed(apool.pool) == ["a", "b", "d", "e"]
    assert writer_free(apool.pool)


def test_run_transaction_cancelled_while_the_function_runs_rolls_back(apool: AsyncPool) -> None:
    started = threading.Event()
    go_on = threading.Event()

    def slow(conn: Any) -> None:
        conn.execute("insert into t(v) values ('gone')")
        started.set()
        assert go_on.wait(10)

    async def main() -> None:
        task = asyncio.create_task(apool.run_transaction(slow))
        await until(started.is_set, "the function to start")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        go_on.set()
        await until(lambda: apool.in_use == 0, "the worker back")
        assert writer_free(apool.pool)

    run(main())
    assert committed(apool.pool) == []
