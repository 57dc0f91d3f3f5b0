"""The pool: one FIFO-queued writer connection and several read-only readers.

This module holds the pool's configuration and public API; each role lives
in its own module:

* :mod:`._opening`: what to open and how to set a connection up;
* :mod:`._writer`: the writer's FIFO gate and the transactions that own it;
* :mod:`._readers`: the reader slots and read checkouts;
* :mod:`._wal`: keeping the WAL bounded; :mod:`._files`: the file's identity;
* :mod:`._errors`: the errors, which build their own messages.

Everything mutable that belongs to one process lives in :class:`_ProcessState`;
after ``os.fork()`` the child gets a fresh one and never touches (or closes)
the parent's connections.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
import weakref
from typing import Any, Callable, Mapping, TypeVar

from . import _combining, _defaults, _interrupts
from ._backends import Backend, Connection, apsw_sqlite_version, get_backend, gil_enabled, has_wal_reset_bug
from ._busy import BusyPolicy, FairRetry
from ._errors import ConfigurationError, PoolClosed, SqlitefairError, WalResetBugWarning
from ._fairlock import FairLock
from ._files import FileWatch
from ._interrupts import protected
from ._opening import OnConnect, Opener, check_timeout, database_target, merge_pragmas, uri_file_path
from ._procqueue import open_queue, warn_unavailable
from ._readers import Read, ReaderSet
from ._slots import FairSlots
from ._stats import PoolStats, StatsRecorder
from ._waitqueue import CancelScope, LockTimeout
from ._wal import WalKeeper
from ._writer import Transaction, WriterGate, enclosing_transaction

__all__ = ("Pool", "connect")

log = logging.getLogger("sqlitefair")


class _Unset:
    """A default that stands for something decided later; its repr says what (``help()``, the docs)."""

    __slots__ = ("_text",)

    def __init__(self, text: str) -> None:
        self._text = text

    def __repr__(self) -> str:
        return self._text


#: The default of every ``timeout=`` that means "the pool's own timeout".
_UNSET: Any = _Unset("<the pool's timeout>")
T = TypeVar("T")


class _ProcessState:
    """Everything of a pool that belongs to one process: its writer, its readers, its open connections."""

    def __init__(self, pool: Pool, readers: int) -> None:
        self.pid = os.getpid()
        self.mutex = threading.Lock()  # guards connections, shut_down
        self.writer = WriterGate(pool, self)
        self.writer_lock = self.writer.lock  # (one attribute load less on every commit)
        self.readers = ReaderSet(pool, self, readers)
        self.connections: list[Connection] = []  # every open connection, for close() and fork
        self.shut_down = False  # close() ran (or gave up): returned connections get closed
        #: Set in a fork child whose parent forked with something checked out: every checkout raises it.
        self.fork_error: str | None = None
        #: Why every checkout of this process is refused (the pool closed, or fork_error), as the
        #: function that makes the error; None while they are welcome (one check per checkout).
        self.refusal: Callable[[], Exception] | None = None
        #: This state belongs to a fork child of the process that made the pool: its parent may
        #: write too (the WAL-reset warning is due at its first write).
        self.in_fork_child = self.pid != getattr(pool, "_created_pid", self.pid)


# Pools alive in this process, so that a fork child can reset them.
_live_pools: weakref.WeakSet[Pool] = weakref.WeakSet()
_registry_lock = threading.Lock()
# Connections a fork child inherited in use (a transaction or a read in progress): never closed,
# never used, never even garbage-collected (see _keep_forever), since closing one would roll its
# transaction back through the shared-memory index the parent is using.
_inherited_connections: list[Connection] = []
def _before_fork() -> None:
    _registry_lock.acquire()


def _after_fork_in_parent() -> None:
    _registry_lock.release()


def _after_fork_in_child() -> None:
    global _registry_lock
    _registry_lock = threading.Lock()
    for pool in list(_live_pools):
        pool._reset_after_fork()


def _warn_unclosed(name: str, pid: int) -> None:
    """A pool was garbage-collected without ``close()`` (in the process that made it: a fork child's copy is not its to close)."""
    if os.getpid() == pid:
        warnings.warn(
            f"unclosed sqlitefair pool for {name!r}: call close() (await close() for sqlitefair.aio) or use it "
            "in a with block; its connections are closed only as they are garbage-collected",
            ResourceWarning,
        )


def _keep_forever(conn: Connection) -> None:
    """Keep ``conn`` from ever being closed in this process, even at interpreter exit."""
    _inherited_connections.append(conn)
    try:
        import ctypes

        ctypes.pythonapi.Py_IncRef(ctypes.py_object(conn))  # never reaches zero: never deallocated
    except Exception:  # pragma: no cover - no ctypes: the module-level list is the best we have
        pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )


