"""The cross-process writer queue, with real processes, real SIGKILLs and a real side file.

Each process here is a fresh interpreter running a small script (below): it opens a pool on
the database, says on stdout when it asks for the writer and when it got it, and waits for a
line on stdin before its transaction ends.  The order in which waiters queued is read off the
queue's own ticket counter (a waiter takes a ticket only once it has to wait), so "began
waiting in this order" is a fact, not a guess from sleeps.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import struct
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import pytest

import sqlitefair
from sqlitefair import _defaults, _procqueue

from _helpers import Worker, held_by_another_thread

pytestmark = pytest.mark.skipif(
    _procqueue.unavailable_reason(os.path.join(os.getcwd(), "x.db")) is not None,
    reason="the cross-process queue needs Linux open-file-description locks",
)

SRC = Path(__file__).resolve().parent.parent / "src"
STRESS = int(os.environ.get("SQLITEFAIR_STRESS", "1"))

WRITER = textwrap.dedent(
    """
    import sys, time, sqlitefair
    path, name, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
    pool = sqlitefair.connect(path, timeout=timeout)
    print("asking", flush=True)
    try:
        with pool.transaction() as conn:
            conn.execute("insert into served(who) values (?)", (name,))
            print("got", time.monotonic(), flush=True)
            sys.stdin.readline()            # hold the writer until told
    except sqlitefair.PoolTimeout as exc:
        print("timeout", exc.waiting_for, str(exc).replace("\\n", " "), flush=True)
    print("done", flush=True)
    pool.close()
    """
)


class Writer:
    """A process that asks for the writer, reports ``got``, and holds it until :meth:`release`."""

    def __init__(self, path: Path, name: str, timeout: float = 30.0, script: str = WRITER) -> None:
        """``script``: the program that does the above (a sqlitefair pool's, unless given)."""
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, "-c", script, str(path), name, str(timeout)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )
        assert self.line() == "asking"

    def line(self, limit: float = 20.0) -> str:
        """The next line the process printed (waiting at most ``limit`` seconds)."""
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self.proc.stdout.readline()))  # type: ignore[union-attr]
        reader.start()
        reader.join(limit)
        assert result, f"{self.name}: no line within {limit} s"
        return result[0].strip()

    def got(self, limit: float = 20.0) -> float:
        """Wait until the process holds the writer; the time.monotonic() at which it got it."""
        text = self.line(limit)
        assert text.startswith("got "), f"{self.name}: {text}"
        return float(text.split()[1])

    def release(self) -> None:
        self.proc.stdin.write("\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        assert self.line() == "done"
        self.proc.wait(10)

    def kill(self) -> float:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        return time.monotonic()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except BrokenPipeError:  # the process died with our line unread
                    pass


def tickets(path: Path) -> int:
    """How many tickets the queue of ``path`` has handed out (waiters that had to queue)."""
    with open(_procqueue.side_file(str(path)), "rb") as f:
        f.seek(8)
        data = f.read(8)
    return struct.unpack("<Q", data.ljust(8, b"\0"))[0]


def queue_up(path: Path, name: str, timeout: float = 30.0, script: str = WRITER) -> Writer:
    """Start a writer and wait until it has taken its ticket (it waits in the queue now)."""
    before = tickets(path)
    writer = Writer(path, name, timeout, script)
    deadline = time.monotonic() + 20
    while tickets(path) == before:
        assert time.monotonic() < deadline, f"{name} never queued across processes"
        time.sleep(0.005)
    return writer


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "app.db"
    with sqlitefair.connect(path) as pool, pool.transaction() as conn:
        conn.execute("create table served(n integer primary key, who text)")
    return path


def served(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [row[0] for row in conn.execute("select who from served order by n")]
    finally:
        conn.close()


@pytest.mark.parametrize("killed", [None, 2], ids=["all", "one-killed-while-queued"])
def test_processes_are_served_in_the_order_they_began_waiting(db: Path, killed: int | None) -> None:
    """Five processes queue behind a sixth that holds the writer; each is served in turn (one
    SIGKILLed while queued is skipped, and the order of the others holds)."""
    holder = Writer(db, "holder")
    holder.got()
    waiters = []
    try:
        for i in range(5):
            waiters.append(queue_up(db, f"w{i}"))
            time.sleep(0.02)
        if killed is not None:
            waiters[killed].kill()
        holder.release()
        for i, w in enumerate(waiters):
            if i != killed:
                w.got()
                w.release()
    finally:
        for w in [holder, *waiters]:
            w.close()
    assert served(db) == ["holder"] + [f"w{i}" for i in range(5) if i != killed]


def test_killed_holders_and_queued_processes_never_stall_the_others(db: Path) -> None:
    """SIGKILL the holder, a queued process and then the new holder, many times: each time the
    next in line gets the writer as soon as the kernel dropped the dead one's locks (its timeout
    of 30 s is far away), and in order."""
    for round_ in range(3 * STRESS):
        holder = Writer(db, f"h{round_}")
        holder.got()
        a, b, c = (queue_up(db, f"{x}{round_}") for x in "abc")
        try:
            b.kill()  # queued: dropped from the line
            killed = holder.kill()  # holding: the turn goes to the next alive
            assert a.got() - killed < 5.0
            killed = a.kill()  # holding in its turn
            assert c.got() - killed < 5.0
            c.release()
        finally:
            for w in (holder, a, b, c):
                w.close()
    assert served(db) == [f"c{r}" for r in range(3 * STRESS)]  # the killed ones' inserts rolled back


def test_a_wait_that_times_out_leaves_the_queue_without_stalling_those_behind(db: Path) -> None:
    holder = Writer(db, "holder")
    holder.got()
    impatient = queue_up(db, "impatient", timeout=0.5)
    patient = queue_up(db, "patient")
    try:
        text = impatient.line()
        assert text.startswith("timeout writer ") and "cross-process queue" in text, text
        time.sleep(0.2)
        released = time.monotonic()
        holder.release()
        assert patient.got() - released < 5.0
        patient.release()
    finally:
        for w in (holder, impatient, patient):
            w.close()
    assert served(db) == ["holder", "patient"]


def test_the_turn_of_a_process_that_stopped_writing_is_given_up(db: Path) -> None:
    """A process alone on the file keeps the turn briefly after transactions back to back; if it
    writes nothing more, its keeper gives the turn up, so the next process does not wait until
    its timeout."""
    idle = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(
            """
            import sys, sqlitefair
            sqlitefair._defaults.KEEP_ALONE_GAP = 3600.0  # every commit counts as back to back
            pool = sqlitefair.connect(sys.argv[1])
            for who in ("idle", "idle"):  # the second commit keeps the turn
                with pool.transaction() as conn:
                    conn.execute("insert into served(who) values (?)", (who,))
            print("written", flush=True)
            sys.stdin.readline()
            """
        ), str(db)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )
    try:
        assert idle.stdout.readline().strip() == "written"  # type: ignore[union-attr]
        with sqlitefair.connect(db, timeout=3) as pool, pool.transaction() as conn:
            conn.execute("insert into served(who) values ('next')")
    finally:
        idle.kill()
        idle.wait(10)
        idle.stdin.close()  # type: ignore[union-attr]
        idle.stdout.close()  # type: ignore[union-attr]
    assert served(db) == ["idle", "idle", "next"]


def test_the_side_file_has_the_database_files_permissions(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    sqlite3.connect(path).close()
    os.chmod(path, 0o640)
    with sqlitefair.connect(path) as pool:
        assert pool.stats().process_queue == "on"
    assert os.stat(_procqueue.side_file(str(path))).st_mode & 0o777 == 0o640


def test_a_deleted_side_file_is_made_again_and_every_pool_moves_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_defaults, "FILE_CHECK_INTERVAL", 0.01)
    path = tmp_path / "app.db"
    first, second = sqlitefair.connect(path), sqlitefair.connect(path)
    try:
        with first.transaction() as conn:
            conn.execute("create table t(v)")
        os.unlink(_procqueue.side_file(str(path)))
        time.sleep(0.05)
        for pool in (first, second, first):
            with pool.transaction() as conn:
                conn.execute("insert into t values (1)")
        made_again = os.stat(_procqueue.side_file(str(path)))
        for pool in (first, second):
            assert pool._state.writer.procq._identity == (made_again.st_dev, made_again.st_ino)  # type: ignore[union-attr]
    finally:
        first.close()
        second.close()


def test_a_side_file_that_cannot_be_opened_turns_the_queue_off_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(path: str, database: str) -> int:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(_procqueue, "_open_side_file", refuse)
    with pytest.warns(sqlitefair.ProcessQueueWarning, match="Permission denied"):
        pool = sqlitefair.connect(tmp_path / "app.db")
    with pool:
        assert pool.stats().process_queue.startswith("off: ")
        with pool.transaction() as conn:  # the busy policy alone, as before
            conn.execute("create table t(v)")


def test_a_network_file_system_turns_the_queue_off_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n"
        f"40 22 0:40 / {tmp_path} rw,relatime shared:20 - nfs4 server:/export rw,vers=4.2\n"
    )
    monkeypatch.setattr(_procqueue, "MOUNTINFO", str(mountinfo))
    with pytest.warns(sqlitefair.ProcessQueueWarning, match="network file system"):
        pool = sqlitefair.connect(tmp_path / "app.db")
    with pool:
        assert pool.stats().process_queue.startswith("off: ")
    assert not os.path.exists(_procqueue.side_file(str(tmp_path / "app.db")))


