"""``pool.write(fn)``: FIFO order, flat combining, group commit, and what failures and Ctrl-C do.

Correctness only, with real threads and a real file; the throughput is the
benchmark's business (``sqlitefair-write`` and ``sqlitefair-group``).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from _helpers import Worker, held_by_another_thread, queued, wait_until

import sqlitefair
from sqlitefair import _combining

STRESS = int(os.environ.get("SQLITEFAIR_STRESS", "1"))


@pytest.fixture(params=[False, True], ids=["combining", "group-commit"])
def group(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Both ways a combiner runs calls, on every build (GIL builds combine only with group commit by
    default: see test_gil_builds_run_calls_in_the_callers_thread)."""
    monkeypatch.setattr(_combining, "combines", lambda pool: True)
    return bool(request.param)


@pytest.fixture
def wpool(make_pool: Callable[..., sqlitefair.Pool], group: bool) -> sqlitefair.Pool:
    pool = make_pool(readers=2, timeout=10, group_commit=group)
    with pool.transaction() as conn:
        conn.execute("create table t(id integer primary key, v)")
    return pool


def insert(conn: Any, v: object) -> int:
    conn.execute("insert into t(v) values (?)", (v,))
    return int(conn.execute("select max(id) from t").fetchone()[0])


def queue_writes(pool: sqlitefair.Pool, tags: list[object], fn: Callable[[Any, object], Any]) -> list[Worker]:
    """Start one thread per tag calling ``pool.write(fn, tag)``, each queued before the next starts."""
    lock = pool._state.writer.lock
    workers = []
    for position, tag in enumerate(tags):
        w = Worker(pool.write, fn, tag, name=f"writer-{tag}")
        w.start()
        workers.append(w)
        wait_until(lambda: lock.statistics().waiting == position + 1, what=f"write({tag!r}) to queue")
    return workers


def test_write_returns_the_result_and_commits(wpool: sqlitefair.Pool, committed: Callable[..., list[Any]]) -> None:
    assert wpool.write(insert, "a") == 1
    assert committed() == ["a"]


def test_calls_are_served_in_order_of_arrival(wpool: sqlitefair.Pool, committed: Callable[..., list[Any]]) -> None:
    """Queued behind a holder, the calls run in the order they queued (the first one combines)."""
    tags: list[object] = list(range(12))
    in_own_thread = run_queued_behind_a_holder(wpool, tags)
    assert list(in_own_thread) == tags
    assert committed() == tags
    assert not all(in_own_thread.values()), "no call was run by another caller's thread: nothing was combined"


def run_queued_behind_a_holder(pool: sqlitefair.Pool, tags: list[object]) -> dict[object, bool]:
    """Queue a write() per tag behind a holder, in order, then let them run; return, in the order
    the calls ran, whether each ran in its caller's thread.  Asserts each caller got its own result."""
    ran_in: dict[object, int] = {}

    def record(conn: Any, tag: object) -> object:
        ran_in[tag] = threading.get_ident()
        insert(conn, tag)
        return tag

    with held_by_another_thread(pool.transaction()) as (_, leave):
        workers = queue_writes(pool, tags, record)
        leave()
    assert [w.finish() for w in workers] == tags  # each caller got its own result
    idents = {tag: w.ident for tag, w in zip(tags, workers)}
    return {tag: ident == idents[tag] for tag, ident in ran_in.items()}


@pytest.mark.parametrize("handoff", ["strict", "bounded"])
def test_a_transaction_queued_between_calls_keeps_its_place(
    make_pool: Callable[..., sqlitefair.Pool], group: bool, handoff: str, committed: Callable[..., list[Any]]
) -> None:
    """The combiner stops at the first waiter that is not a write() call: arrival order holds across
    both.  (With bounded hand-off on a free-threaded build, a transaction() first waits at the baton,
    where calls that arrive after it may overtake it for at most BATON_WAIT: it is given that long to
    reach the queue before the calls after it arrive.)"""
    wpool = make_pool(readers=2, timeout=10, group_commit=group, handoff=handoff)
    with wpool.transaction() as conn:
        conn.execute("create table t(id integer primary key, v)")
    lock = wpool._state.writer.lock

    def as_block(tag: str) -> None:
        with wpool.transaction() as conn:
            conn.execute("insert into t(v) values (?)", (tag,))

    with held_by_another_thread(wpool.transaction()) as (_, leave):
        workers = queue_writes(wpool, ["w1", "w2"], insert)
        block = Worker(as_block, "block")
        block.start()
        wait_until(lambda: queued(lock) == 3, what="the transaction() to queue")
        for tag in ("w3", "w4"):
            w = Worker(wpool.write, insert, tag, name=f"writer-{tag}")
            w.start()
            workers.append(w)
            wait_until(lambda n=len(workers) + 1: lock.statistics().waiting == n, what=f"write({tag}) to queue")
        leave()
    for w in workers:
        w.finish()
    block.finish()
    assert committed() == ["w1", "w2", "block", "w3", "w4"]


