"""The pool: one FIFO-queued writer connection and several read-only readers.

Life of a write (``with pool.transaction() as conn``):

1. queue for the writer in this process (a :class:`FairLock`, strict FIFO);
2. ``BEGIN IMMEDIATE``, retried under the busy policy while another
   connection, usually another process, holds SQLite's write lock;
3. the caller's statements, then ``COMMIT`` (or ``ROLLBACK`` on exception);
4. hand the writer to the next thread in the queue.

One ``timeout`` bounds steps 1 and 2 together.  A nested ``transaction()``
on the thread that holds the writer becomes a ``SAVEPOINT``, and ``read()``
on that thread returns the writer connection (it sees its own writes and
cannot deadlock on the pool).

Everything mutable that belongs to one process lives in :class:`_ProcessState`;
after ``os.fork()`` the child gets a fresh one and never touches (or closes)
the parent's connections.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import threading
import time
import warnings
import weakref
from threading import get_ident
from time import monotonic
from types import TracebackType
from typing import Any, Callable, Mapping

from . import _defaults
from ._backends import Backend, Connection, apsw_sqlite_version, get_backend, gil_enabled, has_wal_reset_bug
from ._busy import BusyPolicy, BusyTimeout, FairRetry, retry_while_busy
from ._errors import ConfigurationError, OpenError, PoolClosed, PoolTimeout, SqlitefairError, WalResetBugWarning
from ._fairlock import CancelScope, FairLock, FairSemaphore, LockStatistics, LockTimeout, Permit
from ._slots import FairSlots, Slot
from ._stats import PoolStats, StatsRecorder

__all__ = ("Pool", "connect")

log = logging.getLogger("sqlitefair")

_UNSET: Any = object()
_PRAGMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PRAGMA_WORD = re.compile(r"^[A-Za-z0-9_\-]+$")

#: ``on_connect(conn, role)`` runs after sqlitefair set a new connection up; role is "writer" or "reader".
OnConnect = Callable[[Connection, str], None]


class _ProcessState:
    """Everything of a pool that belongs to one process: locks, connections, per-thread nesting."""

    def __init__(self, readers: int) -> None:
        self.pid = os.getpid()
        self.mutex = threading.Lock()  # guards connections, shut_down
        self.writer_lock = FairLock()
        # Each reader slot holds one reader connection (None until first used).
        self.reader_slots = FairSlots(readers)
        self.writer_conn: Connection | None = None  # touched only by the writer permit's holder
        self.connections: list[Connection] = []  # every open connection, for close() and fork
        self.shut_down = False  # close() ran (or gave up): returned connections get closed
        self.local = threading.local()  # .depth and .conn of the thread holding the writer


# Pools alive in this process, so that a fork child can reset them.
_live_pools: weakref.WeakSet[Pool] = weakref.WeakSet()
_registry_lock = threading.Lock()
# A fork child keeps the parent's connections referenced (never closed, never used):
# closing them could checkpoint or delete the parent's WAL behind its back.
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


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )


def _check_timeout(value: object, name: str = "timeout") -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{name} must be a number of seconds or None, got {value!r}")
    if not value >= 0:  # also rejects NaN
        raise ConfigurationError(f"{name} must be >= 0 seconds, got {value!r}")
    return float(value)


def _pragma_sql(name: str, value: object) -> str:
    """``PRAGMA name = value`` for a validated name and value."""
    if isinstance(value, bool):
        text = "ON" if value else "OFF"
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, str) and _PRAGMA_WORD.match(value):
        text = value
    elif isinstance(value, str):
        text = "'" + value.replace("'", "''") + "'"
    else:
        raise ConfigurationError(f"pragma {name}: value must be a bool, int or str, got {value!r}")
    return f"PRAGMA {name} = {text}"


def _merge_pragmas(overrides: Mapping[str, object] | None) -> dict[str, object]:
    """The default pragmas with ``overrides`` applied (``None`` removes one), validated."""
    if overrides is not None and not isinstance(overrides, Mapping):
        raise ConfigurationError(f"pragmas must be a mapping of name to value, got {overrides!r}")
    merged = dict(_defaults.PRAGMAS)
    for name, value in (overrides or {}).items():
        if not isinstance(name, str) or not _PRAGMA_NAME.match(name):
            raise ConfigurationError(f"invalid pragma name {name!r}")
        name = name.lower()
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    for name, value in merged.items():
        _pragma_sql(name, value)  # type check
        if name in ("mmap_size", "cache_spill", "wal_autocheckpoint") and isinstance(value, int) and value < 0:
            raise ConfigurationError(f"pragma {name} must be >= 0, got {value}")
        if name == "journal_size_limit" and isinstance(value, int) and value < -1:
            raise ConfigurationError(f"pragma journal_size_limit must be >= -1 (no limit), got {value}")
        if name == "query_only":
            raise ConfigurationError("pragma query_only is set by sqlitefair itself (on for readers, off for the writer)")
    if str(merged.get("journal_mode", "")).lower() == "memory":
        raise ConfigurationError("journal_mode=memory is not crash-safe; sqlitefair refuses it (use wal)")
    return merged


def _database_target(path: object) -> tuple[str, bool, str]:
    """Validate ``path``; return (what to pass to SQLite, whether it is a URI, a name for messages)."""
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise ConfigurationError(f"path must be a str or os.PathLike, got {path!r}")
    text = os.fspath(path)
    if not isinstance(text, str):
        raise ConfigurationError(f"path must be a text path, got {path!r}")
    memory = text in ("", ":memory:") or (
        text.startswith("file:") and ("mode=memory" in text or text[5:].split("?")[0] in ("", ":memory:"))
    )
    if memory:
        raise ConfigurationError(
            f"{text!r} is an in-memory or temporary database: every pooled connection would see a "
            "different, empty database. Use a file path (e.g. in tempfile.mkdtemp()), or plain "
            "sqlite3.connect(':memory:') where one connection is enough."
        )
    if text.startswith("file:"):
        return text, True, text
    return text, False, os.path.abspath(text)


def _file_identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of ``path``, or None if it does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


def _explain_open_error(exc: BaseException, name: str, role: str) -> str:
    """A message saying why ``name`` could not be opened, and what to do."""
    text = str(exc)
    if "not a database" in text:
        return (
            f"{name!r} is not an SQLite database (or it is encrypted or its header is corrupt): {text}. "
            "sqlitefair did not write to it."
        )
    if "unable to open" in text or "readonly" in text or "read-only" in text:
        folder = os.path.dirname(name) or "."
        if not os.path.isdir(folder):
            return f"cannot open {name!r}: the folder {folder!r} does not exist ({text})."
        hint = ""
        if not os.access(folder, os.W_OK):
            hint = f" The folder {folder!r} is not writable, and in WAL mode SQLite must create -wal and -shm files beside the database."
        elif os.path.exists(name) and not os.access(name, os.W_OK):
            hint = " The file is not writable."
        return f"cannot open {name!r} for the {role} connection: {text}.{hint}"
    return f"could not set up the {role} connection to {name!r}: {text}"


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
    ) -> None:
        self._target, self._uri, self._name = _database_target(path)
        if wal_limit is not None and (isinstance(wal_limit, bool) or not isinstance(wal_limit, int) or wal_limit < 0):
            raise ConfigurationError(f"wal_limit must be an int >= 0 (bytes) or None, got {wal_limit!r}")
        self._wal_limit = wal_limit
        # When the writer next looks at the WAL's size (never, without a limit).
        self._wal_check_due = 0.0 if wal_limit is not None else float("inf")
        # Set once the first open succeeded; until then there is nothing to compare with.
        self._file_identity: tuple[int, int] | None = None
        if isinstance(readers, bool) or not isinstance(readers, int) or readers < 1:
            raise ConfigurationError(f"readers must be an int >= 1, got {readers!r}")
        self._timeout = _check_timeout(timeout)
        self._pragmas = _merge_pragmas(pragmas)
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
        self._on_connect = on_connect
        self._readers = readers
        self._stats = StatsRecorder()
        self._closed = False
        self._close_lock = threading.Lock()
        self._state = _ProcessState(readers)
        self._created_pid = self._state.pid
        self._check_one_sqlite_library()
        # Open and set up the writer once, so that a bad path, a non-database
        # file or an unknown pragma fails here, then close it again: a pool
        # created before a fork hands no open connection to the children.
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        conn = self._open("writer", deadline, check_pragma_names=True)
        self._discard(self._state, conn)
        self._file_identity = None if self._uri else _file_identity(self._target)
        self._identity_due = time.monotonic() + _defaults.FILE_CHECK_INTERVAL
        with _registry_lock:
            _live_pools.add(self)

    # -- public API ---------------------------------------------------------

    @property
    def path(self) -> str:
        return self._name

    @property
    def readers(self) -> int:
        return self._readers

    @property
    def timeout(self) -> float | None:
        return self._timeout

    @property
    def backend(self) -> Backend:
        return self._backend

    @property
    def busy_policy(self) -> BusyPolicy:
        return self._policy

    @property
    def closed(self) -> bool:
        return self._closed

    def transaction(self, *, timeout: float | None = _UNSET) -> _Transaction:
        """A write transaction: ``with pool.transaction() as conn: ...``.

        Queues FIFO for the writer, then ``BEGIN IMMEDIATE``; commits on
        success, rolls back on exception.  Nested on the same thread it is a
        ``SAVEPOINT``.  Raises :class:`PoolTimeout` after ``timeout`` seconds
        (default: the pool's) of waiting in total.
        """
        return _Transaction(self, self._timeout if timeout is _UNSET else _check_timeout(timeout))

    def read(self, *, timeout: float | None = _UNSET) -> _Read:
        """A read-only connection: ``with pool.read() as conn: ...``.

        Readers are checked out in FIFO order and run in parallel with each
        other and with the writer.  Inside ``transaction()`` on the same
        thread, this returns the writer connection.
        """
        return _Read(self, self._timeout if timeout is _UNSET else _check_timeout(timeout))

    def stats(self) -> PoolStats:
        """A snapshot of counts and wait times (see :class:`PoolStats`)."""
        state = self._state
        writer = state.writer_lock.statistics()
        slots = state.reader_slots.statistics()
        with state.mutex:
            readers_open = len(state.connections) - (state.writer_conn is not None)
        return PoolStats(
            path=self._name,
            backend=self._backend.name,
            sqlite_version=self._sqlite_version,
            wal_reset_bug=has_wal_reset_bug(self._sqlite_version),
            gil_enabled=gil_enabled(),
            busy_policy=self._policy.name,
            readers=self._readers,
            wal_bytes=self._wal_bytes(),
            reads=state.reader_slots.wait_stats(),
            **self._stats.snapshot(),  # type: ignore[arg-type]
            writer_in_use=writer.held > 0,
            writer_queue=writer.waiting,
            reader_queue=slots.waiting,
            readers_in_use=slots.held,
            readers_open=readers_open,
        )

    def close(self, *, timeout: float | None = _UNSET) -> None:
        """Wait for checked-out connections (up to ``timeout``), then close them all.

        Threads already queued when ``close()`` starts are served first; new
        checkouts raise :class:`PoolClosed`.  Calling it again does nothing.
        If connections are still out at the deadline, raises
        :class:`PoolTimeout`; they are closed when their holders return them.
        """
        limit = self._timeout if timeout is _UNSET else _check_timeout(timeout)
        state = self._state
        if getattr(state.local, "depth", 0):
            raise SqlitefairError("close() called inside pool.transaction() on the same thread would wait for itself")
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        with _registry_lock:
            _live_pools.discard(self)
        start = time.monotonic()
        permits: list[tuple[FairSemaphore | FairSlots, Any]] = []

        def remaining() -> float | None:
            return None if limit is None else limit - (time.monotonic() - start)

        try:
            permits.append((state.writer_lock, state.writer_lock.acquire(remaining())))
            for _ in range(self._readers):
                permits.append((state.reader_slots, state.reader_slots.acquire(remaining(), record=False)))
        except LockTimeout as exc:
            mine = [semaphore for semaphore, _ in permits]
            writers_out = state.writer_lock.statistics().held - mine.count(state.writer_lock)
            readers_stats = state.reader_slots.statistics()
            readers_out = readers_stats.held - mine.count(state.reader_slots)
            raise self._backend.timeout_error(
                f"close() of {self._name!r} timed out after {exc.waited:.2f} s: {writers_out} writer and "
                f"{readers_out} reader connection(s) are still checked out. They will be closed when "
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
                if semaphore is state.reader_slots and slot.item is not None:
                    conn, slot.item = slot.item, None
                    self._discard(state, conn)
            self._close_idle_readers(state)  # those in slots that are free but close() did not get
            if permits and permits[0][0] is state.writer_lock and state.writer_conn is not None:
                conn, state.writer_conn = state.writer_conn, None
                self._discard(state, conn)
            for semaphore, permit in reversed(permits):
                semaphore.release(permit)

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<sqlitefair.Pool {self._name!r} readers={self._readers} backend={self._backend.name} {state}>"

    # -- connections --------------------------------------------------------

    def _open(self, role: str, deadline: float | None, *, check_pragma_names: bool = False) -> Connection:
        """Open and set up one connection; errors say what is wrong with the file."""
        backend = self._backend
        if role == "writer":
            busy_timeout = self._policy.sqlite_busy_timeout(self._timeout)
        else:
            # Readers rarely see SQLITE_BUSY in WAL mode (only around recovery);
            # SQLite's own handler covers that.
            busy_timeout = 1e6 if self._timeout is None else self._timeout
        self._check_same_file(force=True)
        try:
            conn = backend.connect(
                self._target, uri=self._uri, busy_timeout=busy_timeout, label=f"the {role} connection of {self._name!r}"
            )
        except Exception as exc:
            raise OpenError(_explain_open_error(exc, self._name, role)) from exc
        try:
            # A read of page 1 first: a file that is not a database fails here, before any write.
            self._setup_query(conn, "PRAGMA schema_version", deadline)
            if check_pragma_names:
                self._check_pragma_names(conn)
            for name, value in self._pragmas.items():
                if role != "writer" and name in _defaults.DATABASE_PRAGMAS:
                    continue
                self._set_pragma(conn, name, value, deadline)
            self._setup_query(conn, f"PRAGMA query_only = {'ON' if role == 'reader' else 'OFF'}", deadline)
        except SqlitefairError:  # already says what happened (a timeout, an unknown pragma)
            backend.close(conn)
            raise
        except backend.error as exc:
            backend.close(conn)
            raise OpenError(_explain_open_error(exc, self._name, role)) from exc
        except BaseException:
            backend.close(conn)
            raise
        if self._on_connect is not None:
            backend.set_holder(conn, get_ident())  # the hook may run statements
            try:
                self._on_connect(conn, role)
            except BaseException:
                backend.close(conn)
                raise
            finally:
                backend.set_holder(conn, None)
        with self._state.mutex:
            self._state.connections.append(conn)
        return conn

    def _check_pragma_names(self, conn: Connection) -> None:
        try:
            known = {row[0] for row in self._backend.query_all(conn, "PRAGMA pragma_list")}
        except Exception:  # built without introspection pragmas: SQLite will ignore typos silently
            return
        for name in self._pragmas:
            if known and name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigurationError(f"unknown pragma {name!r}{hint}: SQLite would silently ignore it")

    def _setup_query(self, conn: Connection, sql: str, deadline: float | None) -> tuple[Any, ...] | None:
        """One set-up statement, waiting out other connections' locks like a write does
        (another process may be checkpointing, or switching the file to WAL)."""
        result: list[tuple[Any, ...] | None] = []
        start = time.monotonic()
        try:
            retry_while_busy(
                lambda: result.append(self._backend.query_one(conn, sql)), self._backend.is_busy, self._policy, deadline
            )
        except BusyTimeout as exc:
            raise self._busy_timeout("write lock", exc, start, deadline) from exc.__cause__
        return result[-1]

    def _set_pragma(self, conn: Connection, name: str, value: object, deadline: float | None) -> None:
        row = self._setup_query(conn, _pragma_sql(name, value), deadline)
        if name == "journal_mode":
            mode = str(row[0]).lower() if row else ""
            if mode != str(value).lower():
                raise OpenError(
                    f"{self._name!r} stayed in journal_mode={mode!r} instead of {value!r} "
                    "(is it on a file system without shared memory, or opened read-only?)"
                )

    def _close_idle_readers(self, state: _ProcessState) -> None:
        """After close(): close the connections in reader slots nobody holds."""
        for conn in state.reader_slots.take_free_items():
            self._discard(state, conn)

    def _discard(self, state: _ProcessState, conn: Connection) -> None:
        """Close ``conn`` (quietly: it is being thrown away) and forget it."""
        with state.mutex:
            if conn in state.connections:
                state.connections.remove(conn)
        try:
            self._backend.close(conn)
        except Exception:  # pragma: no cover - closing a broken connection
            log.debug("error closing a discarded connection to %s", self._name, exc_info=True)

    def _reset_after_fork(self) -> None:
        """In a fork child: start from a fresh state; keep the parent's connections unused."""
        old = self._state
        for conn in old.connections:  # the forking thread's ident lives on in the child: clear it
            self._backend.set_holder(conn, None)
        _inherited_connections.extend(old.connections)
        self._state = _ProcessState(self._readers)
        self._close_lock = threading.Lock()
        self._stats = StatsRecorder()

    def _wal_bytes(self) -> int:
        if self._uri:
            return 0
        try:
            return os.path.getsize(self._target + "-wal")
        except OSError:
            return 0

    def _maybe_checkpoint(self, state: _ProcessState, conn: Connection) -> None:
        """After a commit, with the writer held: keep the WAL below ``wal_limit``.

        SQLite's auto-checkpoint copies pages back but can only restart the WAL
        when no reader is using it; with readers always active it never can,
        and the WAL grows without bound.  So when the WAL is too large, wait
        (briefly, FIFO) until this pool's readers are all idle, hold them off,
        and checkpoint with TRUNCATE.  Readers of other processes can still
        keep it from completing; then it is tried again later.
        """
        now = time.monotonic()
        self._wal_check_due = now + _defaults.WAL_CHECK_INTERVAL
        assert self._wal_limit is not None  # due stays infinite without a limit
        if self._wal_bytes() <= self._wal_limit:
            return
        slots = state.reader_slots
        if slots.held_by_current_thread():  # would wait for ourselves
            self._stats.add("checkpoints_skipped")
            return
        permits: list[Slot] = []
        deadline = now + _defaults.CHECKPOINT_READER_WAIT
        try:
            for _ in range(slots.capacity):
                permits.append(slots.acquire(max(0.0, deadline - time.monotonic()), record=False))
        except LockTimeout:
            self._stats.add("checkpoints_skipped")
            log.debug("skipped a WAL checkpoint of %s: readers busy for %.2f s", self._name, _defaults.CHECKPOINT_READER_WAIT)
        else:
            try:
                row = self._backend.query_one(conn, "PRAGMA wal_checkpoint(TRUNCATE)")
            except self._backend.error:  # the commit stands; the next look tries again
                log.warning("WAL checkpoint of %s failed", self._name, exc_info=True)
                row = None
            self._stats.add("checkpoints" if row and not row[0] else "checkpoints_skipped")
        finally:
            for permit in permits:
                slots.release(permit)

    def _check_same_file(self, *, force: bool = False) -> None:
        """Fail if the database path no longer names the file this pool opened.

        In WAL mode SQLite keeps writing to a deleted or replaced database
        file, and new connections would open the new file: commits would be
        lost or split between two files.  Checked on every new connection and,
        at most every ``FILE_CHECK_INTERVAL`` seconds, before a write.
        """
        if self._file_identity is None:
            return  # URI targets, and the first open in __init__
        now = time.monotonic()
        if not force and now < self._identity_due:
            return
        self._identity_due = now + _defaults.FILE_CHECK_INTERVAL
        current = _file_identity(self._target)
        if current != self._file_identity:
            what = "deleted" if current is None else "replaced by another file"
            raise OpenError(
                f"{self._name!r} was {what} while this pool had it open; sqlitefair stopped using it so "
                "that no write goes to a file nobody will read. Restore the file or create a new pool "
                "with sqlitefair.connect() (writes committed in the last "
                f"{_defaults.FILE_CHECK_INTERVAL:g} s before the change may be in the old file)."
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

    def _saw_other_writer(self) -> None:
        """Another connection (another process, or a fork) writes this file too: warn once
        if the linked SQLite can then lose committed writes (the WAL-reset bug)."""
        if not self._warn_wal_reset:
            return
        self._warn_wal_reset = False
        fixed = apsw_sqlite_version()
        if self._backend.name != "apsw" and fixed and not has_wal_reset_bug(fixed):
            advice = f"use backend='apsw' (it bundles SQLite {fixed}, which is fixed)"
        else:
            advice = "use an SQLite of 3.51.3 or later (3.50.7+ and 3.44.6+ have the fix too), e.g. backend='apsw' with a current apsw"
        warnings.warn(
            f"SQLite {self._sqlite_version} ({self._backend.name} backend) has the WAL-reset bug: when several "
            f"connections write one WAL database, a checkpoint racing a commit can lose committed transactions, "
            f"and another connection is writing {self._name!r}. To be safe, {advice}. "
            "See https://sqlite.org/wal.html#walresetbug",
            WalResetBugWarning,
            stacklevel=3,
        )

    def _check_open(self) -> None:
        if self._closed:
            raise PoolClosed(f"the pool for {self._name!r} is closed; create a new one with sqlitefair.connect()")

    # -- waiting ------------------------------------------------------------

    def _acquire(
        self, semaphore: FairSemaphore | FairSlots, what: str, timeout: float | None, cancel: CancelScope | None = None
    ) -> Any:
        try:
            return semaphore.acquire(timeout, cancel=cancel)
        except LockTimeout as exc:
            self._stats.add("write_timeouts" if what == "writer" else "read_timeouts")
            raise self._queue_timeout(what, exc.waited, timeout, exc.statistics) from None

    def _queue_timeout(self, what: str, waited: float, timeout: float | None, stats: LockStatistics) -> PoolTimeout:
        now = time.monotonic()
        oldest = min(stats.holders, key=lambda p: p.since, default=None)
        if what == "writer":
            held = "it is free now" if oldest is None else (
                f"held by thread {oldest.thread_name!r} (ident {oldest.thread_ident}) for {now - oldest.since:.2f} s"
            )
            advice = (
                "Keep write transactions short, pass a longer timeout, or look for a transaction left open "
                "(pool.stats() shows the queue). If the holder is waiting for this thread (it started this "
                "thread inside its transaction and joins it), that is a deadlock that only this timeout "
                "ends: do the work in the holder's thread, or after its block."
            )
            subject = "the writer connection"
        else:
            held = f"all {stats.capacity} are checked out" + (
                "" if oldest is None else f", the longest by thread {oldest.thread_name!r} for {now - oldest.since:.2f} s"
            )
            advice = "Return reader connections sooner, or raise readers= or timeout=."
            subject = f"one of the {stats.capacity} reader connections"
        return self._backend.timeout_error(
            f"Timed out after {waited:.2f} s waiting for {subject} of {self._name!r} (timeout={timeout} s): "
            f"{held}; {stats.waiting} more thread(s) queued. {advice}",
            waiting_for=what,
            waited=waited,
            timeout=timeout,
            queued=stats.waiting,
            holder=None if oldest is None else oldest.thread_name,
            held_for=None if oldest is None else now - oldest.since,
        )

    def _busy_timeout(self, what: str, exc: BusyTimeout, start: float, deadline: float | None) -> PoolTimeout:
        """The error for a deadline that passed while another connection held SQLite's write lock."""
        waited = time.monotonic() - start
        timeout = None if deadline is None else deadline - start
        return self._backend.timeout_error(
            f"Timed out after {waited:.2f} s waiting for the database write lock of {self._name!r}: another "
            f"connection (most likely another process) held it through {exc.retries} retries over "
            f"{exc.busy_for:.2f} s (busy policy {self._policy.name}). Keep write transactions short in "
            "every process that uses this file, or pass a longer timeout.",
            waiting_for=what,
            waited=waited,
            timeout=timeout,
            busy_retries=exc.retries,
            queued=self._state.writer_lock.statistics().waiting,
        )


class _Checkout:
    """One use of a pooled connection: entered once, then exited."""

    __slots__ = ("_pool", "_timeout", "_state", "_permit", "_conn", "_cancel")

    def __init__(self, pool: Pool, timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout
        self._state: _ProcessState | None = None
        self._permit: Permit | Slot | None = None
        self._conn: Connection | None = None
        # Set by the asyncio facade: lets the event loop take a cancelled task's thread out of the queue.
        self._cancel: CancelScope | None = None

    def _entered_twice(self) -> SqlitefairError:
        kind = "transaction" if isinstance(self, _Transaction) else "read"
        return SqlitefairError(f"this {kind}() context was already entered; call pool.{kind}() again")


class _Transaction(_Checkout):
    """Context manager returned by :meth:`Pool.transaction`."""

    __slots__ = ("_savepoint",)

    def __init__(self, pool: Pool, timeout: float | None) -> None:
        super().__init__(pool, timeout)
        self._savepoint: str | None = None

    def __enter__(self) -> Connection:
        if self._state is not None:
            raise self._entered_twice()
        pool = self._pool
        state = self._state = pool._state
        local = state.local
        depth = getattr(local, "depth", 0)
        if depth:
            self._savepoint = f"sqlitefair_{depth}"
            pool._backend.execute(local.conn, f"SAVEPOINT {self._savepoint}")
            local.depth = depth + 1
            self._conn = local.conn
            return local.conn
        if pool._closed:
            pool._check_open()
        start = monotonic()
        deadline = None if self._timeout is None else start + self._timeout
        permit = pool._acquire(state.writer_lock, "writer", self._timeout, self._cancel)
        # From here on, only this thread touches the writer connection and the write statistics.
        try:
            if state.shut_down:
                pool._check_open()
            if start >= pool._identity_due:
                pool._check_same_file()
            conn = state.writer_conn
            if conn is None:
                conn = state.writer_conn = pool._open("writer", deadline)
            backend = pool._backend
            queued_until = monotonic()
            try:
                retries = backend.begin(conn, "BEGIN IMMEDIATE", pool._policy, deadline)
            except BusyTimeout as exc:
                pool._stats.add("write_timeouts")
                pool._stats.add("busy_retries", exc.retries)
                raise pool._busy_timeout("write lock", exc, start, deadline) from exc.__cause__
        except BaseException:
            state.writer_lock.release(permit)
            raise
        now = monotonic()
        if retries:
            pool._stats.write_served(now - start, retries, now - queued_until)
            pool._saw_other_writer()
        else:
            pool._stats.write_served(now - start, 0, 0.0)
            if state.pid != pool._created_pid:
                pool._saw_other_writer()
        backend.set_holder(conn, get_ident())
        self._permit = permit
        self._conn = conn
        local.depth = 1
        local.conn = conn
        return conn

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        pool, state, conn = self._pool, self._state, self._conn
        assert state is not None and conn is not None
        if self._savepoint is not None:
            state.local.depth -= 1
            self._end_savepoint(exc_type is None)
            return
        try:
            if exc_type is None:
                self._commit()
                if pool._wal_check_due <= monotonic():
                    pool._maybe_checkpoint(state, conn)
            else:
                self._rollback()
        finally:
            pool._backend.set_holder(conn, None)
            state.local.depth = 0
            state.local.conn = None
            if state.shut_down and state.writer_conn is conn:
                state.writer_conn = None
                pool._discard(state, conn)
            permit, self._permit = self._permit, None
            assert permit is not None
            state.writer_lock.release(permit)

    def _end_savepoint(self, success: bool) -> None:
        pool, conn, name = self._pool, self._conn, self._savepoint
        backend = pool._backend
        if not backend.in_transaction(conn):
            # SQLite already rolled the whole transaction back (e.g. SQLITE_FULL); the outer level reports it.
            return
        if success:
            try:
                backend.execute(conn, f"RELEASE {name}")
                return
            except Exception:
                backend.execute(conn, f"ROLLBACK TO {name}")
                backend.execute(conn, f"RELEASE {name}")
                raise
        backend.execute(conn, f"ROLLBACK TO {name}")
        backend.execute(conn, f"RELEASE {name}")

    def _commit(self) -> None:
        pool, conn = self._pool, self._conn
        backend = pool._backend
        if not backend.in_transaction(conn):
            return  # the caller ended it with its own COMMIT/ROLLBACK
        start = time.monotonic()
        deadline = None if self._timeout is None else start + self._timeout
        try:
            # COMMIT can only meet SQLITE_BUSY outside WAL mode (waiting for readers to leave).
            backend.begin(conn, "COMMIT", pool._policy, deadline)
        except BusyTimeout as exc:
            self._rollback()
            pool._stats.add("write_timeouts")
            pool._stats.add("busy_retries", exc.retries)
            raise pool._busy_timeout("commit", exc, start, deadline) from exc.__cause__
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        pool, conn, state = self._pool, self._conn, self._state
        backend = pool._backend
        try:
            if backend.in_transaction(conn):
                backend.execute(conn, "ROLLBACK")
        except Exception:
            # The connection is in an unknown state: throw it away; the next writer opens a fresh one.
            log.warning("ROLLBACK failed on %s; discarding the writer connection", pool._name, exc_info=True)
            assert state is not None
            if state.writer_conn is conn:
                state.writer_conn = None
            pool._discard(state, conn)


class _Read(_Checkout):
    """Context manager returned by :meth:`Pool.read`."""

    __slots__ = ()

    def __enter__(self) -> Connection:
        if self._state is not None:
            raise self._entered_twice()
        pool = self._pool
        state = self._state = pool._state
        if getattr(state.local, "depth", 0):
            self._conn = state.local.conn  # inside our own transaction: read our own writes
            return self._conn
        pool._check_open()
        start = time.monotonic()
        slot = pool._acquire(state.reader_slots, "reader", self._timeout, self._cancel)
        conn = slot.item  # the slot's connection, opened by an earlier reader (or None)
        try:
            if state.shut_down:  # close() ran while this thread queued
                pool._check_open()
            if conn is None:
                deadline = None if self._timeout is None else start + self._timeout
                conn = slot.item = pool._open("reader", deadline)
        except BaseException:
            state.reader_slots.release(slot)
            raise
        pool._backend.set_holder(conn, get_ident())
        self._permit = slot
        self._conn = conn
        return conn

    def __exit__(self, *exc_info: object) -> None:
        permit, self._permit = self._permit, None
        if permit is None:
            return  # borrowed the writer: the transaction owns it
        pool, state, conn = self._pool, self._state, self._conn
        assert state is not None
        backend = pool._backend
        backend.set_holder(conn, None)
        keep = True
        try:
            if backend.in_transaction(conn):  # the caller began one: do not hand it on
                backend.execute(conn, "ROLLBACK")
        except Exception:
            keep = False
        finally:
            if not keep or state.shut_down:
                permit.item = None
                pool._discard(state, conn)
            state.reader_slots.release(permit)  # the connection stays in the slot for the next reader
            if state.shut_down:  # close() may have looked at the slots before this one came back
                pool._close_idle_readers(state)


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
) -> Pool:
    """Open a fair pool for the SQLite database at ``path`` (created if missing).

    * ``readers``: read-only connections (``PRAGMA query_only``), opened lazily.
    * ``timeout``: seconds a checkout may wait in total (queue + another
      process's lock); ``None`` waits forever.  Exceeding it raises
      :class:`PoolTimeout`, which is also a ``sqlite3.OperationalError``.
    * ``pragmas``: overrides of :data:`sqlitefair.DEFAULT_PRAGMAS`; ``None`` drops one.
    * ``busy_policy``: how to wait for other processes (default :class:`FairRetry`).
    * ``backend``: ``"sqlite3"`` (the standard library).
    * ``on_connect(conn, role)``: called for every new connection, e.g. to
      register functions or a trace callback.
    * ``wal_limit``: bytes of WAL after which the writer pauses this pool's
      readers for a moment and checkpoints (``None``: never; see the guide).

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
    )
