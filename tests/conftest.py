"""Shared fixtures: real database files under tmp_path, pools closed after each test."""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path
from typing import Callable, Iterator

import pytest

import sqlitefair

FREE_THREADED_BUILD = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))

#: Backends the pool's suite runs against; a backend whose binding is missing is skipped.
BACKENDS = ["sqlite3"]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "app.db"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "apsw":
        pytest.importorskip("apsw")
    return request.param


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
    """On a free-threaded build, fail the run if anything turned the GIL back on."""
    if FREE_THREADED_BUILD and sys._is_gil_enabled():  # type: ignore[attr-defined]
        print("\nERROR: the GIL was re-enabled during the test run on a free-threaded build", file=sys.stderr)
        session.exitstatus = 1
