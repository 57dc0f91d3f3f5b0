"""Backend specifics: apsw's busy handler, version reports, warnings, one SQLite library per file."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time
import warnings
from pathlib import Path
from typing import Callable

import pytest
from _helpers import Worker, wait_until
from _workers import hold_write_lock
from conftest import require_backend

import sqlitefair
from sqlitefair import _backends


@pytest.mark.parametrize(
    ("version", "affected"),
    [
        ("3.6.23", False),  # before WAL existed
        ("3.7.0", True),
        ("3.40.1", True),
        ("3.44.5", True),
        ("3.44.6", False),
        ("3.45.0", True),
        ("3.50.6", True),
        ("3.50.7", False),
        ("3.51.2", True),
        ("3.51.3", False),
        ("3.54.1", False),
    ],
)
def test_wal_reset_bug_versions(version: str, affected: bool) -> None:
    assert sqlitefair.has_wal_reset_bug(version) is affected


def hold_lock_in_other_process(db_path: Path, tmp_path: Path, seconds: float) -> multiprocessing.process.BaseProcess:
    ready = tmp_path / "ready"
    process = multiprocessing.get_context("spawn").Process(
        target=hold_write_lock, args=(str(db_path), seconds, str(ready))
    )
    process.start()
    wait_until(ready.exists, timeout=30, what="the other process to take the write lock")
    return process


def test_wal_reset_warning_names_the_fix_when_another_process_writes(
    make_pool: Callable[..., sqlitefair.Pool], db_path: Path, tmp_path: Path, backend: str
) -> None:
    pool = make_pool(timeout=30)
    with pool.transaction() as conn:
        conn.execute("create table t(v)")
    other = hold_lock_in_other_process(db_path, tmp_path, 0.3)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pool.transaction() as conn:
                conn.execute("insert into t values (1)")
            with pool.transaction() as conn:  # warned once per pool, not per write
                conn.execute("insert into t values (2)")
    finally:
        other.join(30)
    found = [w for w in caught if issubclass(w.category, sqlitefair.WalResetBugWarning)]
    assert pool.stats().busy_retries > 0
    if sqlitefair.has_wal_reset_bug(pool.stats().sqlite_version):
        assert len(found) == 1
        message = str(found[0].message)
        assert pool.stats().sqlite_version in message and "walresetbug" in message
        if _backends.apsw_sqlite_version() and backend == "sqlite3":
            assert "backend='apsw'" in message
        assert pool.stats().wal_reset_bug
    else:
        assert found == []
        assert not pool.stats().wal_reset_bug


def test_stats_report_each_backends_sqlite_version(tmp_path: Path) -> None:
    with sqlitefair.connect(tmp_path / "a.db") as pool:
        assert pool.stats().sqlite_version == sqlite3.sqlite_version
    require_backend("apsw")
    import apsw

    with sqlitefair.connect(tmp_path / "b.db", backend="apsw") as pool:
        stats = pool.stats()
        assert stats.backend == "apsw" and stats.sqlite_version == apsw.sqlite_lib_version()


def test_two_sqlite_libraries_on_one_file_are_refused(tmp_path: Path) -> None:
    require_backend("apsw")
    path = tmp_path / "one.db"
    with sqlitefair.connect(path):
        with pytest.raises(sqlitefair.ConfigurationError, match="two copies of SQLite"):
            sqlitefair.connect(path, backend="apsw")
    # Once the first pool is closed, the other library may open the file.
    with sqlitefair.connect(path, backend="apsw"):
        pass


def test_apsw_timeout_is_also_an_apsw_busy_error(db_path: Path, tmp_path: Path) -> None:
    require_backend("apsw")
    import apsw

    with sqlitefair.connect(db_path, backend="apsw") as pool:
        other = hold_lock_in_other_process(db_path, tmp_path, 1.0)
        try:
            with pytest.raises(sqlitefair.PoolTimeout) as info:
                with pool.transaction(timeout=0.2):
                    pass
        finally:
            other.join(30)
    err = info.value
    assert isinstance(err, apsw.BusyError) and isinstance(err, sqlite3.OperationalError)
    assert err.waiting_for == "write lock" and err.busy_retries and err.busy_retries > 5


def test_apsw_busy_handler_lets_other_threads_run(db_path: Path, tmp_path: Path) -> None:
    """While a writer waits in apsw's busy handler for another process, a pure-Python
    thread keeps most of its speed: the handler sleeps with the GIL released.

    A handler that slept holding the GIL would let the counter run only between
    sleeps (about 1% of the time); the bound below is far from both outcomes.
    """
    require_backend("apsw")
    stop = threading.Event()
    counter = [0]

    def count() -> None:
        while not stop.is_set():
            counter[0] += 1

    def counted_over(seconds: float) -> int:
        before = counter[0]
        time.sleep(seconds)
        return counter[0] - before

    pool = sqlitefair.connect(db_path, backend="apsw", timeout=30)
    counting = Worker(count)
    counting.start()
    try:
        baseline = counted_over(0.3)
        other = hold_lock_in_other_process(db_path, tmp_path, 1.5)

        def write_once() -> None:
            with pool.transaction() as conn:
                conn.execute("create table t(v)")

        waiting = Worker(write_once)
        waiting.start()
        time.sleep(0.1)
        during = counted_over(0.3)
        assert waiting.is_alive(), "the writer should still be waiting for the other process"
        waiting.finish()
        other.join(30)
    finally:
        stop.set()
        counting.finish()
        pool.close()
    assert pool.stats().busy_retries > 10
    assert during >= 0.25 * baseline, f"counter made {during} steps while waiting vs {baseline} before"


def test_apsw_on_a_free_threaded_build_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    require_backend("apsw")
    from sqlitefair import _backend_apsw

    monkeypatch.setattr(_backend_apsw.sysconfig, "get_config_var", lambda name: 1)
    monkeypatch.setattr(_backend_apsw, "gil_enabled", lambda: True)
    with pytest.warns(sqlitefair.FreeThreadingWarning, match="re-enabled the GIL"):
        _backend_apsw.ApswBackend()
    monkeypatch.setattr(_backend_apsw.sysconfig, "get_config_var", lambda name: 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _backend_apsw.ApswBackend()  # a GIL build: nothing to say


def test_missing_apsw_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, db_path: Path) -> None:
    import builtins

    real_import = builtins.__import__

    def no_apsw(name: str, *args: object, **kwargs: object) -> object:
        if name == "apsw" or name.endswith("_backend_apsw"):
            raise ImportError("No module named 'apsw'")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_apsw)
    with pytest.raises(sqlitefair.ConfigurationError, match=r"pip install 'sqlitefair\[apsw\]'"):
        sqlitefair.connect(db_path, backend="apsw")
