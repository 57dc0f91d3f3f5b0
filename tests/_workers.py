"""Functions run in child processes (importable by multiprocessing's spawn start method)."""

from __future__ import annotations

import os
import sqlite3
import time

import sqlitefair


def write_rows(path: str, process_tag: int, threads: int, rows_per_thread: int, start_at: float) -> list[str]:
    """Insert ``threads × rows_per_thread`` uniquely tagged rows through one pool; return any errors."""
    import threading

    pool = sqlitefair.connect(path, readers=1, timeout=60)
    errors: list[str] = []
    while time.time() < start_at:  # line processes up to start together
        time.sleep(0.001)

    def work(thread_tag: int) -> None:
        for i in range(rows_per_thread):
            try:
                with pool.transaction() as conn:
                    (n,) = conn.execute("select count(*) from log").fetchone()
                    conn.execute(
                        "insert into log(tag, seen) values (?, ?)", (f"{process_tag}-{thread_tag}-{i}", n)
                    )
            except Exception as exc:  # noqa: BLE001 - reported to the parent
                errors.append(repr(exc))

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    pool.close()
    return errors


def hold_write_lock(path: str, seconds: float, ready_path: str) -> None:
    """Hold SQLite's write lock from a plain connection for ``seconds`` (another process's writer)."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.execute("BEGIN IMMEDIATE")
    with open(ready_path, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(seconds)
    conn.execute("COMMIT")
    conn.close()


def crash_writer(path: str, log_path: str, stop_path: str) -> None:
    """Write numbered rows until ``stop_path`` exists (60 s at most), logging 'begin N' before
    and 'ok N' after each commit.

    The parent kills some of these with SIGKILL in the middle of a transaction.
    Each line is flushed with os.write, so the log survives the kill.
    """
    pool = sqlitefair.connect(path, readers=1, timeout=30)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    seq = 0
    give_up = time.monotonic() + 60
    while not os.path.exists(stop_path) and time.monotonic() < give_up:
        key = f"{os.getpid()}-{seq}"
        os.write(fd, f"begin {key}\n".encode())
        try:
            with pool.transaction() as conn:
                conn.execute("insert into log(key) values (?)", (key,))
                time.sleep(0.002)  # a transaction long enough for a kill to land inside it
                conn.execute("update counter set n = n + 1")
        except Exception as exc:  # noqa: BLE001
            os.write(fd, f"failed {key} {exc!r}\n".encode())
        else:
            os.write(fd, f"ok {key}\n".encode())
        seq += 1
    waited = pool.stats().writes.max
    os.write(fd, f"maxwait {waited}\n".encode())
    os.close(fd)
    pool.close()


def aborting_writer(path: str, log_path: str, stop_path: str, threads: int) -> None:
    """Like :func:`crash_writer` from ``threads`` threads, but about one transaction in five
    ends in the middle, right after its insert: in the main thread by a real SIGINT
    (``KeyboardInterrupt``), in the others by an exception.  Logs 'interrupted N' or
    'aborted N' for those; they must leave nothing behind.
    """
    import random
    import signal
    import threading

    signal.signal(signal.SIGINT, signal.default_int_handler)
    pool = sqlitefair.connect(path, readers=1, timeout=30)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    give_up = time.monotonic() + 60

    def run(tag: int) -> None:
        in_main = threading.current_thread() is threading.main_thread()
        rng = random.Random(tag)
        seq = 0
        while not os.path.exists(stop_path) and time.monotonic() < give_up:
            key = f"{os.getpid()}-{tag}-{seq}"
            seq += 1
            end_early = rng.random() < 0.2
            os.write(fd, f"begin {key}\n".encode())
            try:
                with pool.transaction() as conn:
                    conn.execute("insert into log(key) values (?)", (key,))
                    if end_early and in_main:
                        signal.raise_signal(signal.SIGINT)  # KeyboardInterrupt at the next bytecode
                    if end_early:
                        raise RuntimeError("abort in the middle of the transaction")
                    time.sleep(0.001)
                    conn.execute("update counter set n = n + 1")
            except KeyboardInterrupt:
                os.write(fd, f"interrupted {key}\n".encode())
            except RuntimeError as exc:
                os.write(fd, f"{'aborted' if 'abort in' in str(exc) else 'failed'} {key} {exc!r}\n".encode())
            except Exception as exc:  # noqa: BLE001
                os.write(fd, f"failed {key} {exc!r}\n".encode())
            else:
                os.write(fd, f"ok {key}\n".encode())

    others = [threading.Thread(target=run, args=(t,)) for t in range(1, threads)]
    for t in others:
        t.start()
    run(0)
    for t in others:
        t.join(90)
    os.write(fd, f"maxwait {pool.stats().writes.max}\n".encode())
    os.close(fd)
    pool.close()


def transfer_money(path: str, worker: str, threads: int, transfers: int, accounts: int, start_at: float) -> int:
    """Move random amounts between accounts; return how many transfers committed."""
    import random
    import threading

    pool = sqlitefair.connect(path, readers=2, timeout=60)
    done = [0] * threads
    while time.time() < start_at:
        time.sleep(0.001)

    def work(t: int) -> None:
        rng = random.Random(f"{worker}-{t}")
        for i in range(transfers):
            a, b = rng.sample(range(accounts), 2)
            amount = rng.randint(1, 50)
            with pool.transaction() as conn:
                (balance,) = conn.execute("select balance from accounts where id = ?", (a,)).fetchone()
                if balance < amount:
                    continue
                conn.execute("update accounts set balance = balance - ? where id = ?", (amount, a))
                conn.execute("update accounts set balance = balance + ? where id = ?", (amount, b))
                conn.execute("insert into transfers(id, src, dst, amount) values (?, ?, ?, ?)", (f"{worker}-{t}-{i}", a, b, amount))
            done[t] += 1
            with pool.read() as conn:  # readers always see a consistent total
                (total,) = conn.execute("select sum(balance) from accounts").fetchone()
                if total != accounts * 1000:
                    raise AssertionError(f"reader saw total {total}")

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    pool.close()
    return sum(done)


def replicated_writer(
    path: str, log_path: str, stop_path: str, threads: int, wal_limit: int | None, check_every: float, checkpoints: str
) -> None:
    """Write rows from ``threads`` threads while a reader thread reads all the time, for the
    Litestream tests: each transaction inserts a row and bumps the counter, logging 'begin KEY'
    before and 'ok KEY MONOTONIC' right after its commit (os.write: the log survives SIGKILL).

    ``check_every`` overrides how often the writer looks at the WAL's size (``wal_limit``'s
    checkpoint runs at most that often); ``checkpoints`` is the pool's ``checkpoints=``.  Stops when ``stop_path`` exists (60 s at most),
    logging 'stats CHECKPOINTS SKIPPED ERRORS'.
    """
    import threading
    import warnings

    from sqlitefair import _defaults

    # Below Litestream's priority: on two cores these writers alone would saturate the CPUs, and a
    # Litestream whose timers fire late falls behind its intervals, which the tests hold it to (a
    # CI run on the free-threaded build saw it 2.4 s behind its 2 s bound).
    os.nice(10)
    # Litestream writes the database outside sqlitefair's queue: on an SQLite with the WAL-reset bug
    # every pool warns once (see docs/beyond-one-machine.md); the test process does not need to hear it.
    warnings.simplefilter("ignore", sqlitefair.WalResetBugWarning)
    _defaults.WAL_CHECK_INTERVAL = check_every
    pool = sqlitefair.connect(path, readers=2, timeout=30, wal_limit=wal_limit, checkpoints=checkpoints)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    give_up = time.monotonic() + 60
    errors: list[str] = []

    def write(tag: int) -> None:
        seq = 0
        while not os.path.exists(stop_path) and time.monotonic() < give_up:
            key = f"{os.getpid()}-{tag}-{seq}"
            seq += 1
            os.write(fd, f"begin {key}\n".encode())
            try:
                with pool.transaction() as conn:
                    conn.execute("insert into log(key, v) values (?, randomblob(400))", (key,))
                    conn.execute("update counter set n = n + 1")
            except Exception as exc:  # noqa: BLE001 - reported in the stats line
                errors.append(repr(exc))
            else:
                os.write(fd, f"ok {key} {time.monotonic()!r}\n".encode())

    def read() -> None:
        while not os.path.exists(stop_path) and time.monotonic() < give_up:
            with pool.read() as conn:  # keeps the WAL in use, as a busy web app's readers do
                conn.execute("select count(*), sum(length(v)) from (select v from log order by id desc limit 500)").fetchone()

    workers = [threading.Thread(target=write, args=(t,)) for t in range(threads)] + [threading.Thread(target=read)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(90)
    stats = pool.stats()
    os.write(fd, f"stats {os.getpid()} {stats.checkpoints} {stats.checkpoints_skipped} {len(errors)} {errors[:1]!r}\n".encode())
    os.close(fd)
    pool.close()
