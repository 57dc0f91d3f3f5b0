"""Opening, configuration, bad input, close, fork and statistics."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import pytest
from _helpers import Worker, held_by_another_thread, queued, run_in_fork, tmpfs_mount, wait_until

import sqlitefair
from sqlitefair import _fairlock


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- configuration ----------------------------------------------------------


def test_default_pragmas_are_applied(make_pool: Callable[..., sqlitefair.Pool]) -> None:
    pool = make_pool()
    expected = {
        "journal_mode": "wal",
        "synchronous": 1,  # NORMAL
        "foreign_keys": 1,
        "journal_size_limit": 64 * 1024 * 1024,
        "cache_size": 2000,
        "query_only": 0,
    }
    with pool.transaction() as conn:
        for name, value in expected.items():
            assert conn.execute(f"pragma {name}").fetchone()[0] == value, name
        assert conn.execute("pragma mmap_size").fetchone()[0] in (0, 128 * 1024 * 1024)  # 0 where mmap is off
    with pool.read() as conn:
        assert conn.execute("pragma query_only").fetchone()[0] == 1
        assert conn.execute("pragma foreign_keys").fetchone()[0] == 1


def test_pragmas_can_be_overridden_and_dropped(make_pool: Callable[..., sqlitefair.Pool]) -> None:
    pool = make_pool(pragmas={"cache_size": -4000, "foreign_keys": None, "busy_timeout": 0})
    with pool.transaction() as conn:
        assert conn.execute("pragma cache_size").fetchone()[0] == -4000
        assert conn.execute("pragma foreign_keys").fetchone()[0] == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"readers": 0}, "readers must be an int >= 1"),
        ({"readers": -3}, "readers must be an int >= 1"),
        ({"readers": 2.5}, "readers must be an int >= 1"),
        ({"readers": True}, "readers must be an int >= 1"),
        ({"timeout": -1}, "timeout must be >= 0"),
        ({"timeout": float("nan")}, "timeout must be >= 0"),
        ({"timeout": "5"}, "timeout must be a number"),
        ({"pragmas": {"jornal_mode": "wal"}}, "unknown pragma 'jornal_mode' \\(did you mean 'journal_mode'\\?\\)"),
        ({"pragmas": {"cache_size; drop table t": 1}}, "invalid pragma name"),
        ({"pragmas": {"mmap_size": -1}}, "mmap_size must be >= 0"),
        ({"pragmas": {"journal_size_limit": -2}}, "journal_size_limit must be >= -1"),
        ({"pragmas": {"cache_size": 1.5}}, "must be a bool, int or str"),
        ({"pragmas": {"journal_mode": "memory"}}, "not crash-safe"),
        ({"pragmas": {"query_only": True}}, "set by sqlitefair itself"),
        ({"pragmas": [("cache_size", 1)]}, "pragmas must be a mapping"),
        ({"busy_policy": "fast"}, "busy_policy must be a sqlitefair.BusyPolicy"),
        ({"backend": "postgres"}, "unknown backend 'postgres'"),
        ({"on_connect": 42}, "on_connect must be callable"),
        ({"checkpoints": "litestream"}, "checkpoints must be 'auto' or 'external'"),
        ({"checkpoints": "external", "wal_limit": 1024}, "wal_limit=1024 has no effect with checkpoints='external'"),
        ({"checkpoints": "external", "pragmas": {"wal_autocheckpoint": 100}}, "wal_autocheckpoint=100 contradicts checkpoints='external'"),
    ],
)
def test_bad_arguments_are_clear_errors(db_path: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(sqlitefair.ConfigurationError, match=message) as info:
        sqlitefair.connect(db_path, **kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("path", [":memory:", "", "file::memory:?cache=shared", "file:x?mode=memory"])
def test_in_memory_databases_are_refused(path: str) -> None:
    with pytest.raises(sqlitefair.ConfigurationError, match="in-memory or temporary database"):
        sqlitefair.connect(path)


def test_path_type_is_checked() -> None:
    with pytest.raises(sqlitefair.ConfigurationError, match="path must be"):
        sqlitefair.connect(b"app.db")  # type: ignore[arg-type]
    with pytest.raises(sqlitefair.ConfigurationError, match="path must be"):
        sqlitefair.connect(42)  # type: ignore[arg-type]


def test_busy_policies_reject_bad_intervals() -> None:
    with pytest.raises(ValueError):
        sqlitefair.ConstantRetry(0)
    with pytest.raises(ValueError):
        sqlitefair.FairRetry(initial=0.001, minimum=0.01)


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(sqlitefair.OpenError, match="does not exist") as info:
        sqlitefair.connect(tmp_path / "nope" / "app.db")
    assert isinstance(info.value, sqlite3.OperationalError)


def test_not_a_database_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"these are my notes, not a database\n" * 200)
    before = digest(path)
    with pytest.raises(sqlitefair.OpenError, match="is not an SQLite database") as info:
        sqlitefair.connect(path)
    assert "did not write to it" in str(info.value)
    assert digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_read_only_folder_is_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    if os.geteuid() == 0:  # root ignores permissions: use a file system mounted read-only
        with tmpfs_mount(folder) as make_read_only:
            make_database(folder / "app.db")
            before = digest(folder / "app.db")
            make_read_only()
            with pytest.raises(sqlitefair.OpenError, match="cannot open .* for the writer connection"):
                sqlitefair.connect(folder / "app.db")
            assert digest(folder / "app.db") == before
        return
    folder.mkdir()
    make_database(folder / "app.db")
    before = digest(folder / "app.db")
    folder.chmod(0o555)
    try:
        with pytest.raises(sqlitefair.OpenError, match="not writable"):
            sqlitefair.connect(folder / "app.db")
    finally:
        folder.chmod(0o755)
    assert digest(folder / "app.db") == before


def make_database(path: Path) -> None:
    seed = sqlite3.connect(path)
    seed.execute("create table t(v)")
    seed.commit()
    seed.close()


def test_on_connect_errors_propagate_and_close_the_connection(db_path: Path) -> None:
    def broken(conn: sqlite3.Connection, role: str) -> None:
        raise RuntimeError("user hook failed")

    with pytest.raises(RuntimeError, match="user hook failed"):
        sqlitefair.connect(db_path, on_connect=broken)


# -- close ------------------------------------------------------------------


def test_close_is_idempotent_and_use_after_close_is_clear(db_path: Path) -> None:
    pool = sqlitefair.connect(db_path)
    with pool.transaction() as conn:
        conn.execute("create table t(v)")
    pool.close()
    pool.close()
    assert pool.closed
    with pytest.raises(sqlitefair.PoolClosed, match="is closed") as info:
        with pool.transaction():
            pass
    assert isinstance(info.value, sqlite3.ProgrammingError)
    with pytest.raises(sqlitefair.PoolClosed):
        with pool.read():
            pass
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        sqlite3.Connection.execute(conn, "select 1")  # the writer connection was really closed


def test_context_manager_closes(db_path: Path) -> None:
    with sqlitefair.connect(db_path) as pool:
        with pool.read():
            pass
    assert pool.closed
    assert pool.stats().readers_open == 0


def test_close_waits_for_checked_out_connections(db_path: Path) -> None:
    pool = sqlitefair.connect(db_path)
    inside = threading.Event()
    finish = threading.Event()

    def slow_read() -> None:
        with pool.read() as conn:
            inside.set()
            finish.wait(10)
            conn.execute("select 1").fetchone()

    w = Worker(slow_read)
    w.start()
    assert inside.wait(10)
    threading.Timer(0.1, finish.set).start()
    pool.close(timeout=10)  # returns only once the reader is back
    w.finish()
    assert pool.stats().readers_open == 0


def test_close_serves_the_threads_already_waiting_for_the_writer(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Threads already waiting when close() starts are served first (its docstring).  On a
    free-threaded build a transaction() first waits at the baton, outside the queue: close() must
    not overtake it there, or it gets PoolClosed after having waited before the close."""
    monkeypatch.setattr(_fairlock, "BATON_WAIT", 0.2)  # (5 ms shows it too, most of the time)
    pool = sqlitefair.connect(db_path)
    lock = pool._state.writer.lock

    def waiting_write() -> None:
        with pool.transaction(timeout=10) as conn:
            conn.execute("create table t(x)")

    with held_by_another_thread(pool.transaction()) as (_, leave):
        waiter = Worker(waiting_write, name="waiter")
        waiter.start()
        wait_until(lambda: lock.statistics().waiting == 1, what="the transaction to wait")
        closer = Worker(pool.close, name="closer")
        closer.start()
        wait_until(lambda: pool._closed and queued(lock) >= 1, what="close() (or the transaction) to queue")
        time.sleep(0.002)  # close() is past the bounded hand-off window: the writer is handed over, not freed
        leave()
    waiter.finish()  # raises the waiter's exception, if any (PoolClosed)
    closer.finish()


