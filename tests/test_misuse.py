"""Misuse across blocks and threads: clear errors, nothing run, nothing lost, nobody stuck.

A pooled connection used after its ``with`` block, or from the wrong thread,
is refused.  The hazard: a reference kept past the block runs its statement
on a connection the pool has handed to somebody else, so the statement lands
inside that caller's transaction (and commits or rolls back with it), or
autocommits outside the writer queue.  And a holder that waits for a thread
which wants the same pool is a deadlock that the timeout ends with an error
naming the holder.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, Callable

import pytest
from _helpers import Worker, run_in_fork

import sqlitefair


def misuses(conn: Any, backend: str, target: sqlite3.Connection) -> dict[str, Callable[[], object]]:
    """Every way to run SQL on ``conn`` that the guard covers, each writing a row if it ran
    (``target`` receives the backup)."""
    calls: dict[str, Callable[[], object]] = {
        "execute": lambda: conn.execute("insert into t(v) values ('stale')"),
        "executemany": lambda: conn.executemany("insert into t(v) values (?)", [("stale",)]),
        "cursor().execute": lambda: conn.cursor().execute("insert into t(v) values ('stale')"),
    }
    if backend == "sqlite3":
        calls["executescript"] = lambda: conn.executescript("insert into t(v) values ('stale')")
        calls["commit"] = conn.commit
        calls["rollback"] = conn.rollback
        calls["blobopen"] = lambda: conn.blobopen("t", "v", 1)
        calls["backup"] = lambda: conn.backup(target)
    else:
        calls["pragma"] = lambda: conn.pragma("user_version", 7)
    return calls


def test_connection_used_after_its_transaction_is_refused(
    pool: sqlitefair.Pool, backend: str, committed: Callable[..., list[Any]]
) -> None:
    with pool.transaction() as conn:
        conn.execute("insert into t(v) values ('kept')")
        cursor = conn.execute("select v from t")
    target = sqlite3.connect(":memory:")
    try:
        for name, call in misuses(conn, backend, target).items():
            with pytest.raises(sqlitefair.NotCheckedOut, match="after the `with` block") as info:
                call()
            assert isinstance(info.value, sqlite3.ProgrammingError), name
            assert "writer connection of" in str(info.value), name
    finally:
        target.close()
    for call in (lambda: cursor.execute("select 1"), cursor.fetchall):
        with pytest.raises(sqlitefair.NotCheckedOut):
            call()
    assert committed() == ["kept"]  # nothing stale was written
    assert committed("pragma user_version") == [0]
    with pool.transaction() as conn:  # the pool is unharmed; the same connection works inside a new block
        conn.execute("insert into t(v) values ('next')")
        assert cursor.execute("select count(*) from t").fetchone()[0] == 2  # and so do its cursors
    assert committed() == ["kept", "next"]
    assert committed("pragma integrity_check") == ["ok"]


def test_stale_connection_cannot_write_into_another_threads_transaction(
    pool: sqlitefair.Pool, committed: Callable[..., list[Any]]
) -> None:
    """The case that would corrupt: thread B holds the writer, and A still has it from before.

    Without the guard A's insert joins B's transaction and is rolled back with it,
    although A's call returned without an error.
    """
    with pool.transaction() as stale:
        pass
    b_inside = threading.Event()
    a_done = threading.Event()

    def b() -> None:
        with pytest.raises(RuntimeError):
            with pool.transaction() as conn:
                assert conn is stale  # one writer connection per pool
                conn.execute("insert into t(v) values ('b')")
                b_inside.set()
                assert a_done.wait(10)
                raise RuntimeError("B rolls back")

    worker = Worker(b, name="holder-B")
    worker.start()
    assert b_inside.wait(10)
    try:
        with pytest.raises(sqlitefair.NotCheckedOut, match=r"from thread \d+ while thread \d+ has it checked out"):
            stale.execute("insert into t(v) values ('a')")
    finally:
        a_done.set()
    worker.finish()
    assert committed() == []
    with pool.transaction() as conn:
        conn.execute("insert into t(v) values ('after')")
    assert committed() == ["after"]


def test_reader_handed_to_another_thread_refuses_the_old_holder(make_pool: Callable[..., sqlitefair.Pool]) -> None:
    pool = make_pool(readers=1, timeout=10)
    with pool.transaction() as conn:
        conn.execute("create table t(v)")
        conn.execute("insert into t values (1)")
    with pool.read() as stale:
        cursor = stale.execute("select v from t")
    holding = threading.Event()
    release = threading.Event()

    def reader() -> int:
        with pool.read() as conn:
            assert conn is stale  # readers=1: the same connection
            holding.set()
            assert release.wait(10)
            return conn.execute("select count(*) from t").fetchone()[0]

    worker = Worker(reader)
    worker.start()
    assert holding.wait(10)
    try:
        with pytest.raises(sqlitefair.NotCheckedOut, match="reader connection of .* has it checked out"):
            stale.execute("select v from t")
        with pytest.raises(sqlitefair.NotCheckedOut):
            cursor.fetchone()
    finally:
        release.set()
    assert worker.finish() == 1


def test_connection_passed_to_another_thread_inside_the_block_is_refused(pool: sqlitefair.Pool) -> None:
    """A checkout belongs to the thread that entered the block (like sqlite3's check_same_thread)."""
    with pool.transaction() as conn:
        helper = Worker(lambda: conn.execute("select 1"))
        helper.start()
        with pytest.raises(sqlitefair.NotCheckedOut, match="while thread"):
            helper.finish()
        conn.execute("insert into t(v) values ('x')")  # the holder itself is unaffected


def test_guarded_connections_keep_the_bindings_api(make_pool: Callable[..., sqlitefair.Pool], backend: str) -> None:
    def on_connect(conn: Any, role: str) -> None:
        conn.execute("select 1")  # hooks may run statements
        if backend == "sqlite3":
            conn.row_factory = sqlite3.Row

    pool = make_pool(on_connect=on_connect)
    with pool.transaction() as conn:
        conn.execute("create table t(v)")
        conn.executemany("insert into t values (?)", [(1,), (2,)])
        with pool.transaction() as inner:  # savepoint: same thread, same checkout
            inner.execute("insert into t values (3)")
        with pool.read() as own:  # the writer, read by its holder
            assert own.execute("select count(*) from t").fetchone()[0] == 3
    with pool.read() as conn:
        rows = conn.execute("select v from t order by v").fetchall()
        if backend == "sqlite3":
            assert isinstance(conn, sqlite3.Connection)
            assert isinstance(conn.cursor(), sqlite3.Cursor)
            assert [row["v"] for row in rows] == [1, 2, 3]  # row_factory still reaches the cursors
            assert [tuple(r) for r in conn.execute("select v from t order by v").fetchmany(2)] == [(1,), (2,)]
            assert "\n".join(conn.iterdump()).count("INSERT") == 3
        else:
            import apsw

            assert isinstance(conn, apsw.Connection)
            assert [row[0] for row in rows] == [1, 2, 3]
            assert conn.pragma("query_only") == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork() with threads running (pytest-timeout's)
def test_fork_child_cannot_use_a_connection_the_parent_had_checked_out(
    pool: sqlitefair.Pool, committed: Callable[..., list[Any]]
) -> None:
    """The forking thread keeps its ident in the child, so the holder is cleared at fork."""

    def child() -> str:
        try:
            conn.execute("insert into t(v) values ('child')")
        except sqlitefair.NotCheckedOut:
            return "refused"
        return "ran"

    with pool.transaction() as conn:
        conn.execute("insert into t(v) values ('parent')")
        report = run_in_fork(child)
    assert report == "refused"
    assert committed() == ["parent"]


def test_sqlite_utils_not_checked_out_is_the_core_error() -> None:
    sfu = pytest.importorskip("sqlitefair.integrations.sqlite_utils")
    assert issubclass(sfu.NotCheckedOut, sqlitefair.NotCheckedOut)


def test_message_says_the_pool_closed_it(db_path: Path) -> None:
    pool = sqlitefair.connect(db_path)
    with pool.transaction() as conn:
        pass
    pool.close()
    with pytest.raises(sqlitefair.NotCheckedOut, match="its pool has closed it since"):
        conn.execute("select 1")


def test_helper_thread_that_the_writer_waits_for_times_out_naming_the_holder(
    pool: sqlitefair.Pool, committed: Callable[..., list[Any]]
) -> None:
    """Recursive use across threads: the holder joins a thread that wants the writer too."""
    with pool.transaction() as conn:
        conn.execute("insert into t(v) values ('outer')")
        helper = Worker(lambda: pool.transaction(timeout=0.3).__enter__(), name="helper")
        helper.start()
        with pytest.raises(sqlitefair.PoolTimeout, match="deadlock") as info:
            helper.finish()
        conn.execute("insert into t(v) values ('still mine')")
    assert info.value.holder == threading.current_thread().name
    assert info.value.waiting_for == "writer"
    assert committed() == ["outer", "still mine"]
    assert pool.stats().writer_in_use is False


def test_helper_thread_that_a_reader_waits_for_times_out(make_pool: Callable[..., sqlitefair.Pool]) -> None:
    pool = make_pool(readers=1, timeout=10)
    with pool.read():
        helper = Worker(lambda: pool.read(timeout=0.3).__enter__())
        helper.start()
        with pytest.raises(sqlitefair.PoolTimeout, match="all 1 are checked out") as info:
            helper.finish()
    assert info.value.waiting_for == "reader"
    with pool.read() as conn:  # the reader came back
        assert conn.execute("select 1").fetchone()[0] == 1
