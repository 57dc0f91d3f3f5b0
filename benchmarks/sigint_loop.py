"""Ctrl-C anywhere: real SIGINTs at random moments, and after each one a check that the pool is whole.

    python benchmarks/sigint_loop.py --signals 2000
    python benchmarks/sigint_loop.py --signals 2000 --backend apsw --json sigint.json

The main thread loops over write blocks (``with pool.transaction()``: part 1 of
a block, a little work, part 2; sometimes a nested ``transaction()`` that
commits parts 3 and 4, or one that raises and is rolled back; sometimes a
``read()`` inside) and reads (``with pool.read()``).  One SIGINT at a time is
sent to it after a random delay (0-2 ms): the next is armed only once the main
thread has caught the previous ``KeyboardInterrupt`` and checked the pool, so
every signal is exactly one ``KeyboardInterrupt``, which can land anywhere,
including inside the pool's own ``__enter__``/``__exit__``.

Who sends the signals (``--sender``):

* ``process`` (default): a small helper process, ``os.kill(parent, SIGINT)``.
  Its timing owes nothing to this process's GIL, so a signal can arrive at any
  moment, like a Ctrl-C from a terminal.
* ``thread``: a timer thread of this process, ``os.kill(os.getpid(), SIGINT)``.
  With the GIL it can only run when the main thread releases the GIL, i.e. when
  it enters SQLite, so nearly every interrupt lands right after an SQL call and
  the pure-Python parts of the pool are hardly ever hit (fine on a
  free-threaded build).

The database files go to /dev/shm when it exists: on a disk, the fsyncs of WAL
checkpoints take most of the time, so most signals arrived during them.

After each caught ``KeyboardInterrupt`` the pool must be whole at once:

* ``pool.transaction(timeout=0.5)`` inserts a probe row without error;
* ``pool.read(timeout=0.5)`` reads without error;
* ``pool.stats()`` then shows the writer free, no reader checked out, no queue;
* a separate plain connection (same SQLite library as the backend) can
  ``BEGIN IMMEDIATE`` + ``ROLLBACK`` within a short busy timeout (10 ms).

A failed check counts the signal as one that broke the pool (by kind), and the
run goes on with a fresh pool on a fresh file.  At the end every database file
is checked: the blocks present are exactly the blocks whose ``with`` exited
normally, each with all of its parts (no partial, lost or extra block).  A
block also counts as exited normally when its ``KeyboardInterrupt`` was raised
by the ``with`` statement itself after the pool's ``__exit__`` had returned
(the interpreter's check for signals right after the call): no library code
runs in that window.

Where each ``KeyboardInterrupt`` landed is counted from its traceback: the
innermost frame (below a Python-level SIGINT handler's own frame, if the pool
installed one) in sqlitefair's package, in this script, or elsewhere (sqlite3,
threading, ...).  An interrupt the pool deferred shows up where the pool
raised it.  Exit status 0 iff no signal broke the pool, the data checks pass
and no signal went unanswered (a swallowed ``KeyboardInterrupt``).
"""

from __future__ import annotations

import _thread
import argparse
import dis
import inspect
import json
import linecache
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

import sqlitefair

FREE_THREADED_BUILD = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
SQLITEFAIR_DIR = os.path.dirname(os.path.abspath(sqlitefair.__file__)) + os.sep
THIS_FILE = os.path.abspath(__file__)
STDLIB_DIR = os.path.dirname(os.path.abspath(threading.__file__)) + os.sep

SCHEMA = (
    "create table blocks(id integer primary key, block_id integer not null, part integer not null, payload text)",
    "create index blocks_by_block on blocks(block_id)",
    "create table probe(id integer primary key, n integer)",
)


def gil_enabled() -> bool:
    check = getattr(sys, "_is_gil_enabled", None)
    return True if check is None else bool(check())