def _leave_checkpoints_to_another_program(wal_limit: int | None, pragmas: dict[str, object]) -> None:
    """``checkpoints="external"``: no connection of the pool ever checkpoints (SQLite's automatic
    checkpoint off, no ``wal_limit`` checkpoint), so another program (Litestream) does them all.

    Beside Litestream a checkpoint of ours could never complete anyway (Litestream keeps a read
    transaction open), the automatic one would only copy pages in our commits' time, and an
    SQLite with the WAL-reset bug would never run the checkpoint that the bug lives in.
    Turns the automatic checkpoint off in ``pragmas``; a ``wal_limit`` or pragma that asks for
    checkpoints is refused rather than ignored."""
    if wal_limit is not None and wal_limit != _defaults.WAL_LIMIT:
        raise ConfigurationError(
            f"wal_limit={wal_limit!r} has no effect with checkpoints='external': the pool never checkpoints. "
            "Bound the WAL in the program that checkpoints (Litestream: min-checkpoint-page-count, "
            "truncate-page-n), or leave out checkpoints='external'."
        )
    if pragmas.get("wal_autocheckpoint", 0) != 0:
        raise ConfigurationError(
            f"pragma wal_autocheckpoint={pragmas['wal_autocheckpoint']!r} contradicts checkpoints='external', "
            "which turns SQLite's automatic checkpoint off (wal_autocheckpoint=0); leave one of them out."
        )
    pragmas["wal_autocheckpoint"] = 0


