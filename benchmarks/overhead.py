#!/usr/bin/env python3
"""Single-thread overhead of ``pool.transaction()`` / ``pool.read()`` against a raw sqlite3 connection.

The pool's Python bookkeeping (fair lock, permits, statistics, the
checked-out guard on the connection) is the only difference between the two
sides: the raw connection gets the pool's default pragmas, the same SQL and
the same loop shape.  Wall time on a busy machine is too noisy for a few
microseconds per operation, so the main measurement counts instructions with
``valgrind --tool=callgrind``.

    # one measured run (what callgrind runs):
    python benchmarks/overhead.py --mode pool --n 2000

    # instructions per op for every mode, OLD code vs the current tree:
    python benchmarks/overhead.py --callgrind --python .venv/bin/python --src ../old-checkout/src
    python benchmarks/overhead.py --callgrind --python .venv/bin/python --src src

    # rough wall-time cross-check (median of 5 repeats, raw and pool interleaved):
    python benchmarks/overhead.py --wall --python .venv/bin/python --src src

Modes (each on a fresh database in a temporary folder):

* ``raw``: one ``sqlite3.connect(path, isolation_level=None)`` connection,
  ``BEGIN IMMEDIATE; insert into t(v) values (?); COMMIT`` per op;
* ``pool``: ``pool = sqlitefair.connect(path)``, then per op
  ``with pool.transaction() as conn: conn.execute("insert into t(v) values (?)", (i,))``;
* ``raw-read``: a raw connection (``query_only`` on, as the pool's readers)
  running ``select v from t where id = ?`` and ``fetchone()`` per op;
* ``pool-read``: the same inside ``with pool.read() as conn``;
* ``floor``: the least any pool written in Python can cost: the raw connection behind a
  ``with`` block whose ``__enter__`` takes a ``threading.Lock`` and sends ``BEGIN
  IMMEDIATE`` and whose ``__exit__`` commits and releases (no fairness, statistics, checks
  or nesting).  Its overhead over ``raw`` is what a pool's own work adds to.

How callgrind counts only the loop: a run first does its set-up (creating the
table and its rows, opening the connection or pool, 200 warm-up ops), then
the measured loop.  ``--callgrind`` runs every mode twice, with ``--n N1`` and
``--n N2`` (``--n1``/``--n2``, default 1000 and 3000); the set-up is identical,
so ``(Ir(N2) - Ir(N1)) / (N2 - N1)`` is the instructions of one op of the
loop.  Overhead = pool - raw per op.  The driver first runs every mode once
natively, so that no measured run pays for compiling modules to bytecode (it
caches bytecode under a temporary folder, never in the source trees), and
fixes PYTHONHASHSEED: repeated runs agree to within ~0.3% (a few hundred
instructions per op at most).

Caveats:

* callgrind counts user-space instructions only.  The raw side's time is
  mostly system calls (WAL writes, file locks), which it does not see, so the
  overhead in percent of instructions is far larger than in percent of wall
  time; the difference in instructions is the meaningful figure.
* the pool looks at the database file's path every 50 ms and at the WAL's
  size every 0.5 s (wall clock).  Under callgrind (about 50x slower, and at the
  mercy of the machine's load) those looks would land on a varying share of
  the ops, so measured runs push them out (``_defaults`` intervals set to
  1e9, in old trees too); natively they are a negligible share.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time

MODES = ("raw", "pool", "raw-read", "pool-read", "floor")
#: (label, raw mode, pool mode) per row of the report.
PAIRS = (("transaction()", "raw", "pool"), ("read()", "raw-read", "pool-read"), ("minimal block", "raw", "floor"))
WARMUP = 200
ROWS = 1000  # rows in t before the run; reads pick id = i % ROWS + 1

INSERT = "insert into t(v) values (?)"
SELECT = "select v from t where id = ?"


# -- one measured run ------------------------------------------------------------


def _default_pragmas() -> dict[str, object]:
    import sqlitefair

    pragmas = getattr(sqlitefair, "DEFAULT_PRAGMAS", None)
    if pragmas is None:  # older trees
        from sqlitefair import _defaults

        pragmas = _defaults.PRAGMAS
    return dict(pragmas)


def _pragma_sql(name: str, value: object) -> str:
    text = ("ON" if value else "OFF") if isinstance(value, bool) else str(value)
    return f"PRAGMA {name} = {text}"


def _raw_connect(path: str, pragmas: dict[str, object], *, reader: bool) -> sqlite3.Connection:
    """A plain connection set up as the pool sets up its writer (or a reader)."""
    conn = sqlite3.connect(path, isolation_level=None)
    for name, value in pragmas.items():
        if reader and name in ("journal_mode", "auto_vacuum", "page_size"):
            continue  # database pragmas: the pool sets them on the writer only
        conn.execute(_pragma_sql(name, value)).close()
    conn.execute(f"PRAGMA query_only = {'ON' if reader else 'OFF'}").close()
    return conn


def _create_db(path: str, pragmas: dict[str, object]) -> None:
    conn = _raw_connect(path, pragmas, reader=False)
    conn.execute("create table t (id integer primary key, v integer)")
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(INSERT, ((i,) for i in range(ROWS)))
    conn.execute("COMMIT")
    conn.close()


def _loop_raw(conn: sqlite3.Connection, start: int, n: int) -> None:
    for i in range(start, start + n):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(INSERT, (i,))
        conn.execute("COMMIT")


def _loop_pool(pool, start: int, n: int) -> None:  # type: ignore[no-untyped-def]
    for i in range(start, start + n):
        with pool.transaction() as conn:
            conn.execute(INSERT, (i,))


def _loop_raw_read(conn: sqlite3.Connection, start: int, n: int) -> None:
    for i in range(start, start + n):
        conn.execute(SELECT, (i % ROWS + 1,)).fetchone()


def _loop_pool_read(pool, start: int, n: int) -> None:  # type: ignore[no-untyped-def]
    for i in range(start, start + n):
        with pool.read() as conn:
            conn.execute(SELECT, (i % ROWS + 1,)).fetchone()


class _Floor:
    """The ``floor`` mode's "pool": one connection behind a ``threading.Lock``, a ``with`` block
    that begins and commits, and nothing else."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.lock = threading.Lock()

    def transaction(self) -> _FloorBlock:
        return _FloorBlock(self)

    def close(self) -> None:
        self.conn.close()