def test_process_queue_false_makes_no_side_file_and_no_warning(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with sqlitefair.connect(tmp_path / "app.db", process_queue=False) as pool:
            with pool.transaction() as conn:
                conn.execute("create table t(v)")
            assert pool.stats().process_queue == "off: process_queue=False"
    assert not os.path.exists(_procqueue.side_file(str(tmp_path / "app.db")))


@pytest.mark.skipif(not sqlitefair.has_wal_reset_bug(sqlite3.sqlite_version), reason="needs an SQLite with the WAL-reset bug")
def test_sqlitefair_processes_never_meet_each_others_write_lock_so_no_wal_reset_warning(db: Path) -> None:
    """Queued behind another sqlitefair process, a writer never sees SQLITE_BUSY: they write (and
    checkpoint) one after the other, so the WAL-reset race cannot happen between them."""
    holder = Writer(db, "holder")
    holder.got()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", sqlitefair.WalResetBugWarning)
            with sqlitefair.connect(db, timeout=30) as pool:
                threading.Timer(0.3, holder.release).start()
                with pool.transaction() as conn:
                    conn.execute("insert into served(who) values ('here')")
                assert pool.stats().busy_retries == 0
    finally:
        holder.close()
    assert served(db) == ["holder", "here"]


@pytest.mark.skipif(not sqlitefair.has_wal_reset_bug(sqlite3.sqlite_version), reason="needs an SQLite with the WAL-reset bug")
def test_a_writer_outside_the_queue_still_gets_the_wal_reset_warning(db: Path) -> None:
    outside = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    outside.execute("BEGIN IMMEDIATE")
    threading.Timer(0.2, lambda: outside.execute("COMMIT")).start()
    try:
        with sqlitefair.connect(db, timeout=30) as pool:
            with pytest.warns(sqlitefair.WalResetBugWarning, match="outside sqlitefair's writer queue"):
                with pool.transaction() as conn:
                    conn.execute("insert into served(who) values ('here')")
    finally:
        time.sleep(0.3)
        outside.close()


def test_the_turn_keeper_never_keeps_a_writer_from_a_transaction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ending an idle turn must not take the pool's writer: a transaction that finds the writer
    free gets it, also with ``timeout=0`` (a try-lock), even while the keeper is busy giving the
    turn up (slowed down here, as a preempted thread would be)."""
    release = _procqueue.ProcessQueue.release

    def slow_in_the_keeper(self: _procqueue.ProcessQueue) -> None:
        if threading.current_thread().name == "sqlitefair-turn-keeper":
            time.sleep(0.05)
        release(self)

    monkeypatch.setattr(_procqueue.ProcessQueue, "release", slow_in_the_keeper)
    # Every commit keeps the turn, as when another thread of the pool waits to write.
    monkeypatch.setattr(sqlitefair.FairLock, "has_waiters", lambda self: True)
    with sqlitefair.connect(tmp_path / "app.db") as pool:
        with pool.transaction() as conn:
            conn.execute("create table t(v)")
        procq = pool._state.writer.procq
        assert procq is not None and procq.held, "the turn was not kept"
        for i in range(5 * STRESS):
            time.sleep(_defaults.PROCESS_TURN * 5)  # the turn ended: the keeper is giving it up, slowly
            with pool.transaction(timeout=0) as conn:  # PoolTimeout if the keeper held the writer
                conn.execute("insert into t values (?)", (i,))
        deadline = time.monotonic() + 5
        while procq.held and time.monotonic() < deadline:  # and the kept turn is given up in the end
            time.sleep(0.01)
        assert not procq.held, "the keeper never gave the idle turn up"


def test_a_pool_alone_on_its_file_keeps_its_turn_and_gives_it_up_once_another_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alone, a pool writing back to back keeps the turn between transactions (no system calls
    to take it again); with another pool present on the file, a transaction that no thread waits
    behind gives it up at once, so the other never waits for the keeper."""
    monkeypatch.setattr(_defaults, "KEEP_ALONE_GAP", 3600.0)  # every commit counts as back to back
    path = tmp_path / "app.db"
    with sqlitefair.connect(path) as pool:
        procq = pool._state.writer.procq
        assert procq is not None
        with pool.transaction() as conn:
            conn.execute("create table t(v)")
        with pool.transaction() as conn:
            conn.execute("insert into t values (0)")
        assert procq.held, "alone, the turn is kept for the next transaction"
        with sqlitefair.connect(path) as other:
            time.sleep(_defaults.PROCESS_TURN * 2)  # the kept turn ends (the keeper gives it up)
            with pool.transaction() as conn:
                conn.execute("insert into t values (1)")
            assert not procq.held, "with another pool present, a turn kept for nobody"
            with other.transaction(timeout=0) as conn:  # so the other gets the writer at once
                conn.execute("insert into t values (2)")


def test_a_pool_alone_writing_now_and_then_gives_its_turn_up_at_each_commit(tmp_path: Path) -> None:
    """Alone on its file, a pool whose writes are not back to back (a web app's) gives the turn
    up at each commit instead of keeping it for a keeper thread to end: that thread's two
    wake-ups per turn cost far more than the system calls a kept turn spares."""
    with sqlitefair.connect(tmp_path / "app.db") as pool:
        procq = pool._state.writer.procq
        assert procq is not None
        with pool.transaction() as conn:
            conn.execute("create table t(v)")
        for i in range(5):
            time.sleep(0.005)  # far apart, as requests are
            with pool.transaction() as conn:
                conn.execute("insert into t values (?)", (i,))
            assert not procq.held, "a turn was kept after a write that was not back to back"
        assert procq._keeper is None, "the turn keeper was started for writes that were never back to back"


def test_a_close_that_timed_out_closes_the_queue_when_the_last_transaction_ends(tmp_path: Path) -> None:
    pool = sqlitefair.connect(tmp_path / "app.db")
    procq = pool._state.writer.procq
    assert procq is not None
    with held_by_another_thread(pool.transaction()) as (_conn, leave):
        with pytest.raises(sqlitefair.PoolTimeout):
            pool.close(timeout=0.1)
        assert procq._fd >= 0  # still in use by the open transaction
        leave()
    assert procq._fd < 0 and not procq.held, "the queue's file stayed open after the last transaction"


def test_close_never_lets_the_keeper_touch_a_descriptor_it_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The keeper gives an idle turn up on the queue's descriptor; ``close()`` closes that
    descriptor.  If the close ran while the keeper was between reading the number and unlocking,
    the number could already belong to another file (the next ``open()`` reuses it), and the
    keeper would unlock that file's lock (or, failing, close it).  The keeper is held inside its
    unlock here while another thread closes the pool and this one opens and locks a file."""
    real_lock = _procqueue._lock
    in_unlock, go, unlocked = threading.Event(), threading.Event(), threading.Event()

    def held_in_the_keeper(fd: int, command: int, kind: int, start: int, length: int = 1) -> None:
        if threading.current_thread().name != "sqlitefair-turn-keeper" or kind != _procqueue._UN or go.is_set():
            return real_lock(fd, command, kind, start, length)
        in_unlock.set()
        go.wait(5)
        try:
            real_lock(fd, command, kind, start, length)
        finally:
            unlocked.set()

    monkeypatch.setattr(_defaults, "KEEP_ALONE_GAP", 3600.0)  # every commit counts as back to back
    pool = sqlitefair.connect(tmp_path / "app.db")
    with pool.transaction() as conn:
        conn.execute("create table t(v)")
    with pool.transaction() as conn:
        conn.execute("insert into t values (0)")
    procq = pool._state.writer.procq
    assert procq is not None and procq.held, "alone, the turn is kept (and the keeper watches it)"
    monkeypatch.setattr(_procqueue, "_lock", held_in_the_keeper)
    assert in_unlock.wait(5), "the keeper did not come to give the idle turn up"
    number = procq._fd
    closer = Worker(pool.close, name="closer")
    closer.start()
    closer.join(0.3)  # a close that does not wait for the keeper is done by now
    spare: list[int] = []  # open() takes the lowest free number: open until the queue's comes back
    other = os.open(tmp_path / "other", os.O_RDWR | os.O_CREAT, 0o600)
    while other < number and len(spare) < 64:
        spare.append(other)
        other = os.open(tmp_path / "other", os.O_RDWR)
    try:
        real_lock(other, _procqueue._SETLK, _procqueue._WR, _procqueue._W, 2)
        go.set()
        closer.finish()
        assert unlocked.wait(5)
        time.sleep(0.05)  # (the keeper's error handling, if its unlock failed)
        os.fstat(other)  # still open
        probe = os.open(tmp_path / "other", os.O_RDWR)
        try:
            with pytest.raises(OSError):  # and still locked: another description cannot take it
                real_lock(probe, _procqueue._SETLK, _procqueue._WR, _procqueue._W, 2)
        finally:
            os.close(probe)
    finally:
        go.set()
        for fd in (other, *spare):
            os.close(fd)