class Pool:
    """A fair connection pool for one SQLite database file; make one with :func:`connect`."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        readers: int = _defaults.READERS,
        timeout: float | None = _defaults.TIMEOUT,
        pragmas: Mapping[str, object] | None = None,
        busy_policy: BusyPolicy | None = None,
        backend: str | Backend = "sqlite3",
        on_connect: OnConnect | None = None,
        wal_limit: int | None = _defaults.WAL_LIMIT,
        group_commit: bool = False,
        handoff: str = _defaults.HANDOFF,
        process_queue: bool = True,
        checkpoints: str = "auto",
    ) -> None:
        self._target, self._uri, self._name = database_target(path)
        #: The database file's absolute path (also for a ``file:`` URI).
        self._file = uri_file_path(self._target) if self._uri else self._target
        if not isinstance(process_queue, bool):
            raise ConfigurationError(f"process_queue must be True or False, got {process_queue!r}")
        self._process_queue = False  # decided once the file exists (below)
        #: Why the cross-process queue is off ("" while it is on).
        self._process_queue_off = "" if process_queue else "process_queue=False"

        if handoff not in ("strict", "bounded"):
            raise ConfigurationError(f"handoff must be 'strict' or 'bounded', got {handoff!r}")
        self._barging = None if handoff == "strict" else _defaults.BARGING_WINDOW
        if not isinstance(group_commit, bool):
            raise ConfigurationError(f"group_commit must be True or False, got {group_commit!r}")
        self._group_commit = group_commit
        if wal_limit is not None and (isinstance(wal_limit, bool) or not isinstance(wal_limit, int) or wal_limit < 0):
            raise ConfigurationError(f"wal_limit must be an int >= 0 (bytes) or None, got {wal_limit!r}")
        if checkpoints not in ("auto", "external"):
            raise ConfigurationError(f"checkpoints must be 'auto' or 'external', got {checkpoints!r}")
        if isinstance(readers, bool) or not isinstance(readers, int) or readers < 1:
            raise ConfigurationError(f"readers must be an int >= 1, got {readers!r}")
        self._timeout = check_timeout(timeout)
        pragmas = merge_pragmas(pragmas)
        if checkpoints == "external":
            _leave_checkpoints_to_another_program(wal_limit, pragmas)
            wal_limit = None  # (nor does the pool's own checkpoint run)
        if busy_policy is None:
            busy_policy = FairRetry()
        if not isinstance(busy_policy, BusyPolicy):
            raise ConfigurationError(f"busy_policy must be a sqlitefair.BusyPolicy, got {busy_policy!r}")
        self._policy = busy_policy
        self._backend = get_backend(backend)
        self._sqlite_version = self._backend.sqlite_version()
        self._warn_wal_reset = has_wal_reset_bug(self._sqlite_version)
        if on_connect is not None and not callable(on_connect):
            raise ConfigurationError(f"on_connect must be callable, got {on_connect!r}")
        self._opener = Opener(
            target=self._target,
            uri=self._uri,
            name=self._name,
            backend=self._backend,
            policy=busy_policy,
            timeout=self._timeout,
            pragmas=pragmas,
            on_connect=on_connect,
        )
        self._readers = readers
        self._stats = StatsRecorder()
        self._wal = WalKeeper(None if self._uri else self._target + "-wal", wal_limit, self._name, self._backend, self._stats)
        self._files = FileWatch(None, self._name)  # not watched until the file exists (below)
        self._closed = False
        self._close_lock = threading.Lock()
        self._state = _ProcessState(self, readers)
        self._created_pid = self._state.pid
        self._check_one_sqlite_library()
        _interrupts.install()  # a SIGINT never cuts the pool's bookkeeping in half (main thread only)
        # Open and set up the writer once, so that a bad path, a non-database
        # file or an unknown pragma fails here, then close it again: a pool
        # created before a fork hands no open connection to the children.
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        conn = self._opener.open("writer", deadline, check_pragma_names=True)
        self._backend.close(conn)
        if process_queue:
            self._start_process_queue()
        self._files = FileWatch(None if self._uri else self._target, self._name)
        with _registry_lock:
            _live_pools.add(self)
        # Like an unclosed sqlite3.Connection: a ResourceWarning if the pool is collected open.
        self._unclosed = weakref.finalize(self, _warn_unclosed, self._name, self._created_pid)
        self._unclosed.atexit = False  # interpreter exit is not a leak

    # -- public API ---------------------------------------------------------

    @property
    def path(self) -> str:
        """The database file's absolute path (or the URI as given), as messages name it."""
        return self._name

    @property
    def readers(self) -> int:
        """How many read-only connections the pool has (``readers=`` of :func:`connect`)."""
        return self._readers

    @property
    def timeout(self) -> float | None:
        """Seconds a checkout may wait in total by default; ``None``: no limit."""
        return self._timeout

    @property
    def backend(self) -> Backend:
        """The binding the connections use (:class:`Backend`; its ``name`` is ``"sqlite3"`` or ``"apsw"``)."""
        return self._backend

    @property
    def busy_policy(self) -> BusyPolicy:
        """How the writer waits for other processes' locks (:class:`BusyPolicy`)."""
        return self._policy

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def transaction(self, *, timeout: float | None = _UNSET, cancel: CancelScope | None = None) -> Transaction:
        """A write transaction: ``with pool.transaction() as conn: ...``.

        Queues FIFO for the writer, then ``BEGIN IMMEDIATE``; commits on
        success, rolls back on exception.  Nested in an open transaction of
        the same context (thread, asyncio task), it is a ``SAVEPOINT``.
        Raises :class:`PoolTimeout` after ``timeout`` seconds (default: the
        pool's; ``None`` or ``float("inf")``: no limit) of waiting in total.
        ``cancel.cancel()`` from another thread takes a queued caller out of
        the queue (:class:`WaitCancelled`).

        Inside the block, ending the transaction (``commit()``, ``COMMIT``,
        ``with conn:``, ...) is refused with :class:`TransactionControlError`.
        """
        return Transaction(self, self._timeout if timeout is _UNSET else check_timeout(timeout), cancel)

    def read(self, *, timeout: float | None = _UNSET, cancel: CancelScope | None = None) -> Read:
        """A read-only connection: ``with pool.read() as conn: ...``.

        Readers are checked out in FIFO order and run in parallel with each
        other and with the writer.  Inside ``transaction()`` of the same
        context, this returns the transaction's connection.
        """
        return Read(self, self._timeout if timeout is _UNSET else check_timeout(timeout), cancel)

    def write(self, fn: Callable[..., T], /, *args: Any, timeout: float | None = _UNSET, **kwargs: Any) -> T:
        """Call ``fn(conn, *args, **kwargs)`` in a write transaction and return its result.

        Calls are served in FIFO order of arrival, together with
        :meth:`transaction` blocks.  Unlike a ``with`` block, a call can be
        run by another thread: on free-threaded builds (GIL off), the thread
        that holds the writer runs the ``write()`` calls queued behind it too
        (*flat combining*), so the writer does not sit idle while each next
        caller wakes up.  With ``connect(..., group_commit=True)`` (any build)
        consecutive calls also share one ``BEGIN IMMEDIATE ... COMMIT``, each
        in a savepoint of its own.  With the GIL on and no group commit, each
        call runs in its caller's thread as a :meth:`transaction` block would
        (combining measured slower there: the callers it wakes take the GIL
        from it).

        * ``fn`` may run on another thread; it must not keep ``conn`` (or a
          cursor) past its return, and may not control the transaction
          (``commit()``, ``COMMIT``, ... raise :class:`TransactionControlError`,
          as in a block).  Nested ``transaction()``/``read()``/``write()`` inside
          ``fn`` work as in a block.
        * If ``fn`` raises, its work is rolled back (only its own, in a group)
          and the exception is raised here.  A failed group ``COMMIT`` raises
          :class:`GroupCommitError` in every call of the group.
        * It returns only after the ``COMMIT`` that contains the call.
        * ``timeout`` bounds the wait before the call starts (default: the
          pool's).  Run in its caller's thread, that is the whole wait, as for
          a block (the queue, other processes, ``BEGIN``); a combined call is
          bounded until it starts (taken up with others, it fails with
          :class:`PoolTimeout` if its time runs out before its turn); once
          started, it runs to its end (the combiner waits for the database
          with the pool's timeout).  A ``KeyboardInterrupt`` while the call
          waits takes it out of the queue; once another thread has taken it
          up, the interrupt is raised here at once and the call still
          completes (or times out, as above).
        * Inside a transaction of this context, ``fn`` runs here, in a savepoint.
        """
        timeout = self._timeout if timeout is _UNSET else check_timeout(timeout)
        return _combining.write(self, fn, args, kwargs, timeout)  # type: ignore[no-any-return]

    def queued_or_holding(self, kind: str, thread_ident: int) -> bool:
        """Whether thread ``thread_ident`` is queued for, or holds, the writer (``kind="transaction"``)
        or a reader (``kind="read"``): lets a caller that queues on other threads (the asyncio
        facade) keep their order of arrival."""
        state = self._state
        semaphore = state.writer.lock if kind == "transaction" else state.readers.slots
        return semaphore.queued_or_holding(thread_ident)

    def stats(self) -> PoolStats:
        """A snapshot of counts and wait times (see :class:`PoolStats`)."""
        state = self._state
        writer = state.writer.lock.statistics()
        slots = state.readers.slots.statistics()
        with state.mutex:
            readers_open = len(state.connections) - (state.writer.conn is not None)
        return PoolStats(
            path=self._name,
            backend=self._backend.name,
            sqlite_version=self._sqlite_version,
            wal_reset_bug=has_wal_reset_bug(self._sqlite_version),
            gil_enabled=gil_enabled(),
            busy_policy=self._policy.name,
            process_queue="on" if self._process_queue else f"off: {self._process_queue_off}",
            readers=self._readers,
            wal_bytes=self._wal.wal_bytes(),
            reads=state.readers.slots.wait_stats(),
            **self._stats.snapshot(),  # type: ignore[arg-type]
            writer_in_use=writer.held > 0,
            writer_queue=writer.waiting,
            reader_queue=slots.waiting,
            readers_in_use=slots.held,
            readers_open=readers_open,
        )

    @protected
    def close(self, *, timeout: float | None = _UNSET) -> None:
        """Wait for checked-out connections (up to ``timeout``), then close them all.

        Threads already queued when ``close()`` starts are served first; new
        checkouts raise :class:`PoolClosed`.  Calling it again does nothing.
        If connections are still out at the deadline, raises
        :class:`PoolTimeout`; each is closed as its holder returns it.
        Called inside a transaction or read of the same context, it raises at
        once: it would wait for itself.
        """
        limit = self._timeout if timeout is _UNSET else check_timeout(timeout)
        state = self._state
        if enclosing_transaction(state) is not None:
            raise SqlitefairError("close() called inside pool.transaction() on the same thread would wait for itself")
        if state.readers.slots.held_by_current_thread():
            raise SqlitefairError("close() called inside pool.read() on the same thread would wait for itself")
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            self._state.refusal = self._closed_error
        self._unclosed.detach()
        with _registry_lock:
            _live_pools.discard(self)
        start = time.monotonic()
        writer, slots = state.writer, state.readers.slots
        permits: list[tuple[FairLock | FairSlots, Any]] = []

        def remaining() -> float | None:
            return None if limit is None else limit - (time.monotonic() - start)

        try:
            # Threads waiting at the writer's baton (free-threaded builds) are waiting already:
            # let them reach the queue (or the writer) first, so that they are served before us.
            writer.lock._wait_out_baton(None if limit is None else start + limit)
            permits.append((writer.lock, writer.lock.acquire(remaining(), queue=True)))
            for _ in range(self._readers):
                permits.append((slots, slots.acquire(remaining(), record=False)))
        except LockTimeout as exc:
            mine = [semaphore for semaphore, _ in permits]
            writers_out = writer.lock.statistics().held - mine.count(writer.lock)
            readers_stats = slots.statistics()
            readers_out = readers_stats.held - mine.count(slots)
            raise self._backend.timeout_error(
                f"close() of {self._name!r} timed out after {exc.waited:.2f} s: {writers_out} writer and "
                f"{readers_out} reader connection(s) are still checked out. Each is closed as it is "
                "returned; end those transactions and reads first, or pass a longer timeout to close().",
                waiting_for="close",
                waited=exc.waited,
                timeout=limit,
                queued=readers_stats.waiting,
            ) from None
        finally:
            with state.mutex:
                state.shut_down = True
            for semaphore, slot in permits:
                if semaphore is slots and slot.item is not None:
                    conn, slot.item = slot.item, None
                    self._discard(state, conn)
            state.readers.close_idle()  # those in slots that are free but close() did not get
            if permits and permits[0][0] is writer.lock:
                if writer.conn is not None:
                    writer.drop(writer.conn)
                if writer.procq is not None:
                    writer.procq.close()
            for semaphore, permit in reversed(permits):
                semaphore.release(permit)
            self._files.close()

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<sqlitefair.Pool {self._name!r} readers={self._readers} backend={self._backend.name} {state}>"

    # -- connections --------------------------------------------------------

    def _open_registered(self, role: str, deadline: float | None) -> Connection:
        """Open a connection for ``role`` (after checking the path still names our file) and register it."""
        self._files.check_path()
        conn = self._opener.open(role, deadline)
        state = self._state
        with state.mutex:
            state.connections.append(conn)
        return conn

    def _discard(self, state: _ProcessState, conn: Connection) -> None:
        """Close ``conn`` (quietly: it is being thrown away) and forget it."""
        with state.mutex:
            if conn in state.connections:
                state.connections.remove(conn)
        try:
            self._backend.close(conn)
        except Exception:  # pragma: no cover - closing a broken connection
            log.debug("error closing a discarded connection to %s", self._name, exc_info=True)

    def _in_use_at_fork(self, old: _ProcessState) -> str:
        """In a fork child: what the parent had checked out at the instant of the fork, read from
        the copied memory (exact: a look before the fork would race with other threads)."""
        if old.writer.lock.locked():
            return "a write transaction"
        if any(slot.lock.locked() for slot in old.readers.slots._slots):
            return "a read"
        for conn in old.connections:
            try:
                if conn._sf_holder is not None or conn.in_transaction:
                    return "a transaction or read"
            except Exception:  # closed: nothing to protect
                continue
        return ""

    def _reset_after_fork(self) -> None:
        """In a fork child: start from a fresh state, and decide what to do with the parent's connections.

        SQLite keeps its POSIX-lock and shared-memory lock bookkeeping per process,
        keyed by the file.  Connections copied into the child count there as the
        parent's holdings, so the child's own connections take no real locks and,
        if one was inside a transaction, can never write.  So:

        * all idle: close them in the child (a close cannot checkpoint or delete
          the WAL while the parent holds its locks), and the child works normally;
        * one was in use (``busy``): closing it would roll its transaction back
          through the shared-memory index the parent is using (measured: a
          corrupt database), so keep it forever, and make every checkout in
          this child raise a clear error instead of hanging or losing writes.
        """
        old = self._state
        busy = self._in_use_at_fork(old)
        inherited = list(old.connections)
        self._state = _ProcessState(self, self._readers)
        if self._closed:  # closed before the fork: closed here too
            self._state.refusal = self._closed_error
        self._close_lock = threading.Lock()
        self._stats = StatsRecorder()
        self._wal._stats = self._stats
        self._files.after_fork()
        if not busy:
            for conn in inherited:
                try:
                    self._backend.close(conn)
                except Exception:  # pragma: no cover - the child keeps going with a fresh state
                    log.debug("closing an inherited connection to %s failed", self._name, exc_info=True)
            return
        for conn in inherited:
            self._backend.set_holder(conn, None)  # the forking thread's ident lives on in the child
            _keep_forever(conn)
        self._state.refusal = self._fork_error
        self._state.fork_error = (
            f"this process was forked while a thread of its parent had {busy} open on {self._name!r}. "
            "SQLite keeps its lock bookkeeping per process, so the connection copied into this child still "
            "counts as holding its locks here: this child can never write to the file through this SQLite "
            "library, and its reads would take no real locks. Closing the copy would roll the parent's "
            "transaction back through shared memory, so sqlitefair leaves it alone and refuses to work in this "
            "child. Fork when no transaction or read of the pool is open (before starting threads that use "
            "it), or start workers with multiprocessing's 'spawn' or 'forkserver' method."
        )

    def _fork_error(self) -> SqlitefairError:
        return SqlitefairError(self._state.fork_error)

    def _closed_error(self) -> PoolClosed:
        return PoolClosed(f"the pool for {self._name!r} is closed; create a new one with sqlitefair.connect()")

    def _start_process_queue(self) -> None:
        """Join the writer queue across processes, or say (once, here) why it cannot work."""
        queue, reason = open_queue(self._file, self._name)
        if queue is not None:
            self._process_queue = True
            self._state.writer.procq = queue
            return
        assert reason is not None
        self._process_queue_off = reason
        warn_unavailable(self._name, reason)

    def _saw_other_writer(self) -> None:
        """Another connection writes this file too (with the cross-process queue on: one outside
        it; off: another process, or a fork): warn once if the linked SQLite can then lose
        committed writes (the WAL-reset bug).  sqlitefair's own connections write and checkpoint
        only while they hold the queue's turn, so among themselves they cannot race."""
        if not self._warn_wal_reset:
            return
        self._warn_wal_reset = False
        fixed = apsw_sqlite_version()
        if self._backend.name != "apsw" and fixed and not has_wal_reset_bug(fixed):
            advice = f"use backend='apsw' (it bundles SQLite {fixed}, which is fixed)"
        else:
            advice = "use an SQLite of 3.51.3 or later (3.50.7+ and 3.44.6+ have the fix too), e.g. backend='apsw' with a current apsw"
        who = (
            "a connection outside sqlitefair's writer queue (another program, or a pool with "
            "process_queue=False)" if self._process_queue else "another connection"
        )
        warnings.warn(
            f"SQLite {self._sqlite_version} ({self._backend.name} backend) has the WAL-reset bug: when several "
            f"connections write one WAL database, a checkpoint racing a commit can lose committed transactions, "
            f"and {who} is writing {self._name!r}. To be safe, {advice}. "
            "See https://sqlite.org/wal.html#walresetbug",
            WalResetBugWarning,
            stacklevel=3,
        )

    def _check_one_sqlite_library(self) -> None:
        """Refuse a second SQLite library on a file this process already uses through another backend.

        The stdlib's SQLite and apsw's bundled copy do not see each other's
        POSIX locks, and closing a file through one drops the other's locks:
        the two can corrupt the database.
        https://www.sqlite.org/howtocorrupt.html#multiple_copies_of_sqlite_linked_into_the_same_application
        """
        if self._uri:
            return
        here = os.path.realpath(self._target)
        with _registry_lock:
            others = [p for p in _live_pools if p._backend.name != self._backend.name and not p._uri]
        for other in others:
            if os.path.realpath(other._target) == here:
                raise ConfigurationError(
                    f"{self._name!r} is already open in this process through the {other._backend.name!r} "
                    f"backend; opening it through {self._backend.name!r} too would mix two copies of SQLite, "
                    "which do not see each other's locks and can corrupt the file. Use one backend per file "
                    "per process."
                )



