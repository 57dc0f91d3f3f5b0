"""Reads: parallel read-only readers, FIFO checkout, reading one's own writes, clear timeouts."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

import pytest
from _helpers import Worker, held_by_another_thread, wait_until

import sqlitefair


def test_two_readers_inside_a_read_at_once_while_the_writer_holds_a_transaction(pool: sqlitefair.Pool) -> None:
    with pool.transaction() as conn:
        conn.execute("insert into t(v) values ('committed')")
    both_inside = threading.Barrier(2)

    def read() -> list[str]:
        with pool.read() as conn:
            both_inside.wait(10)  # raises BrokenBarrierError unless the other reader is inside too
            return [r[0] for r in conn.execute("select v from t order by id")]

    with pool.transaction() as writer:
        writer.execute("insert into t(v) values ('uncommitted')")
        readers = [Worker(read, name=f"reader-{i}") for i in range(2)]
        for r in readers:
            r.start()
        results = [r.finish() for r in readers]
    assert results == [["committed"], ["committed"]]  # snapshot isolation: no dirty reads


def test_readers_are_query_only(pool: sqlitefair.Pool) -> None:
    with pool.read() as conn:
        with pytest.raises(pool.backend.error, match="readonly"):
            conn.execute("insert into t(v) values ('no')")
        assert conn.execute("pragma query_only").fetchone()[0] == 1


def test_read_inside_transaction_gets_the_writer_and_sees_its_own_writes(pool: sqlitefair.Pool) -> None:
    with pool.transaction() as writer:
        writer.execute("insert into t(v) values ('mine')")
        with pool.read() as conn:
            assert conn is writer
            assert conn.execute("select v from t").fetchall() == [("mine",)]
        # The borrowed writer stays in the transaction after the read block.
        assert writer.in_transaction
    assert pool.stats().readers_in_use == 0


def test_readers_are_reused_and_limited(pool: sqlitefair.Pool) -> None:
    # Another thread's reader: a read nested in all of this thread's own raises NestingError instead.
    with held_by_another_thread(pool.read()) as (b, _), pool.read() as a:
        assert a is not b
        with pytest.raises(sqlitefair.PoolTimeout) as info:
            with pool.read(timeout=0.05):
                pass
    err = info.value
    assert err.waiting_for == "reader"
    assert "2 reader connections" in str(err) and "all 2 are checked out" in str(err)
    with pool.read() as c:
        assert c in (a, b)
    stats = pool.stats()
    assert stats.readers_open == 2 and stats.read_timeouts == 1 and stats.readers_in_use == 0


def test_reader_checkout_is_fifo(make_pool: Callable[..., sqlitefair.Pool]) -> None:
    pool = make_pool(readers=1)
    served: list[int] = []
    order = [3, 0, 2, 1, 4]

    def read(tag: int) -> None:
        with pool.read():
            served.append(tag)

    workers = []
    with pool.read():
        for position, tag in enumerate(order):
            w = Worker(read, tag)
            w.start()
            workers.append(w)
            wait_until(lambda: pool.stats().reader_queue == position + 1)
    for w in workers:
        w.finish()
    assert served == order


def test_open_transaction_left_by_a_reader_is_rolled_back(pool: sqlitefair.Pool) -> None:
    with pool.read() as conn:
        conn.execute("begin")
        conn.execute("select * from t").fetchall()
    with pool.read() as again:
        assert again is conn
        assert not again.in_transaction


def test_readers_see_commits_made_after_they_were_opened(pool: sqlitefair.Pool, db_path: Path) -> None:
    with pool.read() as conn:
        assert conn.execute("select count(*) from t").fetchone() == (0,)
    with pool.transaction() as w:
        w.execute("insert into t(v) values (1)")
    with pool.read() as conn:
        assert conn.execute("select count(*) from t").fetchone() == (1,)
