"""The writer queue across processes: every sqlitefair writer of one database file, in any
process, served in order of arrival.

Inside a process, writers line up in their pool's :class:`~sqlitefair._fairlock.FairLock`;
the thread at the head of that line then lines up here, beside the heads of every other
pool on the same file (other processes, or other pools of this one).  Between processes
SQLite itself only offers its file lock, which ``BEGIN IMMEDIATE`` polls: a process whose
own line never empties takes it again and again while the others sleep between polls.

**How.**  Linux open-file-description (OFD) record locks on a side file,
``<database>-sqlitefair-queue``.  They belong to one ``open()`` (not to the process, so two
pools of one process exclude each other), the kernel queues blocked requests with the GIL
released, and it drops them the instant their process dies, however it dies.  Byte ranges:

* byte 0, ``W``: the writer's turn.  Whoever holds it may ``BEGIN IMMEDIATE``.
* byte 1, ``Q``: "someone is queued".  Every queued waiter holds a shared lock on it.
* byte 2, ``T``: guards the ticket counter (bytes 8-15, little-endian).
* byte 3, ``P``: "present".  Every open queue holds a shared lock on it, so a process can ask
  the kernel (``F_OFD_GETLK``) whether any other pool has the file open.
* one slot per ticket from byte 4096 on, 8 bytes each, round a ring of :data:`SLOTS`:
  its waiter holds an exclusive lock on the slot's first byte while queued, and writes its
  ticket number into the slot (the *mark*) once it holds ``W``.

*Fast path* (nobody queued, writer free): one ``F_OFD_SETLK`` of ``W`` and ``Q`` together,
which succeeds only if neither is held, then ``Q`` let go at once (so that a process arriving
while we hold ``W`` queues in full, holding ``Q``, and we cannot take ``W`` again ahead of it
however slowly it wakes up), and one unlock after the transaction.

*Queued path*, a CLH queue: take ticket ``t`` under ``T`` (lock slot ``t`` first, then
publish the counter), hold ``Q`` shared, wait for slot ``t - 1``; once it is free, its mark
says whether ticket ``t - 1`` got ``W`` (then wait for ``W``, which it is about to give up)
or its process died while queued (no mark: wait for ``t - 2`` as well, and so on).  Then
take ``W``, write the mark of ``t`` and let go of slot ``t`` and ``Q``: the next ticket
takes over the wait for ``W``.  A newcomer cannot overtake a queued waiter, since ``Q`` is
held; the wait for each lock happens in the kernel.

**Crash safety** comes from the kernel: a process killed while holding ``W`` or ``T`` drops
them; one killed while queued drops its slot without a mark, and its successor waits on the
ticket before it.  Nothing is ever left to clean up.

**Turns.**  Handing the writer to another process wakes a thread there, which costs tens of
microseconds; so a process that got ``W`` keeps it for a *turn* of :data:`~sqlitefair._defaults.PROCESS_TURN`
seconds while its own threads wait to write (each transaction still FIFO in its pool's
queue), and gives it up at the first transaction end after that, or at once when none of
its threads waits.  A process behind N
others so waits about N turns.  If the process stops writing with ``W`` kept, a keeper
thread gives ``W`` up at the end of the turn (under a small mutex shared with the
transactions' use of the turn: never while one uses it).

**Timeouts.**  A blocking ``fcntl`` cannot be given a deadline, so a wait with one runs in
a helper thread while the caller waits (interruptibly) for it; a caller that gives up hands
the helper its descriptor, which the helper closes as soon as its wait ends, and that is
the same as a death in the queue.  Without a deadline the caller waits in the kernel itself.

**Fork.** A child inherits the parent's descriptors, and with them a share in its locks;
it closes its copies (:func:`_close_inherited`) so that the parent's death still frees them,
and opens its own.

Writers outside sqlitefair (the ``sqlite3`` shell, other programs) do not take part; the
busy policy still handles them.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
import sys
import threading
import time
import warnings
import weakref
from time import monotonic

from . import _defaults
from ._errors import ProcessQueueWarning
from ._interrupts import interruptible, protected

try:
    import fcntl

    _SETLK: int = fcntl.F_OFD_SETLK  # type: ignore[attr-defined]
    _SETLKW: int = fcntl.F_OFD_SETLKW  # type: ignore[attr-defined]
    _RD, _WR, _UN = fcntl.F_RDLCK, fcntl.F_WRLCK, fcntl.F_UNLCK
except (ImportError, AttributeError):  # not Linux (or Python built without OFD locks)
    fcntl = None  # type: ignore[assignment]
    _SETLK = _SETLKW = _RD = _WR = _UN = 0

__all__ = ("ProcessQueue", "QueueTimeout", "open_queue", "side_file", "unavailable_reason", "warn_unavailable")

log = logging.getLogger("sqlitefair")

#: Tickets in flight at once (queued heads of pools on one file) before the ring wraps.
SLOTS = 4096
_W, _Q, _T, _P = 0, 1, 2, 3
_COUNTER = 8
_SLOT_BASE = 4096
_SUFFIX = "-sqlitefair-queue"
#: struct flock (Linux, 64-bit off_t): l_type, l_whence, l_start, l_len, l_pid, padding.
_FLOCK = struct.Struct("hhqqi4x")
_U64 = struct.Struct("<Q")
#: File systems whose record locks are not this host's alone (network file systems).
NETWORK_FILE_SYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "fuse.glusterfs", "lustre", "afs",
     "fuse.sshfs", "9p", "gfs2", "ocfs2", "davfs", "fuse.s3fs"}
)
#: Where the mount table is read from (a test may point it elsewhere).
MOUNTINFO = "/proc/self/mountinfo"


class QueueTimeout(Exception):
    """Internal: the deadline passed while waiting in the cross-process queue."""

    def __init__(self, waited: float) -> None:
        super().__init__(f"waited {waited:.3f} s in the cross-process queue")
        self.waited = waited


def side_file(database: str) -> str:
    """The path of the queue's side file for ``database``."""
    return database + _SUFFIX


