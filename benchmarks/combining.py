#!/usr/bin/env python3
"""``pool.write(fn)`` against its ceiling: a minimal flat-combining group commit, side by side.

How close does sqlitefair's ``write(fn)`` (flat combining, group commit) come to the least any
Python implementation of the same idea costs?  Each strategy runs N threads doing the same
transactions (read 10 rows, insert one) on a database file of its own for D seconds:

* ``lock``: one connection behind a ``threading.Lock``, ``BEGIN IMMEDIATE ... COMMIT`` per call:
  the base of every ratio;
* ``minimal-group``: a minimal flat-combining group commit.  Callers append their request to a
  deque; the thread that takes a ``threading.Lock`` runs every queued request in one
  transaction, each in a ``SAVEPOINT``, commits, and wakes their callers.  No timeouts, no
  order shared with other kinds of writers, no interrupt safety, no statistics, no checks: the
  floor that sqlitefair's own work adds to;
* ``sqlitefair-group``: ``pool.write(fn)`` on a pool with ``group_commit=True``;
* ``sqlitefair-write``: ``pool.write(fn)`` (combining where the GIL is off);
* ``sqlitefair``: ``with pool.transaction() as conn``.

    python benchmarks/combining.py                          # 16 threads, 2 s, 5 rounds, every strategy
    python benchmarks/combining.py --src ../old/src --src src --strategies lock,sqlitefair-group
                                                            # A/B: two source trees, interleaved
    python benchmarks/combining.py --callgrind --strategies minimal-group,sqlitefair-group

Each round runs every strategy (and source tree) once, in turn, each in a process of its own;
a round's ratios are to the same round's ``lock`` (of the same tree), and the report gives
the median over rounds, then every round's figure.  ``--callgrind`` counts instructions per
call instead: each strategy runs twice under ``valgrind --tool=callgrind --fair-sched=yes``
(its threads take turns on one CPU, so batches differ from a native run's), for two
durations, and (Ir(long) - Ir(short)) / (calls(long) - calls(short)) is one call's work, the
set-up subtracted out.
"""

from __future__ import annotations

import _thread
import argparse
import collections
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable

STRATEGIES = ("lock", "minimal-group", "sqlitefair-group", "sqlitefair-write", "sqlitefair")
ROWS = 10_000
PRAGMAS = ("journal_mode = wal", "synchronous = normal")


def body(conn: Any, i: int) -> None:
    """One transaction's work: read 10 rows, insert one."""
    k = i % (ROWS - 10)
    conn.execute("select v from t where id between ? and ?", (k, k + 9)).fetchall()
    conn.execute("insert into t(v) values (?)", (i,))


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    for pragma in PRAGMAS:
        conn.execute(f"PRAGMA {pragma}")
    return conn


class Lock:
    """``lock``: one connection behind a ``threading.Lock``."""

    def __init__(self, path: str) -> None:
        self.conn = _connect(path)
        self.lock = threading.Lock()

    def write(self, fn: Callable[[Any, int], None], i: int) -> None:
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            fn(self.conn, i)
            self.conn.execute("COMMIT")


class MinimalGroup:
    """``minimal-group``: a deque of requests, and whoever takes the lock runs them all."""

    def __init__(self, path: str) -> None:
        self.conn = _connect(path)
        self.lock = threading.Lock()
        self.requests: collections.deque[list[Any]] = collections.deque()

    def write(self, fn: Callable[[Any, int], None], i: int) -> None:
        parker = _thread.allocate_lock()
        parker.acquire()
        me = [fn, i, None, False, parker]  # fn, argument, error, done, parker
        self.requests.append(me)
        while not me[3]:
            if self.lock.acquire(False):
                try:
                    self._combine()
                finally:
                    self.lock.release()
                if self.requests and not self.requests[0][3]:  # a caller queued meanwhile: it combines next
                    try:
                        self.requests[0][4].release()
                    except RuntimeError:  # woken already
                        pass
            if not me[3]:
                parker.acquire(True, 0.001)
        if me[2] is not None:
            raise me[2]

    def _combine(self) -> None:
        conn, requests = self.conn, self.requests
        until = time.monotonic() + 0.005
        while requests and time.monotonic() < until:
            batch = []
            conn.execute("BEGIN IMMEDIATE")
            while requests and len(batch) < 64:
                request = requests.popleft()
                conn.execute("SAVEPOINT s")
                try:
                    request[0](conn, request[1])
                    conn.execute("RELEASE s")
                except Exception as exc:  # noqa: BLE001 - the caller's
                    request[2] = exc
                    conn.execute("ROLLBACK TO s")
                    conn.execute("RELEASE s")
                batch.append(request)
            conn.execute("COMMIT")
            for request in batch:
                request[3] = True
                try:
                    request[4].release()
                except RuntimeError:  # its caller was not parked
                    pass


