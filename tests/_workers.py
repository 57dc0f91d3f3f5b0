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