def _lock(fd: int, command: int, kind: int, start: int, length: int = 1) -> None:
    fcntl.fcntl(fd, command, _FLOCK.pack(kind, 0, start, length, 0))


def _slot(ticket: int) -> int:
    return _SLOT_BASE + 8 * (ticket % SLOTS)


def filesystem_type(path: str) -> str | None:
    """The type of the file system ``path`` lives on (from the mount table), or None if unknown."""
    try:
        with open(MOUNTINFO, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    target = os.path.realpath(path)
    best, best_type = "", None
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or not tail:
            continue
        point = fields[4].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, best_type = point, tail[0]
    return best_type


def unavailable_reason(database: str) -> str | None:
    """Why the queue cannot work for ``database`` here, or None if it can."""
    if fcntl is None or not sys.platform.startswith("linux"):
        return "this platform has no open-file-description locks (Linux only)"
    kind = filesystem_type(os.path.dirname(os.path.abspath(database)) or ".")
    if kind in NETWORK_FILE_SYSTEMS:
        return (
            f"the database is on a network file system ({kind}), where record locks may not be this "
            "host's alone and SQLite's WAL mode is not safe either"
        )
    return None


def _open_side_file(path: str, database: str) -> int:
    """Open (creating if missing) the side file, with the database file's permissions."""
    flags = os.O_RDWR | os.O_CLOEXEC
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return os.open(path, flags)
    try:
        # As SQLite does for -wal and -shm: whoever may write the database may queue for it.
        info = os.stat(database)
        os.fchmod(fd, info.st_mode & 0o666)
        if os.geteuid() == 0:
            os.fchown(fd, info.st_uid, info.st_gid)
    except OSError:
        log.debug("could not give %s the database's permissions", path, exc_info=True)
    return fd


# Every descriptor this module has open, so that a fork child can close its copies.  Opening or
# closing one and recording it happen together under the lock, which a fork waits for: a fork
# between the two would leave the child a copy it does not know of (sharing our locks for its
# whole life) or close a number that is no longer ours.
_descriptors: set[int] = set()
_descriptors_lock = threading.Lock()


def _close(fd: int) -> None:
    """Close one of our descriptors: every lock taken through it is dropped (no other process
    shares it, and a fork child closed its copy)."""
    with _descriptors_lock:
        _descriptors.discard(fd)
        try:
            os.close(fd)
        except OSError:  # pragma: no cover - already closed
            pass


def _closed(fd: int) -> int:
    """Close ``fd`` (see :func:`_close`) and return -1: ``self._fd = _closed(fd)`` forgets it in one statement."""
    _close(fd)
    return -1


def _try_take(fd: int) -> bool:
    """Take ``W`` if neither it nor ``Q`` is held (the writer free, nobody queued): both in one
    call, then ``Q`` let go again.  Holding ``Q`` for the whole turn would keep the processes that
    queue meanwhile from holding it, so at the turn's end this process could take ``W`` again
    before they wake up, again and again."""
    try:
        _lock(fd, _SETLK, _WR, _W, 2)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    _lock(fd, _SETLK, _UN, _Q)
    return True


def _alone(fd: int) -> bool:
    """Whether no other open queue (another pool, in this process or another) is present."""
    answer = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _FLOCK.pack(_WR, 0, _P, 1, 0))
    return bool(_FLOCK.unpack(answer)[0] == _UN)


