"""Holes an adversarial review found in the checkout-ownership work, each pinned by a test.

Every test here failed on the code before its fix (commit 8de8cb0, checked).
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import sqlitefair
from conftest import open_plain, require_backend

main_thread_only = pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="signals are delivered to the main thread"
)


def _rows(path: Path, table: str = "t") -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"select * from {table} order by rowid").fetchall()
    finally:
        conn.close()


# -- a deferred KeyboardInterrupt never skips the next __exit__ ------------------------------------


@main_thread_only
@pytest.mark.parametrize("scenario", ["empty-body", "nested", "multi-item", "user-lock"])
def test_a_deferred_interrupt_never_skips_the_next_exit(db_path: Path, scenario: str) -> None:
    """A Ctrl-C during the pool's own BEGIN, RELEASE or COMMIT (raised from a trace callback, which
    SQLite calls while the statement runs) is deferred; it must surface without skipping the
    __exit__ that runs next: an outer block's, the other item of a with, or the user's own lock.
    Before: the next __exit__ never ran, and the writer, a reader or the lock stayed held."""
    fire_on: list[str | None] = [None]

    def trace(sql: str) -> None:
        if fire_on[0] and sql.lstrip().upper().startswith(fire_on[0]):
            fire_on[0] = None
            signal.raise_signal(signal.SIGINT)

    pool = sqlitefair.connect(db_path, timeout=1, readers=1, on_connect=lambda conn, role: conn.set_trace_callback(trace))
    app_lock = threading.Lock()
    try:
        with pool.transaction() as conn:
            conn.execute("create table t(x)")
        with pytest.raises(KeyboardInterrupt):
            if scenario == "empty-body":
                fire_on[0] = "BEGIN"
                with pool.transaction():
                    pass
            elif scenario == "nested":
                fire_on[0] = "RELEASE"
                with pool.transaction() as conn:
                    conn.execute("insert into t values (1)")
                    with pool.transaction() as inner:
                        inner.execute("insert into t values (2)")
            elif scenario == "multi-item":
                fire_on[0] = "COMMIT"
                with pool.read(), pool.transaction() as w:
                    w.execute("insert into t values (3)")
            else:
                fire_on[0] = "COMMIT"
                with app_lock:
                    with pool.transaction() as conn:
                        conn.execute("insert into t values (4)")
            time.sleep(1)  # the deferred interrupt is re-sent within about a millisecond
        stats = pool.stats()
        assert not stats.writer_in_use and stats.readers_in_use == 0, stats
        assert not app_lock.locked()
        outcome: list[str] = []

        def other() -> None:
            with pool.transaction(timeout=1) as conn:
                conn.execute("select 1")
            with pool.read(timeout=1) as conn:
                conn.execute("select 1")
            outcome.append("ok")

        t = threading.Thread(target=other)
        t.start()
        t.join(10)
        assert outcome == ["ok"]
    finally:
        pool.close()


@main_thread_only
@pytest.mark.parametrize("where", ["busy wait", "on_connect"])
def test_ctrl_c_interrupts_a_wait_for_another_process_and_on_connect(db_path: Path, backend: str, where: str) -> None:
    """Before: the busy wait for another process's lock and the user's on_connect deferred the
    interrupt until they ended (3 s here), and further Ctrl-Cs were dropped."""
    if where == "on_connect" and backend == "apsw":
        pytest.skip("the hook is backend-independent; one backend is enough")
    hook_sleeps = [False]

    def on_connect(conn: Any, role: str) -> None:
        if hook_sleeps[0]:
            time.sleep(3)

    pool = sqlitefair.connect(db_path, timeout=10, backend=backend, on_connect=on_connect)
    with pool.transaction() as conn:
        conn.execute("create table t(x)")
    other = open_plain(db_path, backend)
    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT))
    try:
        if where == "busy wait":
            other.execute("BEGIN IMMEDIATE")  # held for 3 s, in this process: the pool's writer must wait
            threading.Timer(3.0, lambda: None).start()
        else:
            hook_sleeps[0] = True
            pool._state.writer.drop(pool._state.writer.conn)  # the next transaction opens (and hooks) a new one
        start = time.monotonic()
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            with pool.transaction() as conn:
                conn.execute("insert into t values (1)")
        assert time.monotonic() - start < 2.0, "the interrupt waited for the wait to end"
    finally:
        timer.cancel()
        hook_sleeps[0] = False
        if where == "busy wait":
            other.execute("ROLLBACK")
        other.close()
    assert not pool.stats().writer_in_use
    pool.close()
    assert _rows(db_path) == []


# -- SQLite ending the transaction by itself never commits half a block ----------------------------


@pytest.mark.parametrize("how", ["on conflict rollback", "raise(rollback) trigger"])
def test_sqlite_rolling_back_by_itself_never_commits_half_a_block(db_path: Path, backend: str, how: str) -> None:
    """Before: the nested block's error was caught, the rest of the block ran in autocommit mode,
    and its rows stayed committed although the block raised."""
    require_backend(backend)
    pool = sqlitefair.connect(db_path, backend=backend)
    with pool.transaction() as conn:
        conn.execute("create table t(id integer primary key, v)")
        if how == "on conflict rollback":
            conn.execute("create table log(msg unique on conflict rollback)")
        else:
            conn.execute("create table log(msg)")
            conn.execute(
                "create trigger no_dupes before insert on log when exists (select 1 from log where msg = new.msg) "
                "begin select raise(rollback, 'duplicate'); end"
            )
        conn.execute("insert into log values ('seen')")
    with pytest.raises(sqlitefair.TransactionControlError):
        with pool.transaction() as conn:
            conn.execute("insert into t(v) values ('first')")
            try:
                with pool.transaction() as inner:  # "a part that can fail on its own"
                    inner.execute("insert into log values ('seen')")
            except sqlitefair.TransactionControlError:
                raise
            except Exception:
                pass  # the documented pattern: catch the nested block's failure and go on
            conn.execute("insert into t(v) values ('second')")
    assert _rows(db_path) == []
    with pool.transaction() as conn:  # the pool is fine afterwards
        conn.execute("insert into t(v) values ('after')")
    pool.close()
    assert [r[1] for r in _rows(db_path)] == ["after"]


# -- a read on another thread that inherited the context takes a reader ------------------------------


def test_read_on_a_thread_that_inherited_the_transactions_context_takes_a_reader(db_path: Path) -> None:
    """Before: it was handed the writer connection of the other thread's transaction, and its first
    statement failed with a misleading NotCheckedOut."""
    pool = sqlitefair.connect(db_path)
    with pool.transaction() as conn:
        conn.execute("create table t(x)")
        conn.execute("insert into t values (1)")
    counts: list[int] = []

    def reader() -> None:
        with pool.read() as rconn:
            counts.append(rconn.execute("select count(*) from t").fetchone()[0])

    with pool.transaction() as conn:
        conn.execute("insert into t values (2)")
        context = contextvars.copy_context()
        t = threading.Thread(target=context.run, args=(reader,))
        t.start()
        t.join(10)
    assert counts == [1]  # a reader: the committed row only, not the transaction's own
    pool.close()


# -- a task started inside a block cannot swallow the block's writes ----------------------------------


def test_a_task_started_inside_a_block_cannot_nest_in_it(db_path: Path) -> None:
    """Before: the child task's savepoint took in the parent's writes, and the child's rollback
    silently undid them; the parent committed without an error."""
    pool = sqlitefair.connect(db_path)
    with pool.transaction() as conn:
        conn.execute("create table t(v)")

    async def child() -> None:
        with pool.transaction() as c:
            c.execute("insert into t values ('child')")
            await asyncio.sleep(0.01)
            raise RuntimeError("child fails")

    async def parent() -> str:
        with pool.transaction() as conn:
            task = asyncio.create_task(child())
            await asyncio.sleep(0)
            conn.execute("insert into t values ('parent')")
            try:
                await task
            except sqlitefair.NestingError:
                return "refused"
            except RuntimeError:
                return "child ran"
        return "?"

    assert asyncio.run(parent()) == "refused"
    pool.close()
    assert _rows(db_path) == [("parent",)]


def test_aio_a_block_refuses_statements_while_another_tasks_block_is_nested_in_it(db_path: Path) -> None:
    """Before: the parent's insert landed inside the child task's savepoint, the child's rollback
    undid it, and the parent committed without an error."""
    import sqlitefair.aio

    async def main() -> str:
        apool = sqlitefair.aio.connect(db_path)
        try:
            async with apool.transaction() as conn:
                await conn.execute("create table t(v)")
            child_open, parent_done = asyncio.Event(), asyncio.Event()

            async def child() -> None:
                async with apool.transaction() as c:
                    await c.execute("insert into t values ('child')")
                    child_open.set()
                    await parent_done.wait()
                    raise RuntimeError("child fails")

            outcome = "parent wrote"
            async with apool.transaction() as conn:
                task = asyncio.create_task(child())
                await child_open.wait()
                try:
                    await conn.execute("insert into t values ('parent')")
                except sqlitefair.NestingError:
                    outcome = "refused"
                parent_done.set()
                with pytest.raises(RuntimeError):
                    await task
                await conn.execute("insert into t values ('parent, after the child')")
            return outcome
        finally:
            await apool.close()

    assert asyncio.run(main()) == "refused"
    assert _rows(db_path) == [("parent, after the child",)]