@pytest.mark.parametrize("failing", ["a", "b"], ids=["first-of-group", "in-a-savepoint"])
def test_a_failing_call_in_a_group_rolls_back_only_itself(
    make_pool: Callable[..., sqlitefair.Pool], committed: Callable[..., list[Any]], failing: str
) -> None:
    """The first call of a group runs without a savepoint (its failure rolls back a transaction
    that holds only its work, and the others go in the next one); the others each in one."""
    pool = make_pool(readers=2, timeout=10, group_commit=True)
    with pool.transaction() as conn:
        conn.execute("create table t(id integer primary key, v)")
    seen_before_commit: list[list[Any]] = []

    class Boom(Exception):
        pass

    def call(conn: Any, tag: str) -> str:
        conn.execute("insert into t(v) values (?)", (tag,))
        if tag == failing:
            raise Boom(tag)
        if tag == "d":  # from a second connection: the rows of its group are not committed yet
            seen_before_commit.append(committed())
        return tag

    tags = ["a", "b", "c", "d"]
    with held_by_another_thread(pool.transaction()) as (_, leave):
        workers = queue_writes(pool, tags, call)
        leave()
    for tag, w in zip(tags, workers):
        if tag == failing:
            with pytest.raises(Boom):
                w.finish()
        else:
            assert w.finish() == tag
    assert seen_before_commit == [[]], "the calls after the failing one did not share one transaction"
    assert committed() == [tag for tag in tags if tag != failing]


def test_a_failed_group_commit_fails_every_call_of_it_and_nothing_is_visible(
    make_pool: Callable[..., sqlitefair.Pool], committed: Callable[..., list[Any]]
) -> None:
    """A deferred foreign key violation makes COMMIT fail: no call of the group may report success."""
    pool = make_pool(readers=2, timeout=10, group_commit=True)
    with pool.transaction() as conn:
        conn.execute("create table parent(id integer primary key)")
        conn.execute(
            "create table t(id integer primary key, v, parent references parent(id) deferrable initially deferred)"
        )

    def call(conn: Any, tag: str) -> str:
        conn.execute("insert into t(v, parent) values (?, ?)", (tag, 99 if tag == "orphan" else None))
        return tag

    with held_by_another_thread(pool.transaction()) as (_, leave):
        workers = queue_writes(pool, ["a", "orphan", "c"], call)
        leave()
    for w in workers:
        with pytest.raises(sqlitefair.GroupCommitError) as info:
            w.finish()
        assert "FOREIGN KEY" in str(info.value.__cause__).upper()
    assert committed() == []
    assert pool.write(call, "after") == "after"  # the writer is whole
    assert committed() == ["after"]


def test_a_call_whose_statement_rolls_back_the_whole_group_fails_the_calls_before_it(
    make_pool: Callable[..., sqlitefair.Pool], committed: Callable[..., list[Any]]
) -> None:
    """ON CONFLICT ROLLBACK in one call ends the whole group's transaction, not only the call's
    savepoint: that call gets its own error, the calls of the group that ran before it get a
    GroupCommitError (none reports success, nothing of them is visible), and the calls after it run
    in a transaction of their own and commit."""
    pool = make_pool(readers=2, timeout=10, group_commit=True)
    with pool.transaction() as conn:
        conn.execute("create table t(id integer primary key, v unique on conflict rollback)")
        conn.execute("insert into t(v) values ('taken')")

    def call(conn: Any, tag: str) -> str:
        conn.execute("insert into t(v) values (?)", ("taken" if tag == "clash" else tag,))
        return tag

    with held_by_another_thread(pool.transaction()) as (_, leave):
        workers = queue_writes(pool, ["a", "b", "clash", "c", "d"], call)
        leave()
    for w in workers[:2]:
        with pytest.raises(sqlitefair.GroupCommitError):
            w.finish()
    with pytest.raises(sqlite3.IntegrityError if pool.backend == "sqlite3" else Exception) as info:
        workers[2].finish()
    assert "UNIQUE" in str(info.value).upper()
    assert [w.finish() for w in workers[3:]] == ["c", "d"]
    assert committed() == ["taken", "c", "d"]
    assert pool.write(call, "after") == "after"  # the writer is whole


