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


# -- second review -----------------------------------------------------------------------------------


def test_apsw_a_rollback_during_iteration_refuses_the_rest_of_the_block(db_path: Path) -> None:
    """apsw runs later bindings of an executemany that returns rows while iterating; an OR ROLLBACK
    failure there went unnoticed and the rest of the block autocommitted. Now the writer's rollback
    hook catches SQLite ending the transaction on any path."""
    require_backend("apsw")
    pool = sqlitefair.connect(db_path, backend="apsw")
    with pool.transaction() as conn:
        conn.execute("create table t(x unique)")
        conn.execute("create table log(y)")
        conn.execute("insert into t values (1)")
    with pytest.raises(sqlitefair.TransactionControlError):
        with pool.transaction() as conn:
            conn.execute("insert into log values ('first')")
            try:
                for _ in conn.executemany("insert or rollback into t values (?) returning x", [(5,), (1,)]):
                    pass
            except Exception as exc:  # the constraint error, caught as a caller might
                assert not isinstance(exc, sqlitefair.SqlitefairError)
            conn.execute("insert into log values ('after the loss')")
    pool.close()
    assert _rows(db_path, "log") == []


def test_aio_a_grandchild_block_of_another_task_is_seen_from_the_outermost_block(db_path: Path) -> None:
    """Before: only the directly nested block's task was compared, so the outermost block's statement
    landed in another task's savepoint two levels down and was silently undone."""
    import sqlitefair.aio

    async def main() -> str:
        apool = sqlitefair.aio.connect(db_path)
        outcome = "accepted"
        try:
            async with apool.transaction() as c:
                await c.execute("create table t(x)")
            g_open, p_done = asyncio.Event(), asyncio.Event()

            async def other() -> None:
                try:
                    async with apool.transaction():  # nested in the inner block, from another task
                        g_open.set()
                        await p_done.wait()
                        raise ValueError("rolls back its own block")
                except ValueError:
                    pass

            async with apool.transaction() as root:
                async with apool.transaction():  # this task's own nested block
                    task = asyncio.create_task(other())
                    await g_open.wait()
                    try:
                        await root.execute("insert into t values ('outer')")
                    except sqlitefair.NestingError:
                        outcome = "refused"
                    p_done.set()
                    await task
            return outcome
        finally:
            await apool.close()

    assert asyncio.run(main()) == "refused"
    assert _rows(db_path) == []


def test_read_in_a_sibling_task_does_not_borrow_another_tasks_transaction(db_path: Path) -> None:
    """Before: a task on the same thread was handed the other task's writer connection by read(),
    saw its uncommitted rows and could write into its transaction."""
    pool = sqlitefair.connect(db_path)
    with pool.transaction() as conn:
        conn.execute("create table t(x)")
    seen: list[int] = []

    async def sibling() -> None:
        with pool.read() as rconn:
            seen.append(rconn.execute("select count(*) from t").fetchone()[0])

    async def main() -> None:
        with pool.transaction() as conn:
            conn.execute("insert into t values (1)")
            await asyncio.create_task(sibling())

    asyncio.run(main())
    pool.close()
    assert seen == [0]  # a reader: not the other task's uncommitted row


def test_nesting_inside_an_event_loop_started_within_a_block_opened_outside_any_task(db_path: Path) -> None:
    """Before: the task check refused it, naming "another asyncio task", though the outer block had none."""
    pool = sqlitefair.connect(db_path)
    with pool.transaction() as conn:
        conn.execute("create table t(x)")

    async def helper() -> None:
        with pool.transaction() as inner:
            inner.execute("insert into t values (2)")

    with pool.transaction() as conn:
        conn.execute("insert into t values (1)")
        asyncio.run(helper())
    pool.close()
    assert _rows(db_path) == [(1,), (2,)]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_fork_child_does_not_inherit_a_deferred_interrupt(db_path: Path) -> None:
    """Before: a Ctrl-C deferred in the parent just before the fork surfaced in the child at its first
    commit, for a signal the child never received."""
    import warnings

    from sqlitefair import _interrupts

    pool = sqlitefair.connect(db_path)
    with pool.transaction() as conn:
        conn.execute("create table t(x)")
    _interrupts._deferred.append(signal.SIGINT)  # as if a Ctrl-C had just been deferred
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 0
            try:
                with pool.transaction() as conn:
                    conn.execute("insert into t values ('child')")
            except BaseException:  # noqa: BLE001
                code = 1
            os._exit(code)
    finally:
        _interrupts._deferred.clear()
        _interrupts._generation += 1
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child's commit raised the parent's deferred interrupt"
    pool.close()
    assert _rows(db_path) == [("child",)]


def test_an_interrupt_deferred_at_the_very_end_exits_as_ctrl_c(tmp_path: Path) -> None:
    """Before: the process exited with status 0 as if nothing had happened."""
    import subprocess
    import textwrap

    script = tmp_path / "late.py"
    script.write_text(textwrap.dedent(f"""
        import signal, sqlitefair
        pool = sqlitefair.connect({str(tmp_path / 'a.db')!r})
        fired = []
        def user_auth(*args):
            if not fired:
                fired.append(1)
                signal.raise_signal(signal.SIGINT)  # a Ctrl-C while the pool's authorizer runs: deferred
            return 0
        with pool.read() as conn:
            conn.set_authorizer(user_auth)
            conn.execute("select 1").fetchall()
            conn.set_authorizer(None)
        print("end of script", flush=True)
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(sqlitefair.__file__).parent.parent), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode in (130, -signal.SIGINT), (done.returncode, done.stdout, done.stderr)