class PoolWrite:
    """``sqlitefair-group`` / ``sqlitefair-write``: ``pool.write(fn)``."""

    def __init__(self, path: str, **options: Any) -> None:
        import sqlitefair

        self.pool = sqlitefair.connect(path, **options)

    def write(self, fn: Callable[[Any, int], None], i: int) -> None:
        self.pool.write(fn, i)


class PoolTransaction(PoolWrite):
    """``sqlitefair``: ``with pool.transaction()``."""

    def write(self, fn: Callable[[Any, int], None], i: int) -> None:
        with self.pool.transaction() as conn:
            fn(conn, i)


MAKERS: dict[str, Callable[[str], Any]] = {
    "lock": Lock,
    "minimal-group": MinimalGroup,
    "sqlitefair-group": lambda path: PoolWrite(path, group_commit=True),
    "sqlitefair-write": PoolWrite,
    "sqlitefair": PoolTransaction,
}


# -- one run (in a process of its own) ---------------------------------------------------------


def run_one(strategy: str, threads: int, duration: float) -> dict[str, Any]:
    """Run ``strategy`` for ``duration`` seconds; return calls, calls per second and Jain's index."""
    folder = tempfile.mkdtemp(prefix="sf-combining-")
    path = os.path.join(folder, "bench.db")
    setup = _connect(path)
    setup.execute("create table t (id integer primary key, v)")
    setup.execute("BEGIN")
    setup.executemany("insert into t(v) values (?)", ((i,) for i in range(ROWS)))
    setup.execute("COMMIT")
    setup.close()
    target = MAKERS[strategy](path)
    counts = [0] * threads
    stop = threading.Event()

    def worker(k: int) -> None:
        i = k * 100_000_000
        n = 0
        while not stop.is_set():
            target.write(body, i)
            i += 1
            n += 1
        counts[k] = n

    workers = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    time.sleep(duration)
    stop.set()
    for w in workers:
        w.join()
    total = sum(counts)
    jain = total * total / (threads * sum(c * c for c in counts)) if total else 0.0
    return {"calls": total, "tx_per_s": total / duration, "jain": jain}


# -- the driver ------------------------------------------------------------------------------------


