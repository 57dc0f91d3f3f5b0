"""Mistakes a newcomer makes first, and what they are told: at once, by name, the same in both APIs.

* a folder given as the database path;
* a read-only URI (``mode=ro``, ``immutable=1``), which used to open fine and fail at the first write;
* ``read()`` nested in as many ``read()`` blocks of one thread as the pool has readers, which used
  to wait for itself until the timeout;
* the asyncio facade raising other exception types than the synchronous pool for the same misuse.
"""

from __future__ import annotations

import asyncio
import threading
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest
from _helpers import held_by_another_thread

import sqlitefair
import sqlitefair.aio
from sqlitefair.aio import AsyncPool


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
    with held_by_another_thread(pool.read()) as (_, leave), pool.read():
        threading.Timer(0.1, leave).start()
        with pool.read() as conn:  # waits for the other thread's reader
            assert conn.execute("select 1").fetchone() == (1,)


# -- the same misuse, the same exception, sync and asyncio ------------------------------------------


def _sync_use_after_the_block(pool: sqlitefair.Pool) -> None:
    with pool.read() as conn:
        pass
    conn.execute("select 1")


async def _aio_use_after_the_block(apool: AsyncPool) -> None:
    async with apool.read() as conn:
        pass
    await conn.execute("select 1")


def _sync_reads_nested_past_the_readers(pool: sqlitefair.Pool) -> None:
    with pool.read(), pool.read(), pool.read():
        pass


async def _aio_reads_nested_past_the_readers(apool: AsyncPool) -> None:
    async with apool.read(), apool.read(), apool.read():
        pass


def _sync_close_inside_a_transaction(pool: sqlitefair.Pool) -> None:
    with pool.transaction():
        pool.close()


async def _aio_close_inside_a_transaction(apool: AsyncPool) -> None:
    async with apool.transaction():
        await apool.close()


def _sync_close_inside_a_read(pool: sqlitefair.Pool) -> None:
    with pool.read():
        pool.close()


async def _aio_close_inside_a_read(apool: AsyncPool) -> None:
    async with apool.read():
        await apool.close()


def _sync_entered_twice(pool: sqlitefair.Pool) -> None:
    block = pool.transaction()
    with block:
        pass
    with block:
        pass


async def _aio_entered_twice(apool: AsyncPool) -> None:
    block = apool.transaction()
    async with block:
        pass
    async with block:
        pass


def _sync_bad_timeout(pool: sqlitefair.Pool) -> None:
    pool.read(timeout=-1)


async def _aio_bad_timeout(apool: AsyncPool) -> None:
    apool.read(timeout=-1)


def _sync_bad_argument(pool: sqlitefair.Pool) -> None:
    sqlitefair.connect(pool.path, readers=-1)


async def _aio_bad_argument(apool: AsyncPool) -> None:
    AsyncPool(apool.pool, idle_threads=-1)


def _sync_timeout(pool: sqlitefair.Pool) -> None:
    with pool.transaction(timeout=0.05):
        pass


async def _aio_timeout(apool: AsyncPool) -> None:
    async with apool.transaction(timeout=0.05):
        pass


def _sync_after_close(pool: sqlitefair.Pool) -> None:
    pool.close()
    with pool.read():
        pass


async def _aio_after_close(apool: AsyncPool) -> None:
    await apool.close()
    async with apool.read():
        pass


MISUSES: dict[str, tuple[Callable[[sqlitefair.Pool], None], Callable[[AsyncPool], Awaitable[None]], type[Exception]]] = {
    "a connection used after its block": (_sync_use_after_the_block, _aio_use_after_the_block, sqlitefair.NotCheckedOut),
    "reads nested past the readers": (_sync_reads_nested_past_the_readers, _aio_reads_nested_past_the_readers, sqlitefair.NestingError),
    "close() inside a transaction": (_sync_close_inside_a_transaction, _aio_close_inside_a_transaction, sqlitefair.SqlitefairError),
    "close() inside a read": (_sync_close_inside_a_read, _aio_close_inside_a_read, sqlitefair.SqlitefairError),
    "a block entered twice": (_sync_entered_twice, _aio_entered_twice, sqlitefair.SqlitefairError),
    "a bad timeout": (_sync_bad_timeout, _aio_bad_timeout, sqlitefair.ConfigurationError),
    "a bad argument": (_sync_bad_argument, _aio_bad_argument, sqlitefair.ConfigurationError),
    "a wait past the timeout": (_sync_timeout, _aio_timeout, sqlitefair.PoolTimeout),
    "use after close()": (_sync_after_close, _aio_after_close, sqlitefair.PoolClosed),
}


def _raised(run: Callable[[], Any]) -> BaseException:
    try:
        run()
    except Exception as exc:  # noqa: BLE001 - what it raised is the point
        return exc
    raise AssertionError("no exception")


@pytest.mark.parametrize("misuse", MISUSES, ids=list(MISUSES))
def test_sync_and_asyncio_raise_the_same_exception(misuse: str, db_path: Path, backend: str) -> None:
    sync_misuse, aio_misuse, expected = MISUSES[misuse]
    errors = []
    for flavour in ("sync", "aio"):
        pool = sqlitefair.connect(db_path, readers=2, timeout=3, backend=backend)
        apool = AsyncPool(pool)
        holder = held_by_another_thread(pool.transaction()) if misuse == "a wait past the timeout" else nullcontext()
        start = time.monotonic()
        try:
            with holder:
                if flavour == "sync":
                    errors.append(_raised(lambda: sync_misuse(pool)))
                else:
                    errors.append(_raised(lambda: asyncio.run(aio_misuse(apool))))
        finally:
            asyncio.run(apool.close())
        assert time.monotonic() - start < 2.5, f"{flavour}: {misuse} waited for the timeout instead of raising at once"
    sync_error, aio_error = errors
    assert type(sync_error) is type(aio_error), (sync_error, aio_error)
    assert isinstance(sync_error, expected), sync_error