def default_dir() -> str | None:
    """A RAM file system if there is one: a disk's fsyncs (WAL checkpoints) would make most
    signals arrive during them, so the interrupts would land right after SQL calls."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) else None


# -- plain connections (the same SQLite library as the backend) ------------------------------


def open_plain(path: str, backend: str, busy_ms: int) -> Any:
    """An autocommit connection beside the pool, of the same SQLite library as ``backend``
    (two copies of SQLite in one process do not see each other's locks)."""
    if backend == "apsw":
        import apsw

        conn = apsw.Connection(path)
        conn.set_busy_timeout(busy_ms)
        return conn
    import sqlite3

    return sqlite3.connect(path, timeout=busy_ms / 1000, isolation_level=None, check_same_thread=False)


def plain_exec(conn: Any, sql: str) -> None:
    cursor = conn.execute(sql)
    if hasattr(cursor, "close"):
        cursor.close()


def close_quietly(conn: Any) -> None:
    try:
        conn.close()
    except Exception:
        try:
            conn.close(True)  # apsw: force, even with cursors open
        except Exception:
            pass


def sqlite_version(backend: str) -> str:
    if backend == "apsw":
        import apsw

        return apsw.sqlite_lib_version()
    import sqlite3

    return sqlite3.sqlite_version


# -- one database file and the pool on it ---------------------------------------------------


class Generation:
    """One database file, the pool on it, and what the run expects to find in it."""

    def __init__(self, number: int, base: Path, backend: str, readers: int, checker_busy_ms: int) -> None:
        self.number = number
        self.dir = base / f"gen{number:04d}"
        self.dir.mkdir()
        self.path = str(self.dir / "app.db")
        self.backend = backend
        self.pool = sqlitefair.connect(self.path, readers=readers, timeout=5.0, backend=backend)
        with self.pool.transaction() as conn:
            for sql in SCHEMA:
                conn.execute(sql)
        self.checker = open_plain(self.path, backend, checker_busy_ms)
        self.succeeded: set[int] = set()
        self.expected: dict[int, frozenset[int]] = {}  # block id -> the parts it commits
        self.interrupted_at: dict[int, str] = {}  # block id -> where its KeyboardInterrupt landed

    def shut(self) -> None:
        """Close the pool (forcing its connections shut if it will not close) and the checker."""
        pool = self.pool
        try:
            pool.close(timeout=0.2)
        except BaseException:
            pass
        # A broken pool may keep connections out forever (a leaked permit): close them here so
        # that the file can be checked and the run does not pile up open files.  (Private API; a
        # pool that lays itself out differently just gets garbage-collected.)
        state = getattr(pool, "_state", None)
        for conn in list(getattr(state, "connections", ()) or ()):
            close_quietly(conn)
        close_quietly(self.checker)

    def verify(self) -> dict[str, Any]:
        """Blocks in the file against the blocks whose ``with`` exited normally."""
        conn = open_plain(self.path, self.backend, 1000)
        try:
            rows = list(conn.execute("select block_id, part from blocks"))
        finally:
            close_quietly(conn)
        present: dict[int, set[int]] = {}
        for block_id, part in rows:
            present.setdefault(block_id, set()).add(part)
        partial = sorted(b for b, parts in present.items() if parts != self.expected.get(b))
        extra = sorted(b for b in present if b not in self.succeeded)
        lost = sorted(b for b in self.succeeded if b not in present)
        return {"present": len(present), "partial": partial, "extra": extra, "lost": lost}


# -- where a KeyboardInterrupt landed -------------------------------------------------------


def frames_of(exc: BaseException) -> list[tuple[Any, int, int]]:
    """(frame, line, instruction offset) of each traceback entry, outermost first."""
    out = []
    tb = exc.__traceback__
    while tb is not None:
        out.append((tb.tb_frame, tb.tb_lineno, tb.tb_lasti))
        tb = tb.tb_next
    return out


def landing_frames(exc: BaseException) -> list[tuple[Any, int, int]]:
    """``frames_of(exc)`` without the SIGINT handler's own frame at the end.

    A Python-level SIGINT handler (sqlitefair may install one in front of Python's default
    handler) raises the KeyboardInterrupt inside its own frame, which it is called from the
    frame the signal interrupted: that frame, the one before, is where the interrupt landed.
    """
    frames = frames_of(exc)
    handler_code = getattr(signal.getsignal(signal.SIGINT), "__code__", None)
    while len(frames) > 1 and frames[-1][0].f_code is handler_code:
        frames.pop()
    return frames


def area_of(filename: str) -> str:
    path = os.path.abspath(filename)
    if path.startswith(SQLITEFAIR_DIR):
        return "sqlitefair"
    if path == THIS_FILE:
        return "harness"
    if path.startswith(STDLIB_DIR):
        rel = path[len(STDLIB_DIR) :]
        if rel.startswith("sqlite3" + os.sep):
            return "sqlite3"
        if rel == "threading.py":
            return "threading"
        return "stdlib:" + rel
    return "other"


def site_of(frame: Any, line: int) -> str:
    code = frame.f_code
    path = os.path.abspath(code.co_filename)
    short = path[len(SQLITEFAIR_DIR) :] if path.startswith(SQLITEFAIR_DIR) else os.path.basename(path)
    source = linecache.getline(code.co_filename, line).strip()
    return f"{short}:{line} {getattr(code, 'co_qualname', code.co_name)}: {source}"


# -- the workload ---------------------------------------------------------------------------


class Rollback(Exception):
    """Raised inside a nested transaction to roll it back on purpose."""


def work(rng_value: float) -> int:
    """A little pure-Python work between statements (somewhere for a signal to land in user code)."""
    acc = 0
    for i in range(int(rng_value * 40)):
        acc += i * i
    return acc


def write_block(gen: Generation, block_id: int, nested: str, read_inside: bool, r: float) -> None:
    pool = gen.pool
    with pool.transaction() as conn:
        conn.execute("insert into blocks(block_id, part, payload) values (?, 1, ?)", (block_id, "a" * 20))
        work(r)
        if nested == "commit":
            with pool.transaction() as inner:
                inner.execute("insert into blocks(block_id, part, payload) values (?, 3, 'n')", (block_id,))
                work(r)
                inner.execute("insert into blocks(block_id, part, payload) values (?, 4, 'n')", (block_id,))
        elif nested == "rollback":
            try:
                with pool.transaction() as inner:
                    inner.execute("insert into blocks(block_id, part, payload) values (?, 3, 'x')", (block_id,))
                    raise Rollback
            except Rollback:
                pass
        if read_inside:
            with pool.read() as same:
                same.execute("select count(*) from blocks where block_id = ?", (block_id,)).fetchone()
        conn.execute("insert into blocks(block_id, part, payload) values (?, 2, ?)", (block_id, "b" * 20))
    gen.succeeded.add(block_id)  # SUCCEEDED-MARK: reached only when the with exited normally


def read_op(gen: Generation, r: float) -> None:
    with gen.pool.read() as conn:
        conn.execute("select count(*) from blocks where block_id between ? and ?", (int(r * 100), int(r * 100) + 20)).fetchone()
        work(r)


def _exit_points() -> tuple[int, frozenset[int]]:
    """Where ``write_block``'s outer ``with`` has exited normally: the SUCCEEDED-MARK line, and
    the offsets of the ``with`` statement's own exit instructions (the call of ``__exit__``).

    A KeyboardInterrupt raised in ``write_block``'s frame at one of those offsets was raised
    after the pool's ``__exit__`` had returned (at the interpreter's check for signals right
    after the call): the pool finished the block, and no library code can run between that
    return and the next statement, so the block counts as succeeded.
    """
    lines, start = inspect.getsourcelines(write_block)
    mark = with_line = 0
    for offset, text in enumerate(lines):
        if "SUCCEEDED-MARK" in text and "gen.succeeded.add" in text:
            mark = start + offset
        if not with_line and "with pool.transaction() as conn:" in text:
            with_line = start + offset
    if not (mark and with_line):
        raise RuntimeError("write_block: SUCCEEDED-MARK or outer with line not found")
    code = list(dis.get_instructions(write_block))
    line_of = {i.offset: (i.positions.lineno if i.positions else None) for i in code}
    mark_start = min(o for o, line in line_of.items() if line == mark)
    body_start = min(o for o, line in line_of.items() if line is not None and with_line < line < mark)
    # The normal exit runs up to the exception handler of the with (``PUSH_EXC_INFO``), if that comes first.
    handler = min(
        (i.offset for i in code if i.opname == "PUSH_EXC_INFO" and line_of[i.offset] == with_line and i.offset > body_start),
        default=mark_start,
    )
    end = min(mark_start, handler)
    exits = frozenset(o for o, line in line_of.items() if line == with_line and body_start < o < end)
    if not any(i.opname.startswith("CALL") for i in code if i.offset in exits):
        raise RuntimeError("write_block: the with statement's call of __exit__ not found")
    return mark, exits


MARK_LINE, WITH_EXIT_OFFSETS = _exit_points()


def with_exited(frames: list[tuple[Any, int, int]]) -> bool:
    """Whether the KeyboardInterrupt with these (handler-stripped) frames was raised after the outer
    ``with`` of ``write_block`` had exited normally (see :func:`_exit_points`)."""
    for i, (frame, line, lasti) in enumerate(frames):
        if frame.f_code is write_block.__code__:
            if line == MARK_LINE:
                return True
            # Innermost: raised in write_block's own frame, not inside a deeper __exit__.
            return i == len(frames) - 1 and lasti in WITH_EXIT_OFFSETS
    return False


# -- the checks after each KeyboardInterrupt ------------------------------------------------


def short_error(exc: BaseException) -> str:
    text = re.sub(r"'/[^']*'", "'<db>'", str(exc).split("\n")[0])
    if len(text) > 90:
        text = text[:90] + "..."
    return f"{type(exc).__name__}: {text}"


PROFILE_BEFORE = sys.getprofile()


def check_pool(gen: Generation, probe: int, check_timeout: float) -> list[str]:
    """Failures of the 'pool is whole' checks, as kinds (empty: whole)."""
    failures = []
    pool = gen.pool
    try:
        with pool.transaction(timeout=check_timeout) as conn:
            conn.execute("insert into probe(n) values (?)", (probe,))
    except Exception as exc:
        failures.append("transaction raised " + short_error(exc))
    try:
        with pool.read(timeout=check_timeout) as conn:
            conn.execute("select count(*) from probe").fetchone()
    except Exception as exc:
        failures.append("read raised " + short_error(exc))
    try:
        stats = pool.stats()
    except Exception as exc:
        failures.append("stats raised " + short_error(exc))
    else:
        if stats.writer_in_use:
            failures.append("writer still held")
        if stats.readers_in_use:
            failures.append("reader still held")
        if stats.writer_queue or stats.reader_queue:
            failures.append("queue not empty")
    if sys.getprofile() is not PROFILE_BEFORE:
        failures.append("a sys.setprofile hook was left installed")
    try:
        plain_exec(gen.checker, "BEGIN IMMEDIATE")
    except Exception as exc:
        failures.append("db locked for others (" + short_error(exc) + ")")
    else:
        try:
            plain_exec(gen.checker, "ROLLBACK")
        except Exception as exc:
            failures.append("checker ROLLBACK raised " + short_error(exc))
    return failures


# -- the signal senders ---------------------------------------------------------------------

_HELPER = """
import os, random, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the parent
pid, seed, lo, hi = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
rng = random.Random(seed)
fd = sys.stdin.fileno()
while os.read(fd, 1):
    delay = rng.uniform(lo, hi)
    if delay > 0:
        time.sleep(delay)
    os.kill(pid, signal.SIGINT)
"""


class ThreadSender:
    """A thread of this process sends one SIGINT per ``arm()``, after a random delay.

    On a GIL build the thread needs the GIL to call ``os.kill``, and it gets it as soon
    as the main thread releases it, i.e. when the main thread enters an SQLite call:
    the signal is then handled right after that call returns, so the interrupts land
    almost only just after SQL statements.  (On a free-threaded build it spreads fine.)
    """

    kind = "thread"

    def __init__(self, min_delay: float, max_delay: float, seed: int) -> None:
        self.min_delay, self.max_delay = min_delay, max_delay
        self.rng = random.Random(seed)
        self._ready = _thread.allocate_lock()
        self._ready.acquire()  # locked = not armed
        self.sent = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="sigint-sender", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def arm(self) -> None:
        """One C call, so a signal cannot split it."""
        try:
            self._ready.release()
        except RuntimeError:  # still armed (the previous signal went unanswered and is re-armed)
            pass

    def stop(self) -> None:
        self._stop = True
        self.arm()
        self._thread.join(5)

    def _run(self) -> None:
        pid = os.getpid()
        while True:
            self._ready.acquire()
            if self._stop:
                return
            delay = self.rng.uniform(self.min_delay, self.max_delay)
            if delay > 0:
                time.sleep(delay)
            if self._stop:
                return
            self.sent += 1
            os.kill(pid, signal.SIGINT)


class ProcessSender:
    """A helper process sends one SIGINT per ``arm()`` (a byte on its stdin), after a random delay.

    Its timing owes nothing to this process's GIL, so a signal arrives at any moment
    of the main thread's work, like a Ctrl-C from a terminal, and the interrupt is
    raised at the next point where the interpreter looks for pending signals.
    """

    kind = "process"

    def __init__(self, min_delay: float, max_delay: float, seed: int) -> None:
        self.args = [sys.executable, "-c", _HELPER, str(os.getpid()), str(seed), repr(min_delay), repr(max_delay)]
        self.sent = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._fd = -1

    def start(self) -> None:
        self._proc = subprocess.Popen(self.args, stdin=subprocess.PIPE)
        assert self._proc.stdin is not None
        self._fd = self._proc.stdin.fileno()

    def arm(self) -> None:
        """One C call (``os.write``), so a signal cannot split it."""
        self.sent += 1  # first: a KeyboardInterrupt can land right after the write returns
        os.write(self._fd, b"x")

    def stop(self) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.close()
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()


# -- the run --------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if args.switch_interval > 0 and gil_enabled():
        sys.setswitchinterval(args.switch_interval)
    rng = random.Random(args.seed)
    base = Path(tempfile.mkdtemp(prefix="sqlitefair-sigint-", dir=args.dir or default_dir()))
    generations = 0
    gen = Generation(generations, base, args.backend, args.readers, args.checker_busy_ms)
    generations += 1

    landed: Counter[str] = Counter()
    pool_sites: Counter[str] = Counter()
    other_sites: Counter[str] = Counter()
    breaking_sites: Counter[str] = Counter()
    broken_kinds: Counter[str] = Counter()
    on_stack = 0
    in_enter_exit = 0
    after_exit = 0  # raised by the with statement itself, after the pool's __exit__ returned
    caught = 0
    broken = 0
    later_failures: Counter[str] = Counter()
    ops = Counter[str]()
    totals = {"present": 0, "partial": [], "extra": [], "lost": [], "succeeded": 0, "attempted": 0}
    extra_sites: Counter[str] = Counter()
    samples: list[dict[str, Any]] = []
    elsewhere_samples: list[list[str]] = []

    def retire(g: Generation) -> None:
        g.shut()
        result = g.verify()
        totals["present"] += result["present"]
        totals["succeeded"] += len(g.succeeded)
        totals["attempted"] += len(g.expected)
        for key in ("partial", "extra", "lost"):
            totals[key].extend(result[key])
        for block in result["extra"]:
            extra_sites[g.interrupted_at.get(block, "?")] += 1
        if not args.keep:
            shutil.rmtree(g.dir, ignore_errors=True)

    sender: ThreadSender | ProcessSender = (ThreadSender if args.sender == "thread" else ProcessSender)(
        args.min_delay / 1000, args.max_delay / 1000, args.seed
    )
    unanswered = 0
    next_block = 0
    probe = 0
    current_block = -1
    later_failure: str | None = None  # an operation failed between two signals
    progress_every = max(1, args.signals // 10)
    started = time.perf_counter()
    sender.start()
    armed_at = 0.0
    armed_pending = True
    # Everything between arming and catching a signal runs inside the try: a KeyboardInterrupt
    # can land nowhere else.  No signal is outstanding while the except clause runs.
    while True:
        try:
            if armed_pending:
                armed_pending = False
                if caught + unanswered >= args.signals:
                    break
                armed_at = time.monotonic()
                sender.arm()
            while True:
                if time.monotonic() - armed_at > args.watchdog:
                    # Its KeyboardInterrupt never reached us (swallowed, or deferred for good): send the next.
                    unanswered += 1
                    if unanswered <= 5 or unanswered % 100 == 0:
                        print(f"sigint_loop: signal {sender.sent} unanswered after {args.watchdog} s "
                              f"({unanswered} so far)", file=sys.stderr, flush=True)
                    armed_pending = True
                    break
                if later_failure is not None:
                    work(0.5)  # the pool failed: touch it no more until the signal is handled
                    continue
                try:
                    if rng.random() < 0.6:
                        block = next_block
                        next_block += 1
                        roll = rng.random()
                        nested = "commit" if roll < 0.25 else "rollback" if roll < 0.35 else ""
                        gen.expected[block] = frozenset((1, 2, 3, 4) if nested == "commit" else (1, 2))
                        current_block = block
                        write_block(gen, block, nested, rng.random() < 0.1, rng.random())
                        current_block = -1
                        ops["write"] += 1
                    else:
                        read_op(gen, rng.random())
                        ops["read"] += 1
                except Exception as exc:
                    # Failed although the check after the last signal passed: a delayed breakage.
                    later_failure = "later operation raised " + short_error(exc)
                    current_block = -1
        except KeyboardInterrupt as ki:
            try:
                caught += 1
                frames = landing_frames(ki)
                inner_frame, inner_line, _ = frames[-1]
                area = area_of(inner_frame.f_code.co_filename)
                landed[area] += 1
                site = site_of(inner_frame, inner_line)
                (pool_sites if area == "sqlitefair" else other_sites)[site] += 1
                if area not in ("sqlitefair", "harness") and len(elsewhere_samples) < args.samples:
                    elsewhere_samples.append(traceback.format_tb(ki.__traceback__)[-4:])
                if any(area_of(f.f_code.co_filename) == "sqlitefair" for f, *_ in frames):
                    on_stack += 1
                if any(
                    area_of(f.f_code.co_filename) == "sqlitefair" and f.f_code.co_name in ("__enter__", "__exit__")
                    for f, *_ in frames
                ):
                    in_enter_exit += 1
                if current_block >= 0:
                    # Raised after the pool's __exit__ returned: the block's with exited normally (see with_exited).
                    if with_exited(frames):
                        gen.succeeded.add(current_block)
                        if frames[-1][0].f_code is write_block.__code__ and frames[-1][1] != MARK_LINE:
                            after_exit += 1
                    else:
                        gen.interrupted_at[current_block] = site
                    current_block = -1
                probe += 1
                failures = check_pool(gen, probe, args.check_timeout)
                if later_failure is not None:
                    later_failures[later_failure] += 1
                    failures.insert(0, later_failure)
                    later_failure = None
                if failures:
                    broken += 1
                    breaking_sites[site] += 1
                    for kind in failures:
                        broken_kinds[kind] += 1
                    if len(samples) < args.samples:
                        samples.append(
                            {"signal": caught, "failures": failures, "traceback": traceback.format_tb(ki.__traceback__)[-4:]}
                        )
                    retire(gen)
                    gen = Generation(generations, base, args.backend, args.readers, args.checker_busy_ms)
                    generations += 1
                if caught % progress_every == 0 or caught == args.signals:
                    print(
                        f"[{time.perf_counter() - started:6.1f} s] {caught}/{args.signals} KeyboardInterrupts, "
                        f"{landed['sqlitefair']} in sqlitefair, {broken} broke the pool",
                        file=sys.stderr,
                        flush=True,
                    )
            except KeyboardInterrupt:
                # One signal, two KeyboardInterrupts (or one deferred past the watchdog): the pool
                # raised again during the checks.
                kind = "a second KeyboardInterrupt surfaced during the checks"
                broken += 1
                broken_kinds[kind] += 1
                retire(gen)
                gen = Generation(generations, base, args.backend, args.readers, args.checker_busy_ms)
                generations += 1
            armed_pending = True
    sender.stop()
    retire(gen)
    elapsed = time.perf_counter() - started
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)

    data_ok = not (totals["partial"] or totals["extra"] or totals["lost"])
    return {
        "signals": args.signals,
        "signals_sent": sender.sent,
        "keyboard_interrupts_caught": caught,
        "signals_unanswered": unanswered,
        "sender": sender.kind,
        "landed": dict(landed.most_common()),
        "landed_in_pool": landed["sqlitefair"],
        "landed_in_pool_fraction": landed["sqlitefair"] / caught if caught else 0.0,
        "pool_on_stack": on_stack,
        "in_pool_enter_exit": in_enter_exit,
        "after_exit_returned": after_exit,
        "distinct_pool_sites": len(pool_sites),
        "top_pool_sites": dict(pool_sites.most_common(args.top)),
        "top_other_sites": dict(other_sites.most_common(args.top)),
        "elsewhere_samples": elsewhere_samples,
        "broken": broken,
        "broken_by_kind": dict(broken_kinds.most_common()),
        "later_failures": dict(later_failures),
        "breaking_sites": dict(breaking_sites.most_common(args.top)),
        "broken_samples": samples,
        "pools_created": generations,
        "operations": dict(ops),
        "blocks_attempted": totals["attempted"],
        "blocks_succeeded": totals["succeeded"],
        "blocks_present": totals["present"],
        "partial_blocks": len(totals["partial"]),
        "lost_blocks": len(totals["lost"]),
        "extra_blocks": len(totals["extra"]),
        "extra_blocks_by_site": dict(extra_sites.most_common(args.top)),
        "data_ok": data_ok,
        "ok": broken == 0 and data_ok and unanswered == 0,
        "backend": args.backend,
        "sqlitefair": sqlitefair.__file__,
        "interpreter": f"{platform.python_implementation()} {sys.version.split()[0]}"
        + (" free-threaded" if FREE_THREADED_BUILD else ""),
        "executable": sys.executable,
        "gil_enabled": gil_enabled(),
        "sqlite_version": sqlite_version(args.backend),
        "switch_interval": sys.getswitchinterval(),
        "delay_ms": [args.min_delay, args.max_delay],
        "check_timeout": args.check_timeout,
        "seed": args.seed,
        "database_dir": str(base),
        "elapsed_s": round(elapsed, 2),
    }


def print_summary(s: dict[str, Any]) -> None:
    p = lambda *a: print(*a, file=sys.stderr)  # noqa: E731
    p("")
    p(f"sigint_loop: {s['interpreter']} (GIL {'on' if s['gil_enabled'] else 'off'}), backend {s['backend']}, "
      f"SQLite {s['sqlite_version']}, sqlitefair from {s['sqlitefair']}")
    p(f"  signals sent {s['signals_sent']}, KeyboardInterrupts caught {s['keyboard_interrupts_caught']}, "
      f"unanswered {s['signals_unanswered']}; delays {s['delay_ms'][0]}-{s['delay_ms'][1]} ms, "
      f"switch interval {s['switch_interval'] * 1e6:.0f} us")
    p("  landed (innermost frame): " + ", ".join(f"{k} {v}" for k, v in s["landed"].items()))
    p(f"  landed in sqlitefair: {s['landed_in_pool']} ({100 * s['landed_in_pool_fraction']:.1f} %); "
      f"sqlitefair on the stack: {s['pool_on_stack']}; inside a pool __enter__/__exit__: {s['in_pool_enter_exit']}; "
      f"in a with statement right after the pool's __exit__ returned (block counted as succeeded): {s['after_exit_returned']}")
    if s["top_pool_sites"]:
        p(f"  most frequent of the {s['distinct_pool_sites']} distinct landing sites (file:line) in sqlitefair:")
        for site, n in s["top_pool_sites"].items():
            p(f"    {n:5d}  {site}")
    p(f"  BROKEN: {s['broken']} of {s['keyboard_interrupts_caught']} signals left the pool broken "
      f"({s['pools_created']} pools created)")
    for kind, n in s["broken_by_kind"].items():
        p(f"    {n:5d}  {kind}")
    if s["breaking_sites"]:
        p("  where the breaking KeyboardInterrupts landed:")
        for site, n in s["breaking_sites"].items():
            p(f"    {n:5d}  {site}")
    p(f"  blocks: {s['blocks_attempted']} attempted, {s['blocks_succeeded']} succeeded, {s['blocks_present']} in the files; "
      f"partial {s['partial_blocks']}, lost {s['lost_blocks']}, extra {s['extra_blocks']}")
    if s["extra_blocks_by_site"]:
        p("  where the KeyboardInterrupt of each extra block (committed, but its with raised) landed:")
        for site, n in s["extra_blocks_by_site"].items():
            p(f"    {n:5d}  {site}")
    p(f"  operations: {s['operations']}; elapsed {s['elapsed_s']} s")
    p(f"sigint_loop: {'OK' if s['ok'] else 'FAILED'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--signals", type=int, default=2000, help="SIGINTs to send (default 2000)")
    parser.add_argument("--backend", choices=("sqlite3", "apsw"), default="sqlite3")
    parser.add_argument("--json", help="write the summary here")
    parser.add_argument("--readers", type=int, default=2)
    parser.add_argument("--min-delay", type=float, default=0.0, help="ms, shortest delay before a signal")
    parser.add_argument("--max-delay", type=float, default=2.0, help="ms, longest delay before a signal")
    parser.add_argument(
        "--sender", choices=("process", "thread"), default="process",
        help="who sends the SIGINTs: a helper process (default; lands anywhere) or a thread of this "
        "process (with the GIL it gets to run only when the main thread enters SQLite, so the "
        "interrupts land just after SQL statements)",
    )
    parser.add_argument(
        "--switch-interval", type=float, default=0.0,
        help="seconds; sys.setswitchinterval on GIL builds (0: leave it)",
    )
    parser.add_argument("--check-timeout", type=float, default=0.5, help="seconds, timeout of the checks' checkouts")
    parser.add_argument("--checker-busy-ms", type=int, default=10, help="busy timeout of the plain checking connection")
    parser.add_argument("--watchdog", type=float, default=1.0, help="seconds before a signal counts as unanswered")
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--top", type=int, default=15, help="landing sites to list")
    parser.add_argument("--samples", type=int, default=5, help="tracebacks of breaking signals to keep in the JSON")
    parser.add_argument("--dir", help="where to put the database files (default: /dev/shm if writable, else $TMPDIR)")
    parser.add_argument("--keep", action="store_true", help="keep the database files")
    args = parser.parse_args(argv)
    if args.signals < 1:
        parser.error("--signals must be >= 1")
    if not 0 <= args.min_delay <= args.max_delay:
        parser.error("need 0 <= --min-delay <= --max-delay")
    if args.backend == "apsw" and FREE_THREADED_BUILD:
        parser.error("apsw re-enables the GIL on a free-threaded build; use --backend sqlite3")
    if threading.current_thread() is not threading.main_thread():
        parser.error("must run in the main thread")
    summary = run(args)
    print_summary(summary)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
