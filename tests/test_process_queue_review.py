"""The cross-process writer queue (``_procqueue``) against real processes: real forks and
subprocesses, real SIGKILLs, real files.  Bounds on time are generous (seconds against
timeouts of many seconds): these tests are about who gets served, not how fast."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path
from typing import Callable

import pytest

import sqlitefair
from sqlitefair import _procqueue

from _helpers import wait_until

pytestmark = pytest.mark.skipif(
    _procqueue.unavailable_reason(os.getcwd()) is not None, reason="needs Linux OFD locks"
)

SRC = str(Path(sqlitefair.__file__).resolve().parent.parent)


def spawn(script: str, *args: str) -> subprocess.Popen[str]:
    """Run ``script`` in a fresh interpreter (this sqlitefair on its path); its stdout is a pipe."""
    env = dict(os.environ, PYTHONPATH=SRC)
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def wait_line(proc: subprocess.Popen[str], expected: str) -> None:
    line = proc.stdout.readline().strip()  # type: ignore[union-attr]
    if line != expected:
        err = finish(proc)
        raise AssertionError(f"child said {line!r}, not {expected!r}: {err}")


def finish(proc: subprocess.Popen[str]) -> str:
    """Kill ``proc`` if it still runs; return its stderr (its pipes closed)."""
    if proc.poll() is None:
        proc.kill()
    _, err = proc.communicate(timeout=30)
    return err


def make_db(path: Path) -> None:
    pool = sqlitefair.connect(path)
    with pool.transaction() as conn:
        conn.execute("create table if not exists t (who text, at real)")
    pool.close()


# A process that writes without pause for ``seconds`` (one thread, back-to-back transactions).
BUSY_WRITER = """
    import sys, time, sqlitefair
    path, seconds = sys.argv[1], float(sys.argv[2])
    pool = sqlitefair.connect(path, timeout=30)
    with pool.transaction() as conn:
        conn.execute("insert into t values ('busy', 0)")
    print("ready", flush=True)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        with pool.transaction() as conn:
            conn.execute("insert into t values ('busy', ?)", (time.time(),))
    pool.close()
    print("done", flush=True)
"""


# A process that takes the turn through a ProcessQueue of its own, writes its name into a log
# while it holds the turn, and gives it back.
QUEUER = """
    import os, sys, time
    from sqlitefair._procqueue import ProcessQueue
    db, name, log, hold = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    queue = ProcessQueue(db, name)
    print("start", flush=True)
    queue.acquire(time.monotonic() + 30)
    with open(log, "a") as f:
        f.write(name + "\\n")
    time.sleep(hold)
    queue.release()
    queue.close()
    print("done", flush=True)
