"""Soak run: minutes of mixed load across processes, watching errors, waits, WAL size and memory.

    python benchmarks/soak.py                       # 3 minutes, 4 processes x 4 threads
    python benchmarks/soak.py --minutes 10 --processes 8 --json soak.json

Each worker process opens one pool and runs threads that do 90% reads
(a range query) and 10% read-then-write transactions, and a transfer between
two accounts now and then (the total must never change).  The parent samples
every second: the WAL's size, each worker's resident memory, and progress.
At the end it checks the invariants (no lost write, constant total,
``PRAGMA integrity_check``) and prints a summary.  Not part of CI: it runs
for minutes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

import sqlitefair

ACCOUNTS = 20


def worker(path: str, tag: int, threads: int, stop_at: float, backend: str, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    import warnings

    warnings.simplefilter("ignore", sqlitefair.WalResetBugWarning)  # reported once by the parent instead
    pool = sqlitefair.connect(path, readers=threads, timeout=10, backend=backend)
    lock = threading.Lock()
    totals = {"reads": 0, "writes": 0, "transfers": 0, "errors": 0, "bad_totals": 0}
    error_samples: list[str] = []

    def run(t: int) -> None:
        rng = random.Random(f"{tag}-{t}")
        mine = dict.fromkeys(totals, 0)
        n = 0
        while time.time() < stop_at:
            n += 1
            try:
                roll = rng.random()
                if roll < 0.90:
                    with pool.read() as conn:
                        start = rng.randint(0, 10_000)
                        conn.execute("select id, v from log where id > ? order by id limit 100", (start,)).fetchall()
                    mine["reads"] += 1
                elif roll < 0.98:
                    with pool.transaction() as conn:
                        conn.execute("select count(*) from log where worker = ?", (tag,)).fetchone()
                        conn.execute("insert into log(worker, seq, v) values (?, ?, randomblob(200))", (tag, f"{t}-{n}"))
                    mine["writes"] += 1
                else:
                    a, b = rng.sample(range(ACCOUNTS), 2)
                    with pool.transaction() as conn:
                        conn.execute("update accounts set balance = balance - 1 where id = ?", (a,))
                        conn.execute("update accounts set balance = balance + 1 where id = ?", (b,))
                    with pool.read() as conn:
                        (total,) = conn.execute("select sum(balance) from accounts").fetchone()
                    mine["transfers"] += 1
                    mine["bad_totals"] += total != ACCOUNTS * 1000
            except Exception as exc:  # noqa: BLE001 - counted and reported
                mine["errors"] += 1
                with lock:
                    if len(error_samples) < 5:
                        error_samples.append(repr(exc))
        with lock:
            for key, value in mine.items():
                totals[key] += value

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stats = pool.stats()
    pool.close()
    results.put(
        {
            "worker": tag,
            **totals,
            "error_samples": error_samples,
            "max_write_wait": stats.writes.max,
            "p99_write_wait": stats.writes.p99,
            "max_read_wait": stats.reads.max,
            "checkpoints": stats.checkpoints,
            "checkpoints_skipped": stats.checkpoints_skipped,
            "gil_enabled": stats.gil_enabled,
            "sqlite_version": stats.sqlite_version,
        }
    )


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_growth(samples: list[dict[str, object]]) -> dict[str, float]:
    """Largest worker RSS in the first and the last sample taken while workers ran, in MiB."""
    alive = [s["rss_kib"] for s in samples if s["rss_kib"]]
    if not alive:
        return {"rss_first_mib": 0.0, "rss_last_mib": 0.0}
    return {"rss_first_mib": max(alive[0]) / 1024, "rss_last_mib": max(alive[-1]) / 1024}  # type: ignore[type-var, operator]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--db", help="database file (default: a temporary one)")
    parser.add_argument("--json", help="write samples and results to this file")
    parser.add_argument("--backend", default="sqlite3", choices=["sqlite3", "apsw"])
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.processes < 1 or args.threads < 1:
        parser.error("--minutes must be > 0, --processes and --threads >= 1")

    with tempfile.TemporaryDirectory() as folder:
        return soak(args, Path(args.db) if args.db else Path(folder) / "soak.db")


def soak(args: argparse.Namespace, path: Path) -> int:
    with sqlitefair.connect(path) as pool, pool.transaction() as conn:
        conn.execute("create table if not exists log(id integer primary key, worker int, seq text, v blob, unique(worker, seq))")
        conn.execute("create table if not exists accounts(id integer primary key, balance int)")
        conn.execute("delete from accounts")
        conn.executemany("insert into accounts values (?, 1000)", [(i,) for i in range(ACCOUNTS)])
        conn.executemany("insert into log(worker, seq, v) values (-1, ?, randomblob(200))", [(i,) for i in range(20000)])
    seeded = 20000

    duration = args.minutes * 60
    stop_at = time.time() + duration
    ctx = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [ctx.Process(target=worker, args=(str(path), p, args.threads, stop_at, args.backend, results)) for p in range(args.processes)]
    for p in procs:
        p.start()
    print(
        f"soak: {args.processes} processes x {args.threads} threads for {args.minutes:g} min on {path} "
        f"(Python {sys.version.split()[0]}, backend {args.backend}, {os.cpu_count()} CPUs)",
        file=sys.stderr,
    )
    samples = []
    wal = Path(f"{path}-wal")
    started = time.time()
    while any(p.is_alive() for p in procs) and time.time() < stop_at + 60:
        time.sleep(1.0)
        wal_bytes = wal.stat().st_size if wal.exists() else 0
        rss = [kib for kib in (rss_kib(p.pid) for p in procs if p.pid) if kib]
        samples.append({"t": round(time.time() - started, 1), "wal_bytes": wal_bytes, "rss_kib": rss})
        if len(samples) % 10 == 0:
            print(
                f"  {samples[-1]['t']:6.0f} s  WAL {wal_bytes / 2**20:7.1f} MiB  RSS max {max(rss or [0]) / 1024:6.1f} MiB",
                file=sys.stderr,
            )
    outcome = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)

    conn = sqlite3.connect(path)
    try:
        integrity = conn.execute("pragma integrity_check").fetchone()[0]
        (total,) = conn.execute("select sum(balance) from accounts").fetchone()
        (rows,) = conn.execute("select count(*) from log").fetchone()
    finally:
        conn.close()
    writes = sum(r["writes"] for r in outcome)
    summary = {
        "python": sys.version.split()[0],
        "backend": args.backend,
        "sqlite": outcome[0]["sqlite_version"],
        "cpus": os.cpu_count(),
        "processes": args.processes,
        "threads": args.threads,
        "minutes": args.minutes,
        "reads": sum(r["reads"] for r in outcome),
        "writes": writes,
        "transfers": sum(r["transfers"] for r in outcome),
        "errors": sum(r["errors"] for r in outcome),
        "error_samples": [e for r in outcome for e in r["error_samples"]][:5],
        "max_write_wait_s": max(r["max_write_wait"] for r in outcome),
        "max_read_wait_s": max(r["max_read_wait"] for r in outcome),
        "checkpoints": sum(r["checkpoints"] for r in outcome),
        "checkpoints_skipped": sum(r["checkpoints_skipped"] for r in outcome),
        "wal_max_mib": max(s["wal_bytes"] for s in samples) / 2**20 if samples else 0,
        **rss_growth(samples),
        "lost_writes": seeded + writes - rows,
        "total_ok": total == ACCOUNTS * 1000,
        "bad_totals_seen": sum(r["bad_totals"] for r in outcome),
        "integrity": integrity,
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "samples": samples, "workers": outcome}, indent=2))
    ok = (
        summary["errors"] == 0
        and summary["lost_writes"] == 0
        and summary["total_ok"]
        and summary["bad_totals_seen"] == 0
        and integrity == "ok"
    )
    print("soak: OK" if ok else "soak: FAILED", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