def connect(
    path: str | os.PathLike[str],
    *,
    readers: int = _defaults.READERS,
    timeout: float | None = _defaults.TIMEOUT,
    pragmas: Mapping[str, object] | None = None,
    busy_policy: BusyPolicy | None = None,
    backend: str | Backend = "sqlite3",
    on_connect: OnConnect | None = None,
    wal_limit: int | None = _defaults.WAL_LIMIT,
    group_commit: bool = False,
    handoff: str = _defaults.HANDOFF,
    process_queue: bool = True,
    checkpoints: str = "auto",
) -> Pool:
    """Open a fair pool for the SQLite database at ``path`` (created if missing).

    * ``readers``: read-only connections (``PRAGMA query_only``), opened lazily.
    * ``timeout``: seconds a checkout may wait in total (queue + another
      process's lock); ``None`` waits forever.  Exceeding it raises
      :class:`PoolTimeout`, which is also a ``sqlite3.OperationalError``.
    * ``pragmas``: overrides of :data:`sqlitefair.DEFAULT_PRAGMAS`; ``None`` drops one.
    * ``busy_policy``: how to wait for other processes (default :class:`FairRetry`).
    * ``backend``: ``"sqlite3"`` (the standard library's module, the default) or ``"apsw"``
      (needs apsw; bundles a current SQLite; see the backends guide for how they differ).
    * ``on_connect(conn, role)``: called for every new connection, e.g. to
      register functions or a trace callback.
    * ``wal_limit``: bytes of WAL after which the writer pauses this pool's
      readers for a moment and checkpoints (``None``: never; see the guide).
    * ``group_commit``: :meth:`Pool.write` calls queued one after the other
      share one transaction, each in a savepoint (see :meth:`Pool.write`).
    * ``handoff``: ``"strict"`` hands the writer to the oldest waiting thread on
      every release; ``"bounded"`` lets a running thread take a freed writer
      first unless the oldest waiter has waited 1 ms (then it is handed over):
      fewer thread wake-ups, waiters still FIFO among themselves.
    * ``process_queue``: writers of every sqlitefair pool on this file, in every
      process, are served in order of arrival (a queue of kernel record locks on a
      side file, ``<path>-sqlitefair-queue``; Linux).  ``False`` leaves the order
      between processes to the busy policy.  Where it cannot work (not Linux, a
      network file system, a side file that cannot be written) it is off with a
      :class:`ProcessQueueWarning`.
    * ``checkpoints``: ``"auto"``: SQLite's automatic checkpoint after commits, and
      ``wal_limit``'s; ``"external"``: no connection of the pool ever checkpoints
      (``wal_autocheckpoint=0``, no ``wal_limit``), because another program does, such as
      Litestream, whose open read transaction would keep ours from completing anyway.

    The file is opened once here so that mistakes fail early, then closed:
    connections are opened lazily, so a pool made before ``os.fork()`` hands
    no open connection to the children.
    """
    return Pool(
        path,
        readers=readers,
        timeout=timeout,
        pragmas=pragmas,
        busy_policy=busy_policy,
        backend=backend,
        on_connect=on_connect,
        wal_limit=wal_limit,
        group_commit=group_commit,
        handoff=handoff,
        process_queue=process_queue,
        checkpoints=checkpoints,
    )
