"""Crashes and invariants: SIGKILL in the middle of transactions, interrupts while queued, bank transfers."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from _helpers import Worker, wait_until
from _workers import aborting_writer, crash_writer, transfer_money

import sqlitefair

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signals")


def make_crash_db(folder: Path) -> tuple[Path, Path, Path, tuple[str, str, str]]:
    """A database for the crash writers in ``folder``: its path, the writers' log, the file
    that stops them once it exists, and the writers' arguments (those three as strings)."""
    path, log, stop = folder / "crash.db", folder / "writes.log", folder / "stop"
    with sqlitefair.connect(path) as pool, pool.transaction() as conn:
        conn.execute("create table log(id integer primary key, key text unique)")
        conn.execute("create table counter(n int)")
        conn.execute("insert into counter values (0)")
    return path, log, stop, (str(path), str(log), str(stop))


class CrashLog:
    """What the writer processes logged, and what the database holds afterwards."""

    def __init__(self, path: Path, log: Path) -> None:
        lines = log.read_text().splitlines()

        def keys(kind: str) -> set[str]:
            return {line.split()[1] for line in lines if line.startswith(kind + " ")}

        self.begun, self.ok, self.aborted, self.interrupted = (
            keys(kind) for kind in ("begin", "ok", "aborted", "interrupted")
        )
        self.failed = [line for line in lines if line.startswith("failed ")]
        self.max_waits = [float(line.split()[1]) for line in lines if line.startswith("maxwait ")]
        conn = sqlite3.connect(path)
        try:
            self.integrity = conn.execute("pragma integrity_check").fetchone()[0]
            self.in_db = {row[0] for row in conn.execute("select key from log")}
            (self.counter,) = conn.execute("select n from counter").fetchone()
        finally:
            conn.close()

    def check(self, *, killed: int, processes: int) -> None:
        assert self.integrity == "ok"
        assert self.failed == [], self.failed[:3]
        assert self.ok <= self.in_db, f"{len(self.ok - self.in_db)} transactions reported committed are missing"
        assert self.in_db <= self.begun
        ended_early = (self.aborted | self.interrupted) & self.in_db
        assert not ended_early, f"{len(ended_early)} transactions that raised are in the database"
        # Only a killed process's last transaction may be in the database without its "ok".
        assert len(self.in_db - self.ok) <= killed
        assert self.counter == len(self.in_db), "a transaction was applied partially"
        assert len(self.max_waits) == processes
        assert max(self.max_waits) < 30, "a writer stalled up to its timeout"


def test_sigkill_in_the_middle_of_transactions_loses_nothing_that_committed(tmp_path: Path) -> None:
    path, log, stop, args = make_crash_db(tmp_path)
    ctx = multiprocessing.get_context("spawn")
    survivors = [ctx.Process(target=crash_writer, args=args) for _ in range(2)]
    for p in survivors:
        p.start()
    rng = random.Random(7)
    killed = 0

    def begun_by(pid: int | None) -> int:
        return log.read_text().count(f"begin {pid}-") if log.exists() else 0

    try:
        for _ in range(5):
            victim = ctx.Process(target=crash_writer, args=args)
            victim.start()
            # Kill it once it is writing (spawn start-up can be slow on a busy machine).
            wait_until(lambda: begun_by(victim.pid) > 20, timeout=30, what="the victim to write")
            time.sleep(rng.random() * 0.2)
            os.kill(victim.pid, signal.SIGKILL)  # type: ignore[arg-type]
            victim.join(10)
            killed += 1
    finally:
        stop.touch()
        for p in survivors:
            p.join(60)
    assert [p.exitcode for p in survivors] == [0, 0]
    CrashLog(path, log).check(killed=killed, processes=len(survivors))


def test_exceptions_and_sigint_in_the_middle_of_transactions_leave_nothing_behind(tmp_path: Path) -> None:
    """Two processes write throughout; two more end about one transaction in five in the middle
    (an exception in worker threads, a real SIGINT in the main thread). None of those is in
    the database, every reported commit is, and the writer is never left stuck."""
    path, log, stop, args = make_crash_db(tmp_path)
    ctx = multiprocessing.get_context("spawn")
    processes = [ctx.Process(target=crash_writer, args=args) for _ in range(2)]
    processes += [ctx.Process(target=aborting_writer, args=(*args, 3)) for _ in range(2)]
    for p in processes:
        p.start()

    def ended_early(kind: str) -> int:
        return log.read_text().count(f"\n{kind} ") if log.exists() else 0

    try:
        wait_until(
            lambda: ended_early("interrupted") >= 10 and ended_early("aborted") >= 10,
            timeout=60,
            what="ten interrupted and ten aborted transactions",
        )
    finally:
        stop.touch()
        for p in processes:
            p.join(60)
    assert [p.exitcode for p in processes] == [0] * len(processes)
    result = CrashLog(path, log)
    result.check(killed=0, processes=len(processes))
    assert len(result.interrupted) >= 10 and len(result.aborted) >= 10
    assert result.in_db == result.ok  # nobody was killed: exactly the reported commits