class _FloorBlock:
    __slots__ = ("_floor",)

    def __init__(self, floor: _Floor) -> None:
        self._floor = floor

    def __enter__(self) -> sqlite3.Connection:
        floor = self._floor
        floor.lock.acquire()
        floor.conn.execute("BEGIN IMMEDIATE")
        return floor.conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        floor = self._floor
        try:
            floor.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
        finally:
            floor.lock.release()


LOOPS = {
    "raw": _loop_raw,
    "pool": _loop_pool,
    "raw-read": _loop_raw_read,
    "pool-read": _loop_pool_read,
    "floor": _loop_pool,
}


def run_mode(mode: str, n: int, folder: str) -> float:
    """Set up ``mode`` in ``folder``, warm up, run ``n`` ops; return the loop's wall seconds."""
    import sqlitefair

    pragmas = _default_pragmas()
    path = os.path.join(folder, f"{mode}.db")
    for suffix in ("", "-wal", "-shm"):  # a fresh database every run
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    _create_db(path, pragmas)
    if mode.startswith("pool"):
        # The periodic looks (the file's path every 50 ms, the WAL's size every 0.5 s) are timed by
        # the wall clock: under callgrind, 50x slower and at the mercy of the machine's load, they
        # land on a varying share of the ops and blur differences of a few hundred instructions.
        # Natively they are a negligible share; pushed out of the run here (old trees too).  So is
        # the bound on "back to back" (KEEP_ALONE_GAP, 0.1 ms): natively every transaction of this
        # loop follows the one before within it and keeps the cross-process turn; 50x slower, none
        # would.
        from sqlitefair import _defaults

        for name in ("FILE_CHECK_INTERVAL", "WAL_CHECK_INTERVAL", "KEEP_ALONE_GAP"):
            if hasattr(_defaults, name):
                setattr(_defaults, name, 1e9)
        target = sqlitefair.connect(path)
    elif mode == "floor":
        target = _Floor(_raw_connect(path, pragmas, reader=False))
    else:
        target = _raw_connect(path, pragmas, reader=mode.endswith("read"))
    loop = LOOPS[mode]
    try:
        loop(target, 0, WARMUP)
        gc.collect()
        # ---- marker: everything above is set-up, identical for every --n ----
        t0 = time.perf_counter()
        loop(target, WARMUP, n)
        elapsed = time.perf_counter() - t0
        # ---- end of the measured loop ----
    finally:
        target.close()
    return elapsed


# -- environment -------------------------------------------------------------------