def _close_inherited() -> None:
    """In a fork child: close the copies of the parent's descriptors without unlocking anything
    (the locks are the parent's, shared through the copy until it is closed).  The parent held
    ``_descriptors_lock`` across the fork, so the set names exactly the descriptors it had open."""
    global _descriptors_lock
    _descriptors_lock = threading.Lock()
    for fd in list(_descriptors):
        try:
            os.close(fd)
        except OSError:
            pass
    _descriptors.clear()


def _before_fork() -> None:
    _descriptors_lock.acquire()  # no descriptor half opened or half closed while we fork


def _after_fork_in_parent() -> None:
    _descriptors_lock.release()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_close_inherited)


class _Wait:
    """One queued wait handed to a helper thread: its outcome, or the caller's giving up.

    ``state`` moves once, under ``mutex``, from "waiting" to "granted", "failed" or
    "abandoned"; whichever side moves it decides who owns the descriptor's locks."""

    __slots__ = ("fd", "queue", "mutex", "done", "state", "error")

    def __init__(self, fd: int, queue: ProcessQueue) -> None:
        self.fd = fd
        self.queue = queue  # its ``held`` is set by the helper, with the grant (under ``mutex``)
        self.mutex = threading.Lock()
        self.done = threading.Lock()
        self.done.acquire()  # released by the helper when the wait ends
        self.state = "waiting"
        self.error: BaseException | None = None


class _Helper:
    """A thread that runs queued waits for one :class:`ProcessQueue`, one at a time (it holds
    the queue only weakly: an idle helper keeps no pool alive)."""

    def __init__(self, queue: ProcessQueue) -> None:
        self._queue = weakref.ref(queue)
        self._go = threading.Lock()
        self._go.acquire()
        self.job: _Wait | None = None
        threading.Thread(target=self._run, name="sqlitefair-process-queue", daemon=True).start()

    def start(self, job: _Wait) -> None:
        self.job = job
        self._go.release()

    def stop(self) -> None:
        self.job = None
        self._go.release()

    def _run(self) -> None:
        while True:
            self._go.acquire()
            job, self.job = self.job, None
            if job is None:
                return
            try:
                _wait_in_queue(job.fd)
                outcome, error = "granted", None
            except BaseException as exc:  # noqa: BLE001 - reported to the caller
                outcome, error = "failed", exc
            with job.mutex:
                abandoned = job.state == "abandoned"
                if not abandoned:
                    job.state, job.error = outcome, error
                    if outcome == "granted":
                        job.queue.held = True  # recorded with the grant: the caller's side cannot miss it
            if abandoned:
                _close(job.fd)  # the caller gave up: leave the queue as a dead process would
            job.queue = None  # type: ignore[assignment]
            job.done.release()
            del job
            queue = self._queue()
            if queue is None or not queue._idle(self):
                return
            del queue