def test_close_timeout_is_clear_and_late_returns_are_closed(db_path: Path) -> None:
    pool = sqlitefair.connect(db_path)
    inside = threading.Event()
    finish = threading.Event()
    held: list[sqlite3.Connection] = []

    def slow_write() -> None:
        with pool.transaction() as conn:
            held.append(conn)
            inside.set()
            finish.wait(10)

    w = Worker(slow_write)
    w.start()
    assert inside.wait(10)
    with pytest.raises(sqlitefair.PoolTimeout, match="1 writer and 0 reader connection\\(s\\) are still checked out"):
        pool.close(timeout=0.1)
    finish.set()
    w.finish()
    with pytest.raises(sqlite3.ProgrammingError):
        held[0].execute("select 1")


def test_close_inside_own_transaction_is_refused(pool: sqlitefair.Pool) -> None:
    with pool.transaction():
        with pytest.raises(sqlitefair.SqlitefairError, match="wait for itself"):
            pool.close()
    assert not pool.closed


def test_context_cannot_be_entered_twice(pool: sqlitefair.Pool) -> None:
    ctx = pool.transaction()
    with ctx:
        pass
    with pytest.raises(sqlitefair.SqlitefairError, match="already entered"):
        with ctx:
            pass


# -- fork -------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork() with threads running (pytest-timeout's)
def test_fork_child_gets_fresh_connections_and_parent_is_unaffected(
    pool: sqlitefair.Pool, committed: Callable[..., list[object]]
) -> None:
    with pool.transaction() as parent_writer:
        parent_writer.execute("insert into t(v) values ('parent-1')")
    with pool.read() as parent_reader:
        pass

    def child() -> str:
        with pool.transaction() as conn:
            assert conn is not parent_writer
            conn.execute("insert into t(v) values ('child')")
        with pool.read() as conn:
            assert conn is not parent_reader
            n = conn.execute("select count(*) from t").fetchone()[0]
        return f"ok {n}"

    assert run_in_fork(child) == "ok 2"
    # The parent's connections still work after the child exited.
    with pool.transaction() as conn:
        assert conn is parent_writer
        conn.execute("insert into t(v) values ('parent-2')")
    with pool.read() as conn:
        assert [r[0] for r in conn.execute("select v from t order by id")] == ["parent-1", "child", "parent-2"]
    assert committed("pragma integrity_check") == ["ok"]