def test_a_call_that_leaves_a_nested_block_open_fails_its_group(
    make_pool: Callable[..., sqlitefair.Pool], committed: Callable[..., list[Any]]
) -> None:
    """A call that returns with a transaction() block of its own still open cannot be committed (the
    block's savepoint would be committed half done): it gets a NestingError, the calls before it in
    its group a GroupCommitError, and the calls after it commit in the next transaction."""
    pool = make_pool(readers=2, timeout=10, group_commit=True)
    with pool.transaction() as conn:
        conn.execute("create table t(id integer primary key, v)")
    left_open: list[Any] = []

    def call(conn: Any, tag: str) -> str:
        if tag == "leaky":
            block = pool.transaction()
            block.__enter__().execute("insert into t(v) values ('half')")
            left_open.append(block)
        else:
            conn.execute("insert into t(v) values (?)", (tag,))
        return tag

    with held_by_another_thread(pool.transaction()) as (_, leave):
        workers = queue_writes(pool, ["a", "leaky", "c"], call)
        leave()
    with pytest.raises(sqlitefair.GroupCommitError):
        workers[0].finish()
    with pytest.raises(sqlitefair.NestingError, match="left a nested transaction"):
        workers[1].finish()
    assert workers[2].finish() == "c"
    assert committed() == ["c"]
    with pytest.raises(sqlitefair.SqlitefairError):  # the block's transaction ended without it
        left_open[0].__exit__(None, None, None)
    assert pool.write(call, "after") == "after"
    assert committed() == ["c", "after"]


@pytest.mark.parametrize("closer_at", [0, 1], ids=["first-of-group", "in-a-savepoint"])
def test_calls_taken_up_behind_a_call_that_closes_the_connection_run_in_the_next_transaction(
    make_pool: Callable[..., sqlitefair.Pool], committed: Callable[..., list[Any]], closer_at: int
) -> None:
    """A combiner takes up the queued calls of a group at once.  A call that closes the writer
    connection breaks the group: the calls of it that ran fail (nothing of them committed), and
    those taken up but not begun run in the next transaction, on a fresh connection, instead of
    failing without running.  Nobody reports success for work that is not committed."""
    pool = make_pool(readers=2, timeout=10, group_commit=True)
    with pool.transaction() as conn:
        conn.execute("create table t(id integer primary key, v)")
    ran: list[str] = []

    def call(conn: Any, tag: str) -> str:
        ran.append(tag)
        if tag == "closer":
            conn.close()
        else:
            conn.execute("insert into t(v) values (?)", (tag,))
        return tag

    tags = ["a", "b", "c", "d"]
    tags[closer_at] = "closer"
    # The calls queue behind the writer held bare, with no connection open: the thread that runs
    # the group opens it, and so closes a connection it opened.  (A free-threaded build frees the
    # statements a connection cached only in the thread that made them: closed elsewhere inside a
    # transaction, it keeps its write lock until that thread runs Python again; the writers after
    # it then wait for the busy timeout.  Not what this test is about.)
    gate = pool._state.writer
    held = gate.lock.acquire()
    gate.drop(gate.conn)
    try:
        workers = queue_writes(pool, tags, call)
    finally:
        gate.lock.release(held)
    outcomes: dict[str, object] = {}
    for tag, w in zip(tags, workers):
        try:
            outcomes[tag] = w.finish()
        except Exception as exc:  # noqa: BLE001 - the outcome is what is checked
            outcomes[tag] = exc
    rows = committed()
    assert sorted(ran) == sorted(tags), "a call never ran"
    assert isinstance(outcomes["closer"], Exception)
    for tag in tags[closer_at + 1 :]:
        assert outcomes[tag] == tag, f"{tag}, taken up after the closer, failed: {outcomes[tag]!r}"
    for tag in tags:
        assert (tag in rows) == (outcomes[tag] == tag), f"{tag}: outcome {outcomes[tag]!r}, rows {rows}"
    lock = pool._state.writer.lock
    assert lock._lender is None and lock._borrower is None
    assert pool.write(call, "after") == "after"