def _wait_in_queue(fd: int) -> None:
    """The queued path, blocking: take a ticket, wait for the tickets before it, take ``W``."""
    _lock(fd, _SETLKW, _WR, _T)
    try:
        (last,) = _U64.unpack(os.pread(fd, 8, _COUNTER).ljust(8, b"\0"))
        ticket = last + 1
        _lock(fd, _SETLKW, _WR, _slot(ticket))  # (blocks only if the ring wrapped onto a live waiter)
        os.pwrite(fd, _U64.pack(ticket), _COUNTER)
    finally:
        _lock(fd, _SETLK, _UN, _T)
    _lock(fd, _SETLKW, _RD, _Q)  # (waits only for the instant a fast path holds W and Q together)
    before = ticket - 1
    while before > 0 and ticket - before < SLOTS:
        where = _slot(before)
        _lock(fd, _SETLKW, _RD, where)
        (mark,) = _U64.unpack(os.pread(fd, 8, where).ljust(8, b"\0"))
        _lock(fd, _SETLK, _UN, where)
        if mark == before:
            break  # that ticket got W: it is ours next
        before -= 1  # its process died while queued: wait for the one before it too
    _lock(fd, _SETLKW, _WR, _W)
    os.pwrite(fd, _U64.pack(ticket), _slot(ticket))
    _lock(fd, _SETLK, _UN, _slot(ticket))  # the next ticket takes over the wait for W
    _lock(fd, _SETLK, _UN, _Q)


class _Keeper:
    """Ends a turn that its process stopped using: from ``turn_until`` on, while ``W`` is still
    kept, calls :meth:`ProcessQueue.end_idle_turn` every turn's length (which gives ``W`` up
    unless a transaction uses it).  Looking again matters: a transaction that began inside the
    turn and ends after it gives the turn up itself, but one that began inside and keeps it
    ended before the turn did."""

    def __init__(self, queue: ProcessQueue) -> None:
        self._queue = weakref.ref(queue)  # weakly: the thread keeps no pool alive
        self._cond = threading.Condition(threading.Lock())
        self._armed = False
        self._stopped = False
        threading.Thread(target=self._run, name="sqlitefair-turn-keeper", daemon=True).start()

    def arm(self) -> None:
        with self._cond:
            self._armed = True
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._armed and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                self._armed = False
            # Until W is given up, by a transaction's end or here.  (held and turn_until are read
            # as hints: end_idle_turn looks again under the turn's mutex.)
            while self._look():
                pass

    def _look(self) -> bool:
        """One look at the turn: end it if it is over and idle; sleep until the next look.  Returns
        whether to look again.  (A method of its own: its locals, a strong reference to the queue
        among them, are gone when it returns, so the thread keeps no pool alive while it waits.)"""
        queue = self._queue()
        if queue is None or not queue.held:
            return False
        left = queue.turn_until - monotonic()
        if left <= 0:
            try:
                queue.end_idle_turn()
            except Exception:  # pragma: no cover - never leave the keeper dead
                log.warning("ending an idle writer turn failed", exc_info=True)
            if not queue.held:
                return False
            left = _defaults.PROCESS_TURN  # in use (a transaction begun in the turn): look again
        del queue
        time.sleep(left)
        return True