INFO_CODE = r"""
import os, sys, sysconfig, sqlite3
def gil():
    return sys._is_gil_enabled() if hasattr(sys, "_is_gil_enabled") else "n/a (before 3.13)"
after_sqlite3 = gil()
import sqlitefair
print(f"python\t{sys.executable}")
print(f"version\t{sys.version.split()[0]} {sys.implementation.cache_tag}")
print(f"free-threaded build\t{bool(sysconfig.get_config_var('Py_GIL_DISABLED'))}")
print(f"GIL enabled after import sqlite3\t{after_sqlite3}")
print(f"GIL enabled after import sqlitefair\t{gil()}")
print(f"SQLite\t{sqlite3.sqlite_version}")
print(f"sqlitefair\t{os.path.dirname(sqlitefair.__file__)}")
print(f"CPUs\t{os.cpu_count()}")
"""


def _env(src: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONHASHSEED"] = "0"  # same dict/set layout in every run
    # Cache bytecode outside the source trees (left alone) instead of compiling every module per run.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = os.path.join(tempfile.gettempdir(), "sqlitefair-overhead-pycache")
    if src:
        env["PYTHONPATH"] = os.pathsep.join([os.path.abspath(src)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def _git_describe(src: str | None) -> str:
    if not src:
        return "(installed sqlitefair)"
    try:
        head = subprocess.run(
            ["git", "-C", src, "log", "-1", "--format=%h %s"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", src, "status", "--porcelain", "--", "."], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "(not a git checkout)"
    return head[:90] + (" + uncommitted changes" if dirty else "")


def print_environment(python: str, src: str | None) -> None:
    out = subprocess.run([python, "-c", INFO_CODE], env=_env(src), capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"{python} could not import sqlitefair:\n{out.stderr}")
    info = dict(line.split("\t", 1) for line in out.stdout.splitlines())
    for key, value in info.items():
        print(f"  {key:36} {value}")
    print(f"  {'source':36} {_git_describe(src)}")
    if src and os.path.realpath(info["sqlitefair"]) != os.path.realpath(os.path.join(src, "sqlitefair")):
        print(f"  WARNING: sqlitefair was imported from {info['sqlitefair']}, not from {src}")
    try:
        valgrind = subprocess.run(["valgrind", "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        valgrind = "not found"
    print(f"  {'valgrind':36} {valgrind}")


# -- callgrind driver ----------------------------------------------------------------


def callgrind_ir(python: str, mode: str, n: int, src: str | None) -> int:
    """Total instructions of one ``--mode MODE --n N`` run under callgrind."""
    tmp = tempfile.mkdtemp(prefix="sf-overhead-")
    try:
        out_file = os.path.join(tmp, "callgrind.out")
        cmd = [
            "valgrind", "--tool=callgrind", "--quiet", f"--callgrind-out-file={out_file}",
            python, os.path.abspath(__file__), "--mode", mode, "--n", str(n), "--dir", tmp,
        ]
        proc = subprocess.run(cmd, env=_env(src), capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"callgrind run failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
        with open(out_file) as f:
            for line in f:
                if line.startswith(("summary:", "totals:")):
                    return int(line.split()[1])
        sys.exit(f"no summary line in {out_file}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def drive_callgrind(args: argparse.Namespace) -> None:
    if shutil.which("valgrind") is None:
        sys.exit("valgrind not found (apt-get install valgrind)")
    n1, n2 = args.n1, args.n2
    if n2 <= n1:
        sys.exit("--n2 must be larger than --n1")
    print(f"sqlitefair overhead, instructions per op: (Ir(n={n2}) - Ir(n={n1})) / {n2 - n1}, valgrind --tool=callgrind")
    print_environment(args.python, args.src)
    _prime(args)
    per_op: dict[str, list[float]] = {}
    for mode in args.modes:
        for _ in range(args.repeat):
            t0 = time.monotonic()
            a = callgrind_ir(args.python, mode, n1, args.src)
            b = callgrind_ir(args.python, mode, n2, args.src)
            per_op.setdefault(mode, []).append((b - a) / (n2 - n1))
            print(
                f"  [{mode}: Ir {a:,} / {b:,} -> {per_op[mode][-1]:,.0f} per op; {time.monotonic() - t0:.0f} s]",
                file=sys.stderr,
                flush=True,
            )
    _table(per_op, "Ir/op", "{:,.0f}", args.repeat > 1)


def _prime(args: argparse.Namespace) -> None:
    """Run every mode once natively: checks it works, and fills the bytecode cache
    (a run that compiles modules would count the compiler's instructions)."""
    for mode in args.modes:
        tmp = tempfile.mkdtemp(prefix="sf-overhead-")
        try:
            proc = subprocess.run(
                [args.python, os.path.abspath(__file__), "--mode", mode, "--n", "10", "--dir", tmp],
                env=_env(args.src), capture_output=True, text=True,
            )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if proc.returncode:
            sys.exit(f"--mode {mode} failed:\n{proc.stderr[-3000:]}")


def _table(per_op: dict[str, list[float]], unit: str, fmt: str, spread: bool) -> None:
    print()
    print(f"  {'op':14} {'raw ' + unit:>14} {'pool ' + unit:>14} {'diff ' + unit:>14} {'overhead':>9}")
    for label, raw, pool in PAIRS:
        if raw not in per_op or pool not in per_op:
            continue
        r, p = statistics.median(per_op[raw]), statistics.median(per_op[pool])
        print(f"  {label:14} {fmt.format(r):>14} {fmt.format(p):>14} {fmt.format(p - r):>14} {100 * (p - r) / r:>8.1f}%")
    if spread:
        print("  (medians over repeats; every repeat:)")
        for mode, values in per_op.items():
            print(f"    {mode:10} " + "  ".join(fmt.format(v) for v in values))
    print()


# -- wall-time driver ------------------------------------------------------------------


def drive_wall(args: argparse.Namespace) -> None:
    """Median wall time per op over ``--repeat`` rounds; each round runs raw then pool (order alternates)."""
    print(f"sqlitefair overhead, wall time per op: median of {args.repeat} rounds of n={args.n} (raw and pool interleaved)")
    print_environment(args.python, args.src)
    _prime(args)
    per_op: dict[str, list[float]] = {}
    for r in range(args.repeat):
        for _, raw, pool in PAIRS:
            order = [m for m in ((raw, pool) if r % 2 == 0 else (pool, raw)) if m in args.modes]
            for mode in order:
                tmp = tempfile.mkdtemp(prefix="sf-overhead-")
                try:
                    proc = subprocess.run(
                        [args.python, os.path.abspath(__file__), "--mode", mode, "--n", str(args.n), "--dir", tmp],
                        env=_env(args.src), capture_output=True, text=True,
                    )
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
                if proc.returncode:
                    sys.exit(f"--mode {mode} failed:\n{proc.stderr[-3000:]}")
                seconds = float(proc.stdout.split()[-1])
                per_op.setdefault(mode, []).append(seconds / args.n * 1e6)
    _table(per_op, "us/op", "{:.2f}", True)


# -- command line ----------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=MODES, help="run one measured loop in this interpreter")
    ap.add_argument("--n", type=int, default=2000, help="ops in the measured loop (default 2000; --wall: per round)")
    ap.add_argument("--dir", help="--mode: folder for the database (default: a temporary one)")
    ap.add_argument("--callgrind", action="store_true", help="drive: instructions per op of every mode under callgrind")
    ap.add_argument("--wall", action="store_true", help="drive: median wall time per op, raw and pool interleaved")
    ap.add_argument("--python", default=sys.executable, help="interpreter to measure (default: this one)")
    ap.add_argument("--src", help="put this folder first on PYTHONPATH (e.g. ../old-checkout/src or src)")
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of modes to drive")
    ap.add_argument("--n1", type=int, default=1000, help="--callgrind: the shorter run's n (default 1000)")
    ap.add_argument("--n2", type=int, default=3000, help="--callgrind: the longer run's n (default 3000)")
    ap.add_argument("--repeat", type=int, default=None, help="--callgrind: pairs per mode (default 1); --wall: rounds (default 5)")
    args = ap.parse_args()
    args.modes = [m for m in args.modes.split(",") if m]
    if unknown := set(args.modes) - set(MODES):
        ap.error(f"unknown modes {sorted(unknown)}; choose from {', '.join(MODES)}")

    if args.callgrind:
        args.repeat = args.repeat or 1
        drive_callgrind(args)
    elif args.wall:
        args.repeat = args.repeat or 5
        drive_wall(args)
    elif args.mode:
        if args.dir:
            elapsed = run_mode(args.mode, args.n, args.dir)
        else:
            with tempfile.TemporaryDirectory(prefix="sf-overhead-") as tmp:
                elapsed = run_mode(args.mode, args.n, tmp)
        print(f"{args.mode} n={args.n} seconds {elapsed:.6f}")
    else:
        ap.error("give --mode, --callgrind or --wall")


if __name__ == "__main__":
    main()