# -- statistics and public surface ------------------------------------------


def test_stats_count_waits_and_describe_the_environment(pool: sqlitefair.Pool) -> None:
    for _ in range(3):
        with pool.transaction() as conn:
            conn.execute("insert into t(v) values (1)")
    with pool.read():
        pass
    stats = pool.stats()
    assert stats.writes.count == 4  # the fixture's create table too
    assert stats.reads.count == 1
    assert 0 <= stats.writes.p50 <= stats.writes.p99 <= stats.writes.max
    assert stats.writes.total >= stats.writes.max
    assert stats.backend == pool.backend.name and stats.sqlite_version == pool.backend.sqlite_version()
    assert stats.gil_enabled == sqlitefair.gil_enabled()
    assert stats.busy_policy == "fair-retry"
    assert (stats.writer_queue, stats.reader_queue, stats.readers_in_use) == (0, 0, 0)


def test_public_surface_is_pinned() -> None:
    assert set(sqlitefair.__all__) == {
        "connect", "Pool", "PoolStats", "WaitStats", "BusyPolicy", "FairRetry", "ConstantRetry",
        "SQLiteBusyTimeout", "Backend", "FairLock", "FairSemaphore", "Permit", "LockStatistics", "GroupCommitError",
        "LockTimeout", "WouldBlock", "CancelScope", "WaitCancelled", "SqlitefairError", "PoolTimeout", "PoolClosed", "NotCheckedOut", "TransactionControlError", "NestingError",
        "ConfigurationError", "OpenError", "FreeThreadingWarning", "WalResetBugWarning", "ProcessQueueWarning", "DEFAULT_PRAGMAS",
        "gil_enabled", "has_wal_reset_bug", "__version__",
    }  # fmt: skip
    for name in sqlitefair.__all__:
        assert hasattr(sqlitefair, name), name
    assert isinstance(sqlitefair.__all__, tuple)


def test_errors_pickle_with_their_fields() -> None:
    import pickle

    err = sqlitefair.PoolTimeout("waited", waiting_for="writer", waited=1.5, queued=3, holder="t1")
    copy = pickle.loads(pickle.dumps(err))
    assert (str(copy), copy.waiting_for, copy.waited, copy.queued, copy.holder) == ("waited", "writer", 1.5, 3, "t1")
    assert sys.modules["sqlitefair"] is sqlitefair


def test_connect_waits_for_another_connections_exclusive_lock(db_path: Path) -> None:
    """Opening while another connection holds an exclusive lock (switching to WAL, a checkpoint
    on close, a rollback-journal writer) waits under the busy policy instead of failing."""
    other = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    other.execute("create table t(v)")
    other.execute("begin exclusive")  # still journal_mode=delete: readers are locked out too
    timer = threading.Timer(0.3, lambda: other.execute("commit"))
    timer.start()
    try:
        with pytest.raises(sqlitefair.PoolTimeout) as info:
            sqlitefair.connect(db_path, timeout=0.05)
        assert info.value.waiting_for == "write lock"
        with sqlitefair.connect(db_path, timeout=10) as pool, pool.read() as conn:
            assert conn.execute("pragma journal_mode").fetchone() == ("wal",)
    finally:
        timer.join()
        other.close()


def test_a_relative_path_keeps_naming_the_same_file_after_chdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Connections opened after os.chdir() open the file the pool was made for (they re-resolved
    the relative path, opened another file, and the pool reported its file deleted)."""
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(home)
    pool = sqlitefair.connect("app.db", readers=1)
    try:
        with pool.transaction() as conn:
            conn.execute("create table t(v)")
            conn.execute("insert into t values (1)")
        monkeypatch.chdir(elsewhere)
        with pool.read() as conn:  # the reader connection is opened now
            assert conn.execute("select count(*) from t").fetchone()[0] == 1
        assert not (elsewhere / "app.db").exists()
    finally:
        pool.close()