def test_a_call_taken_up_with_others_still_times_out_before_it_starts(
    make_pool: Callable[..., sqlitefair.Pool], committed: Callable[..., list[Any]]
) -> None:
    """``timeout`` bounds the wait before a call starts, also for a call a combiner took up with
    the others queued before it: the combiner runs a fast call, takes up the three slow calls
    behind it at once, and the last one's turn comes past its timeout: it fails with PoolTimeout
    without running; the others run, in order."""
    pool = make_pool(readers=2, timeout=10, group_commit=True)
    with pool.transaction() as conn:
        conn.execute("create table t(id integer primary key, v)")
    timeout = 0.5

    def call(conn: Any, tag: str) -> str:
        if tag.startswith("slow"):
            time.sleep(0.3)
        conn.execute("insert into t(v) values (?)", (tag,))
        return tag

    tags = ["fast", "slow1", "slow2", "slow3"]
    lock = pool._state.writer.lock
    with held_by_another_thread(pool.transaction()) as (_, leave):
        workers = []
        for position, tag in enumerate(tags):
            w = Worker(lambda tag=tag: pool.write(call, tag, timeout=timeout), name=tag)
            w.start()
            workers.append(w)
            wait_until(lambda n=position + 1: lock.statistics().waiting == n, what=f"write({tag}) to queue")
        leave()
    assert [w.finish() for w in workers[:3]] == ["fast", "slow1", "slow2"]  # slow2's turn: ~0.3 s
    with pytest.raises(sqlitefair.PoolTimeout):  # its turn came at ~0.6 s
        workers[3].finish()
    assert committed() == ["fast", "slow1", "slow2"]


