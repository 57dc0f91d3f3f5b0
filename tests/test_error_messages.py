"""Mistakes a newcomer makes first, and what they are told: at once, by name, the same in both APIs.

* a folder given as the database path;
* a read-only URI (``mode=ro``, ``immutable=1``), which used to open fine and fail at the first write;
* ``read()`` nested in as many ``read()`` blocks of one thread as the pool has readers, which used
  to wait for itself until the timeout;
* the asyncio facade raising other exception types than the synchronous pool for the same misuse.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable

import pytest

import sqlitefair


def test_a_directory_as_the_path_says_it_is_a_directory(tmp_path: Path, backend: str) -> None:
    with pytest.raises(sqlitefair.OpenError, match="is a directory, not a database file") as info:
        sqlitefair.connect(tmp_path, backend=backend)
    assert str(tmp_path / "app.db") in str(info.value)


@pytest.mark.parametrize("query", ["mode=ro", "immutable=1", "cache=shared&immutable=true", "mode=ro&cache=private"])
def test_read_only_uris_are_refused_at_connect(db_path: Path, query: str) -> None:
    sqlitefair.connect(db_path).close()  # the database exists
    with pytest.raises(sqlitefair.ConfigurationError, match=r"read-only .* would fail at the first write"):
        sqlitefair.connect(f"file:{db_path}?{query}")


@pytest.mark.parametrize("query", ["mode=rw", "mode=rwc&cache=private", "immutable=0"])
def test_writable_uris_are_still_accepted(db_path: Path, query: str) -> None:
    sqlitefair.connect(db_path).close()
    with sqlitefair.connect(f"file:{db_path}?{query}") as pool:
        with pool.transaction() as conn:
            conn.execute("create table if not exists t(v)")


def test_reads_nested_deeper_than_the_readers_raise_at_once(make_pool: Callable[..., sqlitefair.Pool]) -> None:
    pool = make_pool(readers=2, timeout=5)
    with pool.read() as outer, pool.read() as inner:
        start = time.monotonic()
        with pytest.raises(sqlitefair.NestingError, match="readers=2.*would wait for itself"):
            with pool.read():
                pass
        assert time.monotonic() - start < 1.0, "it waited instead of raising"
        outer.execute("select 1").fetchall()
        inner.execute("select 1").fetchall()
    assert pool.stats().readers_in_use == 0
    with pool.read() as conn, pool.read():  # both readers free again
        conn.execute("select 1").fetchall()


def test_a_nested_read_still_waits_for_another_threads_reader(make_pool: Callable[..., sqlitefair.Pool]) -> None:
    """Only the readers this thread holds itself make it refuse: one held by another thread comes back."""
    pool = make_pool(readers=2, timeout=10)
    taken, release = threading.Event(), threading.Event()

    def other() -> None:
        with pool.read():
            taken.set()
            release.wait(10)

    thread = threading.Thread(target=other)
    thread.start()
    try:
        assert taken.wait(10)
        with pool.read():
            threading.Timer(0.1, release.set).start()
            with pool.read() as conn:  # waits for the other thread's reader
                assert conn.execute("select 1").fetchone() == (1,)
    finally:
        release.set()
        thread.join(10)