def _env(src: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = os.pathsep.join([os.path.abspath(src)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def _child(args: argparse.Namespace, strategy: str, src: str | None, duration: float, prefix: list[str]) -> dict[str, Any]:
    cmd = prefix + [args.python, os.path.abspath(__file__), "--run", strategy, "--threads", str(args.threads),
                    "--duration", str(duration)]
    proc = subprocess.run(cmd, env=_env(src), capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{strategy} failed:\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


INFO = r"""
import os, sys, sqlite3
gil = sys._is_gil_enabled() if hasattr(sys, "_is_gil_enabled") else "n/a (before 3.13)"
import sqlitefair
print(f"{sys.version.split()[0]} {sys.implementation.cache_tag}; GIL enabled after importing sqlitefair: "
      f"{sys._is_gil_enabled() if hasattr(sys, '_is_gil_enabled') else gil}; SQLite {sqlite3.sqlite_version}; "
      f"{os.cpu_count()} CPUs; sqlitefair from {os.path.dirname(sqlitefair.__file__)}")
"""


def drive(args: argparse.Namespace) -> None:
    srcs = args.src or [None]
    for src in srcs:
        out = subprocess.run([args.python, "-c", INFO], env=_env(src), capture_output=True, text=True)
        print(f"{src or '(installed)'}: {out.stdout.strip() or out.stderr.strip()}")
    print(f"{args.threads} threads, {args.duration} s per run, {args.rounds} rounds; load {os.getloadavg()[0]:.2f}")
    strategies = args.strategies if "lock" in args.strategies else ["lock", *args.strategies]
    ratios: dict[tuple[str | None, str], list[float]] = collections.defaultdict(list)
    rates: dict[tuple[str | None, str], list[float]] = collections.defaultdict(list)
    for r in range(args.rounds):
        for src in srcs:
            base = None
            for strategy in strategies:
                result = _child(args, strategy, src, args.duration, [])
                base = base or result["tx_per_s"]
                rates[(src, strategy)].append(result["tx_per_s"])
                ratios[(src, strategy)].append(result["tx_per_s"] / base)
                print(f"  round {r + 1} {src or '':>12} {strategy:18} {result['tx_per_s']:>9,.0f} tx/s  "
                      f"{result['tx_per_s'] / base:5.2f}x  Jain {result['jain']:.3f}", file=sys.stderr, flush=True)
    print(f"\n{'source':>14} {'strategy':18} {'tx/s':>9} {'vs lock':>8}   (median over rounds; every round's ratio)")
    for src in srcs:
        for strategy in strategies:
            key = (src, strategy)
            print(f"{src or '':>14} {strategy:18} {statistics.median(rates[key]):>9,.0f} "
                  f"{statistics.median(ratios[key]):>7.2f}x   " + " ".join(f"{x:.2f}" for x in ratios[key]))


def drive_callgrind(args: argparse.Namespace) -> None:
    srcs = args.src or [None]
    short, long = args.duration, 3 * args.duration
    print(f"instructions per call, {args.threads} threads, valgrind --tool=callgrind --fair-sched=yes, "
          f"runs of {short} s and {long} s")
    with tempfile.TemporaryDirectory(prefix="sf-combining-cg-") as tmp:
        for src in srcs:
            for strategy in args.strategies:
                irs, calls = [], []
                for duration in (short, long):
                    out = os.path.join(tmp, f"{strategy}-{duration}.out")
                    prefix = ["valgrind", "--tool=callgrind", "--fair-sched=yes", "--quiet", f"--callgrind-out-file={out}"]
                    calls.append(_child(args, strategy, src, duration, prefix)["calls"])
                    with open(out) as f:
                        irs.append(next(int(line.split()[1]) for line in f if line.startswith(("summary:", "totals:"))))
                per_call = (irs[1] - irs[0]) / max(1, calls[1] - calls[0])
                print(f"  {src or '':>14} {strategy:18} {per_call:>10,.0f} Ir/call  ({calls[0]:,} and {calls[1]:,} calls)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=16, help="writer threads (default 16)")
    ap.add_argument("--duration", type=float, default=2.0, help="seconds per run (default 2)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds, strategies interleaved (default 5)")
    ap.add_argument("--strategies", default=",".join(STRATEGIES), help=f"comma-separated, of {', '.join(STRATEGIES)}")
    ap.add_argument("--src", action="append", help="a source tree's src folder to import sqlitefair from (repeatable: A/B)")
    ap.add_argument("--python", default=sys.executable, help="interpreter for the runs (default: this one)")
    ap.add_argument("--callgrind", action="store_true", help="count instructions per call instead of timing")
    ap.add_argument("--run", help=argparse.SUPPRESS)  # one run, in this process (the driver's children)
    args = ap.parse_args()
    if args.threads < 1 or args.duration <= 0 or args.rounds < 1:
        ap.error("--threads and --rounds must be at least 1, --duration above 0")
    if args.run:
        if args.run not in MAKERS:
            ap.error(f"unknown strategy {args.run!r}")
        print(json.dumps(run_one(args.run, args.threads, args.duration)))
        return
    args.strategies = [s for s in args.strategies.split(",") if s]
    if unknown := set(args.strategies) - set(STRATEGIES):
        ap.error(f"unknown strategies: {', '.join(sorted(unknown))} (known: {', '.join(STRATEGIES)})")
    (drive_callgrind if args.callgrind else drive)(args)


if __name__ == "__main__":
    main()
