"""Shared fixtures: real database files under tmp_path, pools closed after each test."""

from __future__ import annotations

import gc
import os
import sys
import sysconfig
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

import sqlitefair

FREE_THREADED_BUILD = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))

#: Multiplies the thread counts of the concurrency tests (CI sets it on the free-threaded
#: build, where races that the GIL hides can show up).
STRESS = max(1, int(os.environ.get("SQLITEFAIR_STRESS", "1")))

#: Backends the pool's suite runs against; a backend whose binding is missing is skipped.
BACKENDS = ["sqlite3", "apsw"]


def require_backend(name: str) -> None:
    """Skip the test unless ``name`` can be used here without side effects."""
    if name == "apsw":
        if FREE_THREADED_BUILD:
            pytest.skip("importing apsw re-enables the GIL on free-threaded builds")
        pytest.importorskip("apsw")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "app.db"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    require_backend(request.param)
    return request.param


def open_plain(path: Path | str, backend: str) -> Any:
    """A plain autocommit connection of the same SQLite library as ``backend``.

    Tests must not mix libraries on one file in one process: the stdlib's
    SQLite and apsw's bundled copy do not see each other's POSIX locks, and
    closing one drops the other's (https://www.sqlite.org/howtocorrupt.html#multiple_copies).
    """
    if backend == "apsw":
        import apsw

        return apsw.Connection(str(path))
    import sqlite3

    return sqlite3.connect(path, isolation_level=None, check_same_thread=False)


@pytest.fixture
def other_connection(db_path: Path, backend: str) -> Iterator[Callable[[], Any]]:
    """Factory of plain connections to ``db_path`` beside the pool (closed at teardown)."""
    opened: list[Any] = []

    def factory() -> Any:
        conn = open_plain(db_path, backend)
        opened.append(conn)
        return conn

    yield factory
    for conn in opened:
        conn.close()


@pytest.fixture
def committed(db_path: Path, backend: str) -> Callable[..., list[Any]]:
    """``committed(sql)``: first column of each row, read by an independent connection."""

    def read(sql: str = "select v from t order by id") -> list[Any]:
        conn = open_plain(db_path, backend)
        try:
            return [row[0] for row in conn.execute(sql).fetchall()]
        finally:
            conn.close()

    return read


def trace_statements(conn: Any, record: Callable[[str], None]) -> None:
    """Call ``record(sql)`` for every statement ``conn`` runs (sqlite3 or apsw)."""
    if hasattr(conn, "set_trace_callback"):
        conn.set_trace_callback(record)
    else:  # apsw

        def tracer(cursor: Any, sql: str, bindings: Any) -> bool:
            record(sql)
            return True

        conn.exec_trace = tracer


@pytest.fixture
def make_pool(db_path: Path, backend: str) -> Iterator[Callable[..., sqlitefair.Pool]]:
    """Factory for pools on ``db_path`` with the parametrised backend; all closed at teardown."""
    pools: list[sqlitefair.Pool] = []

    def factory(path: Path | str = db_path, **kwargs: object) -> sqlitefair.Pool:
        kwargs.setdefault("backend", backend)
        pool = sqlitefair.connect(path, **kwargs)  # type: ignore[arg-type]
        pools.append(pool)
        return pool

    yield factory
    for pool in pools:
        pool.close(timeout=10)


@pytest.fixture
def pool(make_pool: Callable[..., sqlitefair.Pool]) -> sqlitefair.Pool:
    """A pool with a table ``t(id integer primary key, v)``."""
    p = make_pool(readers=2, timeout=10)
    with p.transaction() as conn:
        conn.execute("create table t(id integer primary key, v)")
    return p


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if a test left a pool unclosed, or (free-threaded build) anything turned the GIL back on."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        gc.collect()  # an unclosed pool still in memory warns now (one collected earlier failed its test)
    unclosed = [str(w.message) for w in caught if "unclosed sqlitefair pool" in str(w.message)]
    if unclosed:
        print(f"\nERROR: the tests left {len(unclosed)} pool(s) unclosed:", *unclosed, sep="\n  ", file=sys.stderr)
        session.exitstatus = 1
    if FREE_THREADED_BUILD and sys._is_gil_enabled():  # type: ignore[attr-defined]
        print("\nERROR: the GIL was re-enabled during the test run on a free-threaded build", file=sys.stderr)
        session.exitstatus = 1