def test_keyboard_interrupt_while_queued_for_the_writer(db_path: Path) -> None:
    """A real SIGINT delivered while the main thread waits in the queue leaves the pool consistent."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals go to the main thread")
    pool = sqlitefair.connect(db_path, timeout=30)
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with pool.transaction() as conn:
            conn.execute("create table t(v)")
            held.set()
            release.wait(20)

    holder = Worker(hold)
    holder.start()
    assert held.wait(10)

    def interrupt_once_queued() -> None:
        wait_until(lambda: pool.stats().writer_queue == 1)
        # A real signal to the main thread (interrupt_main() would only trip the flag, and the
        # main thread would notice it only once its wait ended on its own).
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    interrupter = Worker(interrupt_once_queued)
    interrupter.start()
    with pytest.raises(KeyboardInterrupt):
        with pool.transaction():
            pytest.fail("should have been interrupted while queued")
    interrupter.finish()
    assert pool.stats().writer_queue == 0
    release.set()
    holder.finish()
    with pool.transaction(timeout=5) as conn:
        conn.execute("insert into t values (1)")
    pool.close()


def test_bank_transfers_across_threads_and_processes_keep_the_total(tmp_path: Path) -> None:
    path = tmp_path / "bank.db"
    accounts = 10
    with sqlitefair.connect(path) as pool, pool.transaction() as conn:
        conn.execute("create table accounts(id integer primary key, balance int not null check (balance >= 0))")
        conn.execute("create table transfers(id text primary key, src int, dst int, amount int)")
        conn.executemany("insert into accounts values (?, 1000)", [(i,) for i in range(accounts)])
    ctx = multiprocessing.get_context("spawn")
    start_at = time.time() + 2.0
    with ctx.Pool(3) as mp:
        results = [
            mp.apply_async(transfer_money, (str(path), f"p{p}", 4, 60, accounts, start_at)) for p in range(3)
        ]
        local = transfer_money(str(path), "main", 4, 60, accounts, start_at)  # this process too
        committed = local + sum(r.get(timeout=120) for r in results)
    conn = sqlite3.connect(path)
    try:
        (total,) = conn.execute("select sum(balance) from accounts").fetchone()
        (count,) = conn.execute("select count(*) from transfers").fetchone()
        (moved_out,) = conn.execute("select coalesce(sum(amount), 0) from transfers").fetchone()
        assert conn.execute("pragma integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()
    assert total == accounts * 1000
    assert count == committed  # each transfer applied exactly once (ids are primary keys)
    assert moved_out > 0


def run_constant_readers(pool: sqlitefair.Pool, commits: int) -> int:
    """Commit ``commits`` small rows while three threads read all the time; return the largest WAL seen."""
    stop = threading.Event()
    largest = 0

    def read() -> None:
        while not stop.is_set():
            with pool.read() as conn:
                conn.execute("select count(*), sum(length(v)) from t").fetchone()

    readers = [Worker(read) for _ in range(3)]
    for r in readers:
        r.start()
    wait_until(lambda: pool.stats().readers_open == 3)
    try:
        for _ in range(commits):
            with pool.transaction() as conn:
                conn.execute("insert into t(v) values (randomblob(300))")
            largest = max(largest, pool.stats().wal_bytes)
    finally:
        stop.set()
        for r in readers:
            r.finish()
    return largest


def test_external_checkpoints_leave_every_checkpoint_to_another_program(db_path: Path, backend: str) -> None:
    """``checkpoints="external"``: after far more than SQLite's auto-checkpoint threshold (1000
    pages) of commits, with readers, no page went back into the database file and the pool ran
    no checkpoint of its own; with the default, the same load did checkpoint (the control)."""
    sizes = {}
    for mode in ("auto", "external"):
        path = db_path.with_name(f"{mode}.db")
        pool = sqlitefair.connect(path, backend=backend, checkpoints=mode)
        try:
            with pool.transaction() as conn:
                conn.execute("create table t(id integer primary key, v blob)")
            before = os.path.getsize(path)
            for _ in range(60):  # 60 x 100 rows x 1 KiB: about 1500 pages of 4 KiB
                with pool.transaction() as conn:
                    conn.executemany("insert into t(v) values (randomblob(1024))", [()] * 100)
                with pool.read() as conn:
                    conn.execute("select count(*) from t").fetchone()
            sizes[mode] = (before, os.path.getsize(path), os.path.getsize(f"{path}-wal"), pool.stats())
        finally:
            pool.close()
    before, after, wal, stats = sizes["external"]
    assert after == before, f"{after - before} bytes were checkpointed into the database file"
    assert wal > 6 * 2**20 and stats.checkpoints == 0 and stats.checkpoints_skipped == 0
    before, after, _, _ = sizes["auto"]
    assert after > before + 2**20, "the control did not checkpoint: the test would prove nothing"


@pytest.mark.parametrize("limit", [None, 512 * 1024])
def test_wal_stays_bounded_under_constant_readers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int | None
) -> None:
    """Without wal_limit the WAL of a busy database grows without bound (checkpoint starvation);
    with it, sqlitefair keeps the WAL near the limit."""
    monkeypatch.setattr(sqlitefair._defaults, "WAL_CHECK_INTERVAL", 0.0)  # look after every commit
    monkeypatch.setattr(sqlitefair._defaults, "CHECKPOINT_READER_WAIT", 5.0)
    pool = sqlitefair.connect(tmp_path / "wal.db", readers=3, wal_limit=limit, pragmas={"journal_size_limit": -1})
    with pool.transaction() as conn:
        conn.execute("create table t(id integer primary key, v blob)")
        conn.executemany("insert into t(v) values (randomblob(300))", [()] * 20000)
    largest = run_constant_readers(pool, 3000)
    stats = pool.stats()
    pool.close()
    if limit is None:
        assert largest > 4 * 1024 * 1024, f"expected starvation to grow the WAL, largest {largest}"
        assert stats.checkpoints == 0
    else:
        assert stats.checkpoints > 0
        # One commit's pages beyond the limit, plus a transaction's worth of slack.
        assert largest < limit + 256 * 1024, f"WAL reached {largest} bytes with wal_limit={limit}"