def test_a_combiner_keeps_the_turn_across_processes_for_the_callers_it_served(
    make_pool: Callable[..., sqlitefair.Pool], group: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A combiner that ran another thread's call keeps the cross-process turn at its commit, as
    for a thread queued for the writer: that caller is back at once, and giving the turn up would
    send its next call behind every other process on the file (measured with 8 processes x 2
    threads: write(fn) at a third of the throughput of with blocks).  Another pool is on the
    file, so a turn kept for nobody would be given up."""
    from sqlitefair import _defaults

    monkeypatch.setattr(_defaults, "PROCESS_TURN", 3600.0)  # the turn lasts: the commit's rule alone decides
    pool = make_pool(readers=1, timeout=10, group_commit=group)
    make_pool(readers=1)  # the other process's pool, standing by
    with pool.transaction() as conn:
        conn.execute("create table t(id integer primary key, v)")
    procq = pool._state.writer.procq
    assert procq is not None and not procq.held, "a turn kept for nobody, with another pool on the file"
    ran_in: dict[str, int] = {}

    def call(conn: Any, tag: str) -> str:
        ran_in[tag] = threading.get_ident()
        conn.execute("insert into t(v) values (?)", (tag,))
        return tag

    with held_by_another_thread(pool.transaction()) as (_, leave):
        workers = queue_writes(pool, ["a", "b"], call)
        leave()
    assert [w.finish() for w in workers] == ["a", "b"]
    assert ran_in["b"] == workers[0].ident, "b's call was not combined"
    assert procq.held, "the combiner gave the turn up after serving another thread's call"


def test_transaction_control_in_fn_is_refused_and_nothing_commits(wpool: sqlitefair.Pool, committed: Callable[..., list[Any]]) -> None:
    def sneaky(conn: Any, tag: str) -> None:
        conn.execute("insert into t(v) values (?)", (tag,))
        conn.execute("COMMIT")

    with pytest.raises(sqlitefair.TransactionControlError):
        wpool.write(sneaky, "x")
    assert committed() == []


def test_write_inside_a_transaction_is_a_savepoint_of_it(wpool: sqlitefair.Pool, committed: Callable[..., list[Any]]) -> None:
    with pytest.raises(ZeroDivisionError):
        with wpool.transaction() as conn:
            conn.execute("insert into t(v) values ('outer')")
            assert wpool.write(insert, "inner") == 2
            1 / 0
    assert committed() == []
    with wpool.transaction():
        wpool.write(insert, "kept")
    assert committed() == ["kept"]


def test_a_queued_call_that_times_out_never_runs(wpool: sqlitefair.Pool, committed: Callable[..., list[Any]]) -> None:
    with held_by_another_thread(wpool.transaction()):
        with pytest.raises(sqlitefair.PoolTimeout):
            wpool.write(insert, "late", timeout=0.05)
    assert wpool.write(insert, "next") == 1
    assert committed() == ["next"]


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals go to the main thread")
def test_ctrl_c_while_queued_takes_the_call_out_and_spares_the_others(
    wpool: sqlitefair.Pool, committed: Callable[..., list[Any]]
) -> None:
    lock = wpool._state.writer.lock
    with held_by_another_thread(wpool.transaction()) as (_, leave):
        before = queue_writes(wpool, ["t1"], insert)

        def interrupt_when_queued() -> None:
            wait_until(lambda: lock.statistics().waiting == 2, what="the main thread's write() to queue")
            after.extend(queue_writes_from(2, ["t2"]))
            os.kill(os.getpid(), signal.SIGINT)

        after: list[Worker] = []

        def queue_writes_from(start: int, tags: list[str]) -> list[Worker]:
            ws = []
            for i, tag in enumerate(tags):
                w = Worker(wpool.write, insert, tag, name=f"writer-{tag}")
                w.start()
                ws.append(w)
                wait_until(lambda n=start + i + 1: lock.statistics().waiting == n, what=f"write({tag}) to queue")
            return ws

        helper = Worker(interrupt_when_queued, name="interrupter")
        helper.start()
        with pytest.raises(KeyboardInterrupt):
            wpool.write(insert, "main")
        helper.finish()
        leave()
    results = [w.finish() for w in before + after]
    assert committed() == ["t1", "t2"]
    assert results == [1, 2]  # each caller got its own row id


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals go to the main thread")
def test_ctrl_c_while_a_combiner_runs_the_call_spares_every_result(wpool: sqlitefair.Pool, committed: Callable[..., list[Any]]) -> None:
    """The main thread's call, taken up by a combiner thread, runs to its end; the main thread gets its
    KeyboardInterrupt at once; every other caller gets its own result."""
    lock = wpool._state.writer.lock
    running, finish = threading.Event(), threading.Event()

    def slow(conn: Any, tag: str) -> int:
        running.set()
        assert finish.wait(10)
        return insert(conn, tag)

    with held_by_another_thread(wpool.transaction()) as (_, leave):
        first = queue_writes(wpool, ["t1"], insert)  # will be granted the writer, and combine

        def interrupt_when_running() -> None:
            wait_until(lambda: lock.statistics().waiting == 2, what="the main thread's write() to queue")
            w = Worker(wpool.write, insert, "t3", name="writer-t3")
            w.start()
            later.append(w)
            wait_until(lambda: lock.statistics().waiting == 3, what="write(t3) to queue")
            leave()
            assert running.wait(10)
            os.kill(os.getpid(), signal.SIGINT)

        later: list[Worker] = []
        helper = Worker(interrupt_when_running, name="interrupter")
        helper.start()
        with pytest.raises(KeyboardInterrupt):
            wpool.write(slow, "main")
        finish.set()
        helper.finish()
    assert first[0].finish() == 1
    assert later[0].finish() == 3
    assert committed() == ["t1", "main", "t3"]


def test_counter_under_contention_loses_no_update(wpool: sqlitefair.Pool) -> None:
    """Read-then-update through write() and transaction() from many threads: every increment counts."""
    with wpool.transaction() as conn:
        conn.execute("create table counter(n integer)")
        conn.execute("insert into counter values (0)")

    def bump(conn: Any) -> None:
        (n,) = conn.execute("select n from counter").fetchone()
        conn.execute("update counter set n = ?", (n + 1,))

    per_thread, threads = 40, 8 * STRESS
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for i in range(per_thread):
                if (i + k) % 4 == 0:
                    with wpool.transaction() as conn:
                        bump(conn)
                else:
                    wpool.write(bump)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert not errors, errors[:3]
    with wpool.read() as conn:
        assert conn.execute("select n from counter").fetchone()[0] == per_thread * threads
    stats = wpool.stats()
    assert stats.writes.count >= per_thread * threads  # every write() counted once, as a write
    assert not stats.writer_in_use and stats.writer_queue == 0


def test_group_commit_must_be_a_bool(db_path: Path) -> None:
    with pytest.raises(sqlitefair.ConfigurationError, match="group_commit"):
        sqlitefair.connect(db_path, group_commit="yes")  # type: ignore[arg-type]


def test_a_call_taken_up_by_a_combiner_runs_past_its_timeout(wpool: sqlitefair.Pool, committed: Callable[..., list[Any]]) -> None:
    """The timeout bounds the wait in the queue; once a combiner runs the call, the caller gets its outcome."""
    lock = wpool._state.writer.lock
    release_first = threading.Event()

    def first(conn: Any, tag: str) -> int:
        assert release_first.wait(10)  # the combiner holds the writer while the next call queues
        return insert(conn, tag)

    def slow(conn: Any, tag: str) -> int:
        threading.Event().wait(0.4)  # longer than the caller's timeout
        return insert(conn, tag)

    combiner = Worker(wpool.write, first, "first", name="combiner")
    combiner.start()
    wait_until(lambda: lock.statistics().held == 1, what="the first call to hold the writer")
    impatient = Worker(lambda: wpool.write(slow, "slow", timeout=0.2), name="impatient")
    impatient.start()
    wait_until(lambda: lock.statistics().waiting == 1, what="the impatient call to queue")
    release_first.set()  # the combiner takes the impatient call up well within its 0.2 s
    assert combiner.finish() == 1
    assert impatient.finish() == 2
    assert committed() == ["first", "slow"]


# -- asyncio: await apool.write(fn) -------------------------------------------------------------


def _run(coro: Any) -> Any:
    import asyncio

    return asyncio.run(asyncio.wait_for(coro, 60))


def test_async_writes_queue_without_a_thread_each(wpool: sqlitefair.Pool, committed: Callable[..., list[Any]]) -> None:
    """100 tasks wait for the writer; the process gains no thread per waiting task."""
    import asyncio

    import sqlitefair.aio

    apool = sqlitefair.aio.AsyncPool(wpool)
    lock = wpool._state.writer.lock

    async def main() -> list[Any]:
        with held_by_another_thread(wpool.transaction()) as (_, leave):
            before = threading.active_count()
            tasks = [asyncio.ensure_future(apool.write(insert, i)) for i in range(100)]
            while lock.statistics().waiting < 100:
                await asyncio.sleep(0.001)
            queued_threads = threading.active_count()
            leave()
        results = await asyncio.gather(*tasks)
        assert queued_threads <= before, f"{queued_threads - before} threads appeared for 100 queued tasks"
        return results

    results = _run(main())
    assert sorted(results) == list(range(1, 101))
    assert committed() == list(range(100))  # FIFO: in the order the tasks queued


def test_async_write_cancelled_or_timed_out_while_queued_never_runs(wpool: sqlitefair.Pool, committed: Callable[..., list[Any]]) -> None:
    import asyncio

    import sqlitefair.aio

    apool = sqlitefair.aio.AsyncPool(wpool)
    lock = wpool._state.writer.lock

    async def main() -> None:
        with held_by_another_thread(wpool.transaction()) as (_, leave):
            doomed = asyncio.ensure_future(apool.write(insert, "cancelled"))
            kept = asyncio.ensure_future(apool.write(insert, "kept"))
            while lock.statistics().waiting < 2:
                await asyncio.sleep(0.001)
            doomed.cancel()
            with pytest.raises(sqlitefair.PoolTimeout):
                await apool.write(insert, "timed out", timeout=0.05)
            leave()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        assert await kept == 1

    _run(main())
    assert committed() == ["kept"]
    assert wpool.write(insert, "after") == 2  # the writer is whole


def test_async_write_cancelled_while_its_turn_waits_for_a_thread_hands_the_writer_on(
    wpool: sqlitefair.Pool, committed: Callable[..., list[Any]]
) -> None:
    """A task that got the writer serves its call on one of the event loop's threads.  Cancelled
    while that job still waits for a thread (all busy), it must not take the job with it: the
    writer would stay held by the call with nobody to hand it on, and every later write would
    wait forever.  The call runs (its turn had come, as for a call a combiner took up); the task
    only stops waiting for it."""
    import asyncio
    import concurrent.futures

    import sqlitefair.aio

    apool = sqlitefair.aio.AsyncPool(wpool)
    lock = wpool._state.writer.lock

    async def main() -> None:
        loop = asyncio.get_running_loop()
        executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        loop.set_default_executor(executor)
        busy = threading.Event()
        blocker = loop.run_in_executor(None, busy.wait)  # the executor's only thread is busy
        task = asyncio.ensure_future(apool.write(insert, "turn came"))
        while not lock.locked():  # it takes the free writer and queues its job
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        busy.set()
        await blocker
        deadline = time.monotonic() + 10
        while lock.locked() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    _run(main())
    assert not lock.locked(), f"the writer was left held by {lock.owner}"
    assert committed() == ["turn came"]
    assert wpool.write(insert, "after", timeout=5) == 2


def test_async_write_inside_an_async_transaction_is_a_savepoint(wpool: sqlitefair.Pool, committed: Callable[..., list[Any]]) -> None:
    import sqlitefair.aio

    apool = sqlitefair.aio.AsyncPool(wpool)

    async def main() -> None:
        with pytest.raises(ZeroDivisionError):
            async with apool.transaction() as conn:
                await conn.execute("insert into t(v) values ('outer')")
                await apool.write(insert, "inner")
                1 / 0

    _run(main())
    assert committed() == []


@pytest.mark.parametrize("group_commit", [False, True], ids=["plain", "group-commit"])
def test_gil_builds_run_calls_in_the_callers_thread(
    make_pool: Callable[..., sqlitefair.Pool], group_commit: bool, committed: Callable[..., list[Any]]
) -> None:
    """Where the GIL is on and group commit off, each call runs in its caller's thread as a block
    (combining measured slower there); elsewhere the thread that gets the writer runs the calls
    queued behind it.  Either way they are served in order of arrival and each caller gets its own
    result."""
    wpool = make_pool(readers=2, timeout=10, group_commit=group_commit, handoff="strict")
    with wpool.transaction() as conn:
        conn.execute("create table t(id integer primary key, v)")
    tags: list[object] = list(range(6))
    in_own_thread = run_queued_behind_a_holder(wpool, tags)
    assert list(in_own_thread) == tags
    assert committed() == tags
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    if gil and not group_commit:
        assert all(in_own_thread.values()), "a call ran outside its caller's thread on a GIL build"
    else:
        assert not all(in_own_thread.values()), "no call was run by another caller's thread: nothing was combined"


@pytest.mark.parametrize("where", ["caller", "combiner"])
def test_write_timeout_bounds_the_wait_before_the_call_starts(
    make_pool: Callable[..., sqlitefair.Pool], db_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str, where: str
) -> None:
    """As Pool.write says: run in its caller's thread, ``timeout`` bounds the whole wait before the
    call starts, BEGIN's wait for another connection's lock included (as a block's); a combined
    call's BEGIN waits for that with the pool's timeout, so it succeeds once the lock is free."""
    if backend != "sqlite3":
        pytest.skip("the other writer is a stdlib connection: beside apsw's own SQLite in one process, neither sees the other's locks")
    monkeypatch.setattr(_combining, "combines", lambda pool: where == "combiner")

    def insert_one(conn: Any) -> str:
        conn.execute("insert into t values (1)")
        return "done"

    pool = make_pool(readers=1, timeout=10)
    with pool.transaction() as conn:
        conn.execute("create table t(v)")
    other = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    try:
        other.execute("begin immediate")  # another connection (another process, say) writes for 0.4 s
        releaser = threading.Timer(0.4, lambda: other.execute("commit"))
        releaser.start()
        try:
            if where == "caller":
                with pytest.raises(sqlitefair.PoolTimeout):
                    pool.write(insert_one, timeout=0.05)
            else:
                assert pool.write(insert_one, timeout=0.05) == "done"
        finally:
            releaser.join()
    finally:
        other.close()


@pytest.fixture
def combining(monkeypatch: pytest.MonkeyPatch) -> None:
    """write() queues for a combiner on every build (GIL builds run a block otherwise)."""
    monkeypatch.setattr(_combining, "combines", lambda pool: True)


def test_a_finished_call_is_not_kept_waiting_behind_the_next_one(
    make_pool: Callable[..., sqlitefair.Pool], combining: None
) -> None:
    """Completion is deferred to the next claim: a caller must still be woken before the combiner
    runs the next call (not after it)."""
    pool = make_pool(readers=1, timeout=10)
    with pool.transaction() as conn:
        conn.execute("create table t(v)")
    lock = pool._state.writer.lock
    second_running, let_second_finish = threading.Event(), threading.Event()

    def call(conn: Any, tag: str) -> str:
        conn.execute("insert into t values (?)", (tag,))
        if tag == "second":
            second_running.set()
            assert let_second_finish.wait(20)
        return tag

    with held_by_another_thread(pool.transaction()) as (_, leave):
        combiner = Worker(pool.write, call, "own", name="combiner")
        combiner.start()
        wait_until(lambda: queued(lock) == 1)
        first = Worker(pool.write, call, "first", name="first")
        first.start()
        wait_until(lambda: queued(lock) == 2)
        second = Worker(pool.write, call, "second", name="second")
        second.start()
        wait_until(lambda: queued(lock) == 3)
        leave()
    assert second_running.wait(20)
    try:
        assert first.finish(10) == "first"  # woken while "second" still runs
        assert combiner.is_alive() or combiner.result == "own"
    finally:
        let_second_finish.set()
    assert [w.finish() for w in (combiner, second)] == ["own", "second"]
    assert not lock.locked() and lock._lender is None and lock._borrower is None


@pytest.mark.parametrize("group_commit", [False, True], ids=["combining", "group-commit"])
@pytest.mark.parametrize("handoff", ["strict", "bounded"])
@pytest.mark.parametrize("force", [False, True], ids=["default", "combine-always"])
def test_mixed_writes_each_caller_gets_its_own_outcome(
    make_pool: Callable[..., sqlitefair.Pool],
    db_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    group_commit: bool,
    handoff: str,
    force: bool,
) -> None:
    """Threads mixing write() (with and without tight timeouts, failing fns), transaction() blocks
    and async writes (timed out, cancelled): every caller gets its own result or exception, exactly
    the calls reported committed are committed, nobody hangs, and the lock ends free, unlent."""
    if force:
        monkeypatch.setattr(_combining, "combines", lambda pool: True)
    pool = make_pool(readers=2, timeout=20, group_commit=group_commit, handoff=handoff)
    with pool.transaction() as conn:
        conn.execute("create table t(id integer primary key, v unique)")
    outcomes: dict[str, str] = {}
    errors: list[object] = []

    def ins(conn: Any, tag: str, fail: bool = False) -> str:
        conn.execute("insert into t(v) values (?)", (tag,))
        if fail:
            raise ValueError(tag)
        return tag

    def worker(k: int) -> None:
        rnd = random.Random(k)
        for i in range(80):
            tag = f"{k}-{i}"
            r = rnd.random()
            if r < 0.5:
                got = pool.write(ins, tag)
                outcomes[tag] = "committed" if got == tag else f"wrong result {got!r}"
            elif r < 0.7:
                try:
                    got = pool.write(ins, tag, timeout=rnd.choice([0, 0.0005, 0.002]))
                    outcomes[tag] = "committed" if got == tag else f"wrong result {got!r}"
                except sqlitefair.PoolTimeout:
                    outcomes[tag] = "timeout"
            elif r < 0.8:
                try:
                    pool.write(ins, tag, fail=True)
                    errors.append(("no error", tag))
                except ValueError as exc:
                    outcomes[tag] = "raised" if exc.args == (tag,) else f"wrong error {exc.args!r}"
            else:
                with pool.transaction() as conn:
                    ins(conn, tag)
                outcomes[tag] = "committed"

    def async_worker(k: int) -> None:
        async def one(tag: str, timeout: float | None) -> None:
            try:
                got = await _combining.write_async(pool, ins, (tag,), {}, timeout)
                outcomes[tag] = "committed" if got == tag else f"wrong result {got!r}"
            except sqlitefair.PoolTimeout:
                outcomes[tag] = "timeout"
            except asyncio.CancelledError:
                outcomes[tag] = "cancelled"  # it may or may not have run
                raise

        async def main() -> None:
            for j in range(8):
                tasks = [asyncio.ensure_future(one(f"a{k}-{j}-{i}", random.choice([None, 0.001]))) for i in range(8)]
                if j % 2:
                    await asyncio.sleep(0)
                    tasks[-1].cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run(main())

    workers = [Worker(worker, k, name=f"w{k}") for k in range(6 * STRESS)]
    workers += [Worker(async_worker, k, name=f"a{k}") for k in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.finish(120)
    assert errors == []
    assert {tag: o for tag, o in outcomes.items() if o not in ("committed", "timeout", "raised", "cancelled")} == {}
    with sqlite3.connect(db_path) as check:
        rows = {row[0] for row in check.execute("select v from t")}
    check.close()
    cancelled = {tag for tag, o in outcomes.items() if o == "cancelled"}
    assert rows - cancelled == {tag for tag, o in outcomes.items() if o == "committed"}
    lock = pool._state.writer.lock
    assert not lock.locked() and lock._holder is None and queued(lock) == 0
    assert lock._lender is None and lock._borrower is None