"""


def queued_tickets(db: Path) -> int:
    """How many waiters hold a ticket slot (asked through a descriptor of our own)."""
    import fcntl

    fd = os.open(_procqueue.side_file(str(db)), os.O_RDWR)
    try:
        count = 0
        for ticket in range(1, 64):
            request = _procqueue._FLOCK.pack(fcntl.F_WRLCK, 0, _procqueue._slot(ticket), 1, 0)
            answer = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, request)
            count += _procqueue._FLOCK.unpack(answer)[0] != fcntl.F_UNLCK
        return count
    finally:
        os.close(fd)


def stopped(pid: int) -> bool:
    """Whether every thread of ``pid`` is stopped (by SIGSTOP)."""
    states = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/stat") as f:
            states.append(f.read().rpartition(")")[2].split()[0])
    return all(state == "T" for state in states)


def test_a_fast_path_holder_that_gives_the_turn_up_goes_behind_a_process_already_waiting(tmp_path: Path) -> None:
    """Holding the turn from the fast path, a process gives it up and asks again at once (a
    process writing back to back does so at every turn's end): a process that was already waiting
    must go first, even if it is slow to wake up (here: stopped with SIGSTOP, as a loaded machine
    may leave it unscheduled for a while).  The holder must not take the turn again ahead of it."""
    db = tmp_path / "app.db"
    make_db(db)
    log = tmp_path / "order.log"
    mine = _procqueue.ProcessQueue(str(db), "holder")
    try:
        mine.acquire(time.monotonic() + 10)  # the fast path: nobody else around
        assert mine.held
        other = spawn(QUEUER, str(db), "other", str(log), "0")
        try:
            wait_line(other, "start")
            wait_until(lambda: queued_tickets(db) == 1, timeout=20, what="the other process to queue")
            time.sleep(0.2)  # (asleep in the kernel by now)
            os.kill(other.pid, signal.SIGSTOP)
            try:
                wait_until(lambda: stopped(other.pid), timeout=20, what="the other process to stop")
                mine.release()
                try:
                    mine.acquire(time.monotonic() + 1)
                except _procqueue.QueueTimeout:
                    overtook = False  # behind the waiter, which cannot run yet
                else:
                    overtook = True
                    mine.release()
            finally:
                os.kill(other.pid, signal.SIGCONT)
            wait_line(other, "done")
        finally:
            finish(other)
    finally:
        mine.close()
    assert not overtook, "the holder took the turn again ahead of a process that was waiting for it"
    assert log.read_text().split() == ["other"]


def test_processes_that_queue_in_order_are_served_in_order(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    make_db(db)
    log = tmp_path / "order.log"
    mine = _procqueue.ProcessQueue(str(db), "holder")
    procs = []
    try:
        mine.acquire(time.monotonic() + 10)
        for i in range(4):
            proc = spawn(QUEUER, str(db), f"p{i}", str(log), "0.01")
            procs.append(proc)
            wait_line(proc, "start")
            wait_until(lambda: queued_tickets(db) == i + 1, timeout=20, what=f"p{i} to queue")
        mine.release()
        for proc in procs:
            wait_line(proc, "done")
    finally:
        for proc in procs:
            finish(proc)
        mine.close()
    assert log.read_text().split() == ["p0", "p1", "p2", "p3"]


def test_a_process_writing_back_to_back_does_not_starve_a_waiting_process(tmp_path: Path) -> None:
    """A process that took the turn on the fast path and writes without pause must still let a
    process that queued behind it in: at the end of its turn the waiter goes first."""
    db = tmp_path / "app.db"
    make_db(db)
    busy = spawn(BUSY_WRITER, str(db), "8")
    try:
        wait_line(busy, "ready")
        time.sleep(0.3)
        pool = sqlitefair.connect(db, timeout=10)
        try:
            start = time.monotonic()
            with pool.transaction() as conn:
                conn.execute("insert into t values ('waiter', ?)", (time.time(),))
            waited = time.monotonic() - start
        finally:
            pool.close()
        # The busy process keeps writing for 8 s: the waiter is served within a few of its turns.
        assert waited < 3, f"the waiting process was served only after {waited:.2f} s"
    finally:
        finish(busy)


# A process with a pool on the file that does what its mode says, reporting each step on stdout
# (and reading "go" on stdin where it waits to be told).
WRITER = """
    import gc, os, signal, sys, threading, time, sqlitefair
    path, mode = sys.argv[1], sys.argv[2]
    # Alone on the file, a process keeps its turn only after writes back to back: count every
    # commit as one, so that the idle modes below end in a kept turn, deterministically.
    sqlitefair._defaults.KEEP_ALONE_GAP = 3600.0
    pool = sqlitefair.connect(path, timeout=30)
    print("start", flush=True)
    if mode == "hold":  # hold a transaction open until told
        with pool.transaction() as conn:
            conn.execute("insert into t values ('hold', 0)")
            print("holding", flush=True)
            sys.stdin.readline()
        print("done", flush=True)
    elif mode == "commit-then-idle":  # commit twice (the second keeps the turn), then do nothing
        for _ in range(2):
            with pool.transaction() as conn:
                conn.execute("insert into t values ('idle', 0)")
        print("idle", flush=True)
    elif mode == "rollback-then-idle":
        try:
            with pool.transaction() as conn:
                conn.execute("insert into t values ('idle', 0)")
                raise ValueError
        except ValueError:
            pass
        print("idle", flush=True)
    elif mode == "interrupted-then-idle":  # a KeyboardInterrupt inside the block
        try:
            with pool.transaction() as conn:
                conn.execute("insert into t values ('idle', 0)")
                signal.raise_signal(signal.SIGINT)
                time.sleep(5)
        except KeyboardInterrupt:
            pass
        print("idle", flush=True)
    elif mode == "dropped-then-idle":  # commit twice (the turn kept), then drop the pool unclosed
        import warnings
        warnings.simplefilter("ignore")
        for _ in range(2):
            with pool.transaction() as conn:
                conn.execute("insert into t values ('idle', 0)")
        del pool, conn
        gc.collect()
        print("idle", flush=True)
    elif mode in ("queue", "queue-on-go"):  # wait for the writer (timeout from argv), commit, report
        timeout = float(sys.argv[3])
        if mode == "queue-on-go":
            sys.stdin.readline()
        try:
            with pool.transaction(timeout=timeout) as conn:
                conn.execute("insert into t values ('queue', 0)")
            print("committed", flush=True)
        except sqlitefair.PoolTimeout:
            print("timeout", flush=True)
    elif mode == "fork-while-holding":  # hold a transaction; fork a child that outlives us
        with pool.transaction() as conn:
            conn.execute("insert into t values ('hold', 0)")
            pid = os.fork()
            if pid == 0:
                time.sleep(60)
                os._exit(0)
            print(f"child {pid}", flush=True)
            sys.stdin.readline()
    sys.stdin.readline()
"""


def writer(db: Path, mode: str, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=SRC)
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(WRITER), str(db), mode, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    wait_line(proc, "start")
    return proc


def write_within(db: Path, bound: float, timeout: float = 10.0) -> None:
    """Commit a transaction here (timeout ``timeout``); fail if it took longer than ``bound``."""
    pool = sqlitefair.connect(db, timeout=timeout)
    try:
        start = time.monotonic()
        with pool.transaction() as conn:
            conn.execute("insert into t values ('here', 0)")
        waited = time.monotonic() - start
    finally:
        pool.close()
    assert waited < bound, f"waited {waited:.2f} s for the writer (timeout {timeout} s)"


def kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def test_a_process_killed_while_holding_the_turn_frees_it(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    make_db(db)
    holder = writer(db, "hold")
    try:
        wait_line(holder, "holding")
        kill(holder)
        write_within(db, 3)
    finally:
        finish(holder)


@pytest.mark.parametrize("mode", ["commit-then-idle", "rollback-then-idle", "interrupted-then-idle", "dropped-then-idle"])
def test_a_process_that_stops_writing_gives_the_turn_up(tmp_path: Path, mode: str) -> None:
    db = tmp_path / "app.db"
    make_db(db)
    idle = writer(db, mode)
    try:
        wait_line(idle, "idle")
        write_within(db, 3)
    finally:
        finish(idle)


def the_one_behind_is_served_promptly(db: Path, first_timeout: str, end_first_wait: Callable[[subprocess.Popen[str]], None]) -> None:
    """A holder, then two processes queued behind it; ``end_first_wait`` ends the first one's wait
    (a SIGKILL, its timeout).  Once the holder lets go, the second commits within 3 s."""
    make_db(db)
    holder = writer(db, "hold")
    procs = [holder]
    try:
        wait_line(holder, "holding")
        first = writer(db, "queue", first_timeout)
        procs.append(first)
        wait_until(lambda: queued_tickets(db) == 1, timeout=20, what="the first process to queue")
        behind = writer(db, "queue", "30")
        procs.append(behind)
        wait_until(lambda: queued_tickets(db) == 2, timeout=20, what="the second process to queue")
        end_first_wait(first)
        holder.stdin.write("go\n")  # type: ignore[union-attr]
        holder.stdin.flush()  # type: ignore[union-attr]
        wait_line(holder, "done")
        start = time.monotonic()
        wait_line(behind, "committed")
        assert time.monotonic() - start < 3
    finally:
        for proc in procs:
            finish(proc)


def test_a_process_killed_while_queued_does_not_stall_the_one_behind_it(tmp_path: Path) -> None:
    the_one_behind_is_served_promptly(tmp_path / "app.db", "30", kill)


# Takes a ticket as the queued path does (T, then its slot, then the counter published) and stops
# there, holding T, until it is killed.
TICKET_TAKER = """
    import os, sys, time
    from sqlitefair import _procqueue as q
    fd = os.open(q.side_file(sys.argv[1]), os.O_RDWR)
    q._lock(fd, q._SETLKW, q._WR, q._T)
    (last,) = q._U64.unpack(os.pread(fd, 8, q._COUNTER).ljust(8, b"\\0"))
    q._lock(fd, q._SETLKW, q._WR, q._slot(last + 1))
    os.pwrite(fd, q._U64.pack(last + 1), q._COUNTER)
    print("ticket", flush=True)
    time.sleep(60)
"""


def test_a_pool_made_while_another_process_takes_a_ticket_still_joins_the_queue(tmp_path: Path) -> None:
    """connect() checks that the side file's locks work; another process holding T at that moment
    (taking a ticket: every queued wait does) proves they do, and must not turn the queue off."""
    db = tmp_path / "app.db"
    make_db(db)
    ticket_taker = spawn(TICKET_TAKER, str(db))
    try:
        wait_line(ticket_taker, "ticket")
        with warnings.catch_warnings():
            warnings.simplefilter("error", sqlitefair.ProcessQueueWarning)
            pool = sqlitefair.connect(db)
        try:
            assert pool._state.writer.procq is not None
        finally:
            pool.close()
    finally:
        finish(ticket_taker)


def test_a_process_killed_while_holding_the_ticket_lock_does_not_stall_the_queue(tmp_path: Path) -> None:
    """Killed holding T, with its ticket slot locked and the counter published (no mark ever written)."""
    db = tmp_path / "app.db"
    make_db(db)
    mine = _procqueue.ProcessQueue(str(db), "holder")
    mine.acquire(None)
    behind = writer(db, "queue-on-go", "30")  # (its pool made before T is taken)
    procs = [behind]
    try:
        ticket_taker = spawn(TICKET_TAKER, str(db))
        procs.append(ticket_taker)
        wait_line(ticket_taker, "ticket")
        behind.stdin.write("go\n")  # type: ignore[union-attr]
        behind.stdin.flush()  # type: ignore[union-attr]
        time.sleep(0.3)  # (waiting for T)
        kill(ticket_taker)
        wait_until(lambda: queued_tickets(db) == 1, timeout=20, what="the process behind to queue")
        mine.release()
        start = time.monotonic()
        wait_line(behind, "committed")
        assert time.monotonic() - start < 3
    finally:
        mine.close()
        for proc in procs:
            finish(proc)


def test_a_timed_out_waiter_leaves_the_queue_without_stalling_the_one_behind(tmp_path: Path) -> None:
    the_one_behind_is_served_promptly(tmp_path / "app.db", "1", lambda impatient: wait_line(impatient, "timeout"))


def test_a_fork_child_does_not_keep_its_dead_parents_turn(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    make_db(db)
    parent = writer(db, "fork-while-holding")
    child = 0
    try:
        line = parent.stdout.readline().split()  # type: ignore[union-attr]
        assert line[0] == "child", line
        child = int(line[1])
        kill(parent)
        write_within(db, 3)
    finally:
        if child:  # (first: it shares the parent's pipes)
            os.kill(child, signal.SIGKILL)
        finish(parent)


# Forks (from another thread) while the pool opens its side file, between the open() and the
# descriptor's registration for the fork handler: the window made wide by a slower open.
FORK_WHILE_OPENING = """
    import os, sys, threading, time, sqlitefair
    from sqlitefair import _procqueue as q
    path = sys.argv[1]
    opened, forked = threading.Event(), threading.Event()
    real_open = q._open_side_file

    def slow_open(*args):
        fd = real_open(*args)
        opened.set()
        forked.wait(2)  # another thread forks meanwhile (or waits for us, if fork is held off)
        return fd

    q._open_side_file = slow_open

    def forker():
        opened.wait()
        pid = os.fork()
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        print(f"child {pid}", flush=True)
        forked.set()

    thread = threading.Thread(target=forker)
    thread.start()
    pool = sqlitefair.connect(path, timeout=30)
    thread.join()
    with pool.transaction() as conn:
        conn.execute("insert into t values ('hold', 0)")
        print("holding", flush=True)
        time.sleep(60)
"""


def test_a_fork_while_the_side_file_is_being_opened_leaves_the_child_no_share_in_the_turn(tmp_path: Path) -> None:
    """Another thread forks just as the pool opens its side file; the child must not keep a copy
    of that descriptor, or the turn later taken through it outlives the parent."""
    db = tmp_path / "app.db"
    make_db(db)
    parent = spawn(FORK_WHILE_OPENING, str(db))
    child = 0
    try:
        line = parent.stdout.readline().split()  # type: ignore[union-attr]
        assert line and line[0] == "child", line
        child = int(line[1])
        wait_line(parent, "holding")
        kill(parent)
        write_within(db, 3)
    finally:
        if child:  # (first: it shares the parent's pipes)
            os.kill(child, signal.SIGKILL)
        finish(parent)