@interruptible
def _wait_interruptibly(fd: int) -> bool:
    """The queued path in this thread (True once ``W`` is ours): a Ctrl-C lands here at once (the
    caller then leaves the queue)."""
    _wait_in_queue(fd)
    return True


@interruptible
def _wait_for_helper(done: threading.Lock, deadline: float) -> None:
    """Wait (interruptibly) until the helper's wait ended or ``deadline`` passed."""
    done.acquire(timeout=max(0.0, deadline - monotonic()))


class ProcessQueue:
    """The cross-process writer queue of one pool in one process (see the module docstring).

    Invariants: only the holder of the pool's writer permit calls :meth:`enter`, :meth:`leave`,
    :meth:`abandon` (and through them :meth:`acquire`) and :meth:`close`; the keeper thread
    only calls :meth:`end_idle_turn`, which gives ``W`` up only while ``in_use`` is false,
    under the same mutex that sets it.  ``held`` says whether the descriptor ``_fd`` holds
    ``W`` (recorded in the statement that takes it, or by the helper with the grant).  A
    descriptor handed to a helper that was given up on is never used again: it belongs to
    the helper, which closes it.
    """

    def __init__(self, database: str, name: str) -> None:
        self._database = database
        self._pid = os.getpid()
        self._path = side_file(database)
        self._name = name
        self._fd = -1
        self._identity: tuple[int, int] | None = None
        self._next_check = 0.0
        self.held = False
        #: When this process's turn ends (``time.monotonic()``): transactions keep ``W`` until then.
        self.turn_until = 0.0
        #: A transaction of this pool uses the turn now (between enter() and leave()/abandon()).
        #: Guarded by ``_turn_mutex``, with the decision to give a kept turn up: the keeper never
        #: gives up a turn in use, and never takes the pool's writer to look.
        self.in_use = False
        self._turn_mutex = threading.Lock()
        self._kept_turn = 0.0  # the turn_until of the last turn kept past a transaction (the keeper watches it)
        self._alone: bool | None = False  # no other pool has the file open (None: not looked yet in this turn; see leave())
        self._last_leave = float("-inf")  # when the last transaction committed (see leave())
        self._keeper: _Keeper | None = None
        self._closed = False  # close() ran: helpers that finish a wait end instead of waiting for the next
        self._unusable = False  # said once that the side file cannot be opened (until it can again)
        self._helpers: list[_Helper] = []
        self._helpers_lock = threading.Lock()

    # -- opening ----------------------------------------------------------------

    def _descriptor(self, now: float) -> int:
        """Our open side file, (re)opened if it is missing or no longer the file at the path."""
        fd = self._fd
        if fd >= 0 and now < self._next_check:
            return fd
        self._next_check = now + _defaults.FILE_CHECK_INTERVAL
        try:
            info = os.stat(self._path)
            current: tuple[int, int] | None = (info.st_dev, info.st_ino)
        except FileNotFoundError:
            current = None
        if fd >= 0 and current == self._identity:
            return fd
        try:
            with _descriptors_lock:  # (opened and recorded with no fork in between)
                new = _open_side_file(self._path, self._database)
                _descriptors.add(new)
            _lock(new, _SETLK, _RD, _P)  # present (shared: it never waits, and only a test asks for more)
        except OSError:
            if fd >= 0:  # (e.g. its folder was moved away) keep the file we have: others may still use it
                return fd
            raise
        if fd >= 0:  # deleted or replaced: queue where the others will (they reopen it too)
            log.warning("the queue file %s was deleted or replaced; using the new one", self._path)
            _close(fd)
        info = os.fstat(new)
        self._identity = (info.st_dev, info.st_ino)
        self._fd = new
        return new

    def probe(self) -> None:
        """Open the side file and check that its locks work (raises OSError if not)."""
        fd = self._descriptor(monotonic())
        try:
            _lock(fd, _SETLK, _RD, _T)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return  # another waiter holds T (taking its ticket): the locks work
            raise
        _lock(fd, _SETLK, _UN, _T)

    # -- the turn ---------------------------------------------------------------

    @protected
    def acquire(self, deadline: float | None) -> float:
        """Take the writer's turn across processes; return the seconds it took (next to nothing
        on the fast path).  Raises :class:`QueueTimeout` at ``deadline`` (``time.monotonic()``)."""
        if self.held:  # (a release cut short after its unlock: the lock is free already)
            self.release()
        now = monotonic()
        try:
            fd = self._descriptor(now)
        except OSError as exc:  # the side file is gone and cannot be made again: the busy policy alone
            if not self._unusable:
                self._unusable = True
                log.warning("cannot open the queue file %s (%s); writing without it", self._path, exc.strerror or exc)
            return 0.0
        self._unusable = False
        self.held = _try_take(fd)  # (taken and recorded in one statement)
        if self.held:
            self._alone = None  # looked at only if a commit in this turn comes back to back (leave())
            return self._start_turn(now)
        self._alone = False  # (we queued: others are there)
        if deadline is None:
            try:
                self.held = _wait_interruptibly(fd)
            except BaseException:  # interrupted: leave the queue as a dead process would
                self._fd = _closed(fd)
                raise
            return self._start_turn(now)
        job = _Wait(fd, self)
        self._helper().start(job)
        try:
            _wait_for_helper(job.done, deadline)
        finally:  # (also when interrupted: the helper recorded a grant in ``held`` itself)
            with job.mutex:
                if job.state == "waiting":  # timed out or interrupted: the descriptor is the helper's now
                    job.state = "abandoned"
                    self._fd = -1
                elif job.state == "failed":  # its locks go with the descriptor
                    self._fd = _closed(fd)
        if self.held:
            return self._start_turn(now)
        if job.error is not None:
            raise job.error
        raise QueueTimeout(monotonic() - now)

    def _start_turn(self, asked: float) -> float:
        """``W`` was just taken: the turn starts; return the seconds since ``asked``."""
        now = monotonic()
        self.turn_until = now + _defaults.PROCESS_TURN
        return now - asked

    # -- a transaction's use of the turn (the holder of the pool's writer permit) ---------------

    @protected
    def enter(self, since: float, deadline: float | None) -> float:
        """A transaction begins (its writer permit granted at ``since``): go on in this process's
        turn if it lasts, else take a new one (see :meth:`acquire`)."""
        with self._turn_mutex:
            self.in_use = True
            if self.held and since < self.turn_until:
                return 0.0
        self.release()  # a turn that ended (nothing if none is kept): to the back of the queue
        return self.acquire(deadline)

    @protected
    def leave(self, now: float, waiters: bool) -> None:
        """A transaction committed at ``now``: keep the turn for the next while it lasts if
        ``waiters`` (threads of this pool wait for its writer), or if this commit came right after
        the one before (``KEEP_ALONE_GAP``) and no other pool has the file open; else give it up
        at once: a turn kept for nobody while others may want it would only make them wait.
        (Alone, keeping it spares transactions back to back the system calls that take a turn; a
        pool that opens meanwhile waits at most a turn.  Sparse writes give it up: the keeper's
        wake-ups would cost more than they spare, and they never pay for the look at who else
        is there.)"""
        with self._turn_mutex:
            self.in_use = False
            back_to_back = now - self._last_leave < _defaults.KEEP_ALONE_GAP
            self._last_leave = now
            if now >= self.turn_until or not (waiters or (back_to_back and self._alone_in_turn())):
                self.release()
                return
            if self._kept_turn != self.turn_until:  # kept for the first time: the keeper sees to its end
                self._kept_turn = self.turn_until
                keeper = self._keeper
                if keeper is None:
                    keeper = self._keeper = _Keeper(self)
                keeper.arm()

    def _alone_in_turn(self) -> bool:
        """Whether no other pool has the side file open: looked at once per turn (a system call),
        by the holder of the turn (under the turn's mutex)."""
        if self._alone is None and self.held:
            try:
                self._alone = _alone(self._fd)
            except OSError:  # (cannot happen on an open descriptor) the safe answer: give the turn up
                self._alone = False
        return bool(self._alone)

    @protected
    def abandon(self) -> None:
        """A transaction ended any other way (rolled back, failed, interrupted): give the turn up."""
        with self._turn_mutex:
            self.in_use = False
            self.release()

    def end_idle_turn(self) -> None:
        """(The keeper) give up a turn that is over and that no transaction uses."""
        with self._turn_mutex:
            if self.held and not self.in_use and monotonic() >= self.turn_until:
                self.release()

    def _helper(self) -> _Helper:
        with self._helpers_lock:
            if self._helpers:
                return self._helpers.pop()
        return _Helper(self)

    def _idle(self, helper: _Helper) -> bool:
        """Take ``helper`` back for the next wait; False once the queue is closed (the helper ends)."""
        with self._helpers_lock:
            if self._closed:
                return False
            self._helpers.append(helper)
            return True

    @protected
    def release(self) -> None:
        """Give the writer's turn to the next in line (nothing if not held).  Idempotent: ``held``
        is cleared only after the unlock, and unlocking what is not held does nothing."""
        if self.held:
            try:
                _lock(self._fd, _SETLK, _UN, _W, 2)
            except OSError:  # cannot happen on an open descriptor; closing it frees everything
                log.warning("unlocking the queue file %s failed; reopening it", self._path, exc_info=True)
                self._fd = _closed(self._fd)
            self.held = False

    @protected  # cut short between closing the descriptor and forgetting its number, a later close would close another file's
    def close(self) -> None:
        """Close the side file (the caller holds the writer permit, or nobody uses the pool any more)."""
        if getattr(self, "_keeper", None) is not None:
            self._keeper.stop()
        with self._helpers_lock:
            self._closed = True
            helpers, self._helpers = self._helpers, []
        for helper in helpers:
            helper.stop()
        # Under the turn's mutex: the keeper gives an idle turn up under it, on this descriptor.
        # Closed while the keeper was about to unlock, the number could be another file's by the
        # time it did (an open() reuses it) and it would unlock (or, failing, close) that file.
        with self._turn_mutex:
            if self._fd >= 0:
                self._fd = _closed(self._fd)
            self.held = False

    @protected  # the interpreter swallows what __del__ raises: a Ctrl-C landing here is deferred
    def __del__(self) -> None:
        # A pool collected without close(): give the descriptor (and W, if kept) back, and let the
        # threads go.  Not in a fork child: the number there is no longer ours (_close_inherited).
        if getattr(self, "_pid", None) == os.getpid() and hasattr(self, "_helpers_lock"):
            self.close()


def open_queue(database: str, name: str) -> tuple[ProcessQueue | None, str | None]:
    """The cross-process queue of ``database``, its side file opened and its locks checked; or
    None and why it cannot work here (for the caller to say, once)."""
    reason = unavailable_reason(database)
    if reason is None:
        queue = ProcessQueue(database, name)
        try:
            queue.probe()
        except OSError as exc:
            reason = f"its file {side_file(database)!r} cannot be used ({exc.strerror or exc})"
        else:
            return queue, None
    return None, reason


def warn_unavailable(name: str, reason: str) -> None:
    """Say once, at ``connect()``, that the queue is off for this pool and why."""
    warnings.warn(
        f"sqlitefair's cross-process writer queue is off for {name!r}: {reason}. Writers in different "
        "processes are ordered by the busy policy alone. Pass process_queue=False to connect() to "
        "silence this.",
        ProcessQueueWarning,
        stacklevel=5,  # the caller of sqlitefair.connect()
    )
