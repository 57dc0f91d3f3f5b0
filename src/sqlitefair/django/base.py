"""The module Django loads for ``"ENGINE": "sqlitefair.django"`` (``<ENGINE>.base.DatabaseWrapper``).

Django's SQLite backend with three changes:

* **Writes wait in line.**  A transaction that may write (the outermost
  ``atomic()`` block, an ORM write in autocommit mode, the first write after
  ``set_autocommit(False)``) first takes its place in the database's writer
  :class:`_Gate` (FIFO among this process's threads, and among processes
  through the cross-process queue), then runs ``BEGIN IMMEDIATE`` with
  sqlitefair's fair busy policy against writers outside sqlitefair.  The
  place is given on when the transaction ends (commit, rollback, or the
  connection closed).  So no two of our connections ever contend in SQLite's
  busy handler, and no write fails with "database is locked" after reading in
  a deferred transaction.
* **Reads do not wait.**  ``SELECT`` outside a transaction runs at once on the
  thread's own connection, in parallel with other threads and with the writer
  (WAL).
* **Production pragmas**: sqlitefair's defaults (``_defaults.PRAGMAS``: WAL,
  ``synchronous=NORMAL``, ...), overridable with ``OPTIONS["pragmas"]``.

``OPTIONS`` (besides Django's own): ``timeout`` (seconds a write may wait for
its turn and for the database's lock in total, default 5; also SQLite's busy
timeout for reads), ``pragmas`` (a dict of overrides, ``None`` drops one),
``process_queue`` (``False`` turns the cross-process queue off).
``transaction_mode`` may only be ``"IMMEDIATE"`` (what this backend does).
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import warnings
from collections import deque
from collections.abc import Mapping
from functools import lru_cache
from time import monotonic
from typing import Any, Callable

from django.core.exceptions import ImproperlyConfigured
from django.db.backends.sqlite3 import base as sqlite_base

from .. import _defaults
from .._backends import get_backend
from .._busy import BusyTimeout, FairRetry, retry_while_busy
from .._errors import ProcessQueueWarning
from .._fairlock import FairLock, Permit
from .. import _interrupts
from .._interrupts import protected
from .._opening import check_timeout, merge_pragmas, pragma_sql, uri_file_path
from .._procqueue import ProcessQueue, QueueTimeout, open_queue
from .._waitqueue import LockTimeout

__all__ = ("DatabaseWrapper",)

#: The busy policy against writers outside sqlitefair (ours never meet in SQLite's lock).
_POLICY = FairRetry()


class _Gate:
    """The writer's line for one database, shared by every Django connection of this process (one
    per thread): a FIFO lock among threads and, on a file, the cross-process queue among processes.

    Invariant: a connection runs ``BEGIN IMMEDIATE`` only while it holds ``lock`` (and, with
    ``procq``, this process's turn), and gives them back only after its transaction has ended.
    """

    def __init__(self, name: str, file: str | None, use_queue: bool) -> None:
        self.lock = FairLock(barging=_defaults.BARGING_WINDOW, depth=_defaults.BARGING_DEPTH)
        self.procq: ProcessQueue | None = None
        if file is None or not use_queue:
            return
        self.procq, reason = open_queue(file, name)
        if reason is not None:
            warnings.warn(
                f"sqlitefair's cross-process writer queue is off for {name!r}: {reason}. Writers in different "
                "processes are ordered by the busy policy alone. Set OPTIONS['process_queue'] = False to "
                "silence this.",
                ProcessQueueWarning,
                stacklevel=2,
            )


_gates: dict[tuple[str, bool], _Gate] = {}
_gates_lock = threading.Lock()


def _gate(key: str, file: str | None, use_queue: bool) -> _Gate:
    gate = _gates.get((key, use_queue))
    if gate is None:
        with _gates_lock:
            gate = _gates.get((key, use_queue))
            if gate is None:
                gate = _gates[(key, use_queue)] = _Gate(key, file, use_queue)
    return gate


def _forget_gates() -> None:
    """In a fork child: the parent's gates may be held by threads that do not exist here."""
    global _gates_lock
    _gates.clear()
    _gates_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_gates)


class _Turn(Permit):
    """One connection's hold on its gate (the writer lock's record of its holder)."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(0, 0.0)


_FIRST_WORD = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*(\w*)", re.S)
_WRITE_WORD = re.compile(r"\b(?:INSERT|UPDATE|DELETE|REPLACE)\b", re.I)
_READS = frozenset({"SELECT", "EXPLAIN", "PRAGMA", "VALUES"})
_CONTROL = frozenset({"BEGIN", "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE", "ATTACH", "DETACH"})
#: Writes that SQLite refuses inside a transaction: they take the turn, but run without BEGIN.
_OUTSIDE = frozenset({"VACUUM"})
#: Pragmas that write the database file or checkpoint its WAL (in the turn, without BEGIN, like
#: VACUUM: sqlitefair connections checkpoint only in their turn, see docs/backends.md); and those
#: that write it when given a value (``PRAGMA user_version = 3``).  Other pragmas set this
#: connection's own options or read, and run at once (Django's ``PRAGMA foreign_keys = OFF``
#: must run outside a transaction).
_WRITING_PRAGMAS = frozenset({"wal_checkpoint", "optimize", "incremental_vacuum"})
_SETTING_WRITES = frozenset({"user_version", "application_id", "journal_mode", "auto_vacuum", "page_size"})
_PRAGMA = re.compile(r"PRAGMA\s+(?:\w+\s*\.\s*)?(\w+)\s*([=(]?)", re.I)

#: What a statement outside a transaction needs (``statement_kind``).
READ, WRITE, OUTSIDE = "read", "write", "outside"


@lru_cache(maxsize=1024)  # an ORM sends the same few statements again and again
def statement_kind(sql: str) -> str:
    """What ``sql`` needs outside a transaction: ``WRITE`` (its turn and a transaction of its own),
    ``OUTSIDE`` (its turn, no BEGIN: ``VACUUM``, a checkpoint, ``PRAGMA user_version = ...``) or
    ``READ`` (nothing: a read (``SELECT``, ``EXPLAIN``, other pragmas, ``VALUES``, a ``WITH``
    without a write in it) or transaction control (and ``ATTACH``/``DETACH``), which is left to
    SQLite as written)."""
    match = _FIRST_WORD.match(sql)
    word = match.group(1).upper() if match else ""
    if word == "PRAGMA" and match is not None:
        pragma = _PRAGMA.match(sql, match.start(1))
        if pragma is not None:
            name = pragma.group(1).lower()
            if name in _WRITING_PRAGMAS or (name in _SETTING_WRITES and pragma.group(2)):
                return OUTSIDE
        return READ
    if word in _READS or word in _CONTROL:
        return READ
    if word == "WITH":
        return WRITE if _WRITE_WORD.search(sql) is not None else READ
    return OUTSIDE if word in _OUTSIDE else WRITE


def may_write(sql: str) -> bool:
    """Whether ``sql`` may write (so, outside a transaction, must wait for its turn)."""
    return statement_kind(sql) != READ


@lru_cache(maxsize=1024)
def qmark(query: str) -> str:
    """``query`` with Django's "format" placeholders (``%s``) as sqlite3's "qmark" ones (``?``):
    Django's cursor's conversion, cached (Django's runs a regular expression on every query)."""
    return sqlite_base.FORMAT_QMARK_REGEX.sub("?", query).replace("%%", "%")


_execute = sqlite3.Cursor.execute


class SqlitefairCursorWrapper(sqlite_base.SQLiteCursorWrapper):
    """Django's cursor; a write outside a transaction first takes the connection's turn.

    In autocommit mode the statement runs in a transaction of its own (``BEGIN IMMEDIATE``,
    the statement, ``COMMIT``); rows it returns (``INSERT ... RETURNING``) are read before the
    ``COMMIT`` and served by :class:`_ReturnedRows`, which the cursor becomes until its next
    statement (so that other statements' rows are fetched by sqlite3 itself, without a Python
    frame per fetch)."""

    _sf_db: DatabaseWrapper

    # A connection that holds its turn (``_sf_held``) runs every statement directly, also after
    # SQLite ended its transaction under it (INSERT OR ROLLBACK, RAISE(ROLLBACK), a full disk):
    # waiting for the turn again would wait for itself.

    def execute(self, query: str, params: Any = None) -> Any:
        db = self._sf_db
        kind = READ if db._sf_held is not None or db.connection.in_transaction else statement_kind(query)
        # Django's conversion of placeholders (SQLiteCursorWrapper.execute), with qmark() cached.
        if params is None:
            args: tuple[Any, ...] = (query,)
        elif isinstance(params, Mapping):
            args = (self.convert_query(query, param_names=list(params)), params)
        else:
            args = (qmark(query), params)
        if kind == READ:
            return _execute(self, *args)
        if kind == OUTSIDE:
            return db._sf_turn_only(lambda: _execute(self, *args))
        return db._sf_write(self, lambda: _execute(self, *args))

    def executemany(self, query: str, param_list: Any) -> Any:
        db = self._sf_db
        if db._sf_held is not None or db.connection.in_transaction or not may_write(query):
            return super().executemany(query, param_list)
        return db._sf_write(self, lambda: super(SqlitefairCursorWrapper, self).executemany(query, param_list))

    def executescript(self, script: str) -> Any:
        """A script commits any open transaction and runs its statements as they are written: it
        runs in the connection's turn (taken for it outside a transaction), without a BEGIN."""
        db = self._sf_db
        if db._sf_held is not None:
            return super().executescript(script)
        return db._sf_turn_only(lambda: super(SqlitefairCursorWrapper, self).executescript(script))


class _ReturnedRows(SqlitefairCursorWrapper):
    """The class of a cursor whose autocommit write returned rows: they were read before its
    ``COMMIT`` (:meth:`DatabaseWrapper._sf_write`) and are served from ``_sf_rows`` until the
    cursor's next statement, which turns it back into a :class:`SqlitefairCursorWrapper`."""

    _sf_rows: deque[Any]

    def _sf_back(self) -> None:
        self.__class__ = SqlitefairCursorWrapper
        self.__dict__.pop("_sf_rows", None)  # (what is left of them, if anything)

    def execute(self, query: str, params: Any = None) -> Any:
        self._sf_back()
        return self.execute(query, params)

    def executemany(self, query: str, param_list: Any) -> Any:
        self._sf_back()
        return self.executemany(query, param_list)

    def executescript(self, script: str) -> Any:
        self._sf_back()
        return self.executescript(script)

    def fetchone(self) -> Any:
        rows = self._sf_rows
        return rows.popleft() if rows else None

    def fetchmany(self, size: int | None = None) -> list[Any]:
        rows = self._sf_rows
        return [rows.popleft() for _ in range(min(len(rows), self.arraysize if size is None else size))]

    def fetchall(self) -> list[Any]:
        out = list(self._sf_rows)
        self._sf_rows.clear()
        return out

    def __next__(self) -> Any:
        rows = self._sf_rows
        if not rows:
            raise StopIteration
        return rows.popleft()


class DatabaseWrapper(sqlite_base.DatabaseWrapper):
    """Django's SQLite ``DatabaseWrapper`` whose writing transactions wait in sqlitefair's line."""

    display_name = "SQLite"  # (Django's messages name the database: "SQLite 3.31 or later is required")

    _sf_held: tuple[_Gate, _Turn] | None = None

    def get_connection_params(self) -> dict[str, Any]:
        kwargs = super().get_connection_params()  # (validates and removes transaction_mode)
        if self.transaction_mode not in (None, "IMMEDIATE"):
            raise ImproperlyConfigured(
                f"settings.DATABASES[{self.alias!r}]['OPTIONS']['transaction_mode'] is "
                f"{self.transaction_mode!r}; the sqlitefair backend starts every writing transaction with "
                "BEGIN IMMEDIATE after its turn in the writer queue. Remove the option (or set 'IMMEDIATE')."
            )
        self.transaction_mode = "IMMEDIATE"
        try:
            self._sf_pragmas = merge_pragmas(kwargs.pop("pragmas", None))
            self._sf_timeout = check_timeout(kwargs.pop("timeout", _defaults.TIMEOUT))
        except Exception as exc:
            raise ImproperlyConfigured(f"settings.DATABASES[{self.alias!r}]['OPTIONS']: {exc}") from exc
        use_queue = kwargs.pop("process_queue", True)
        if not isinstance(use_queue, bool):
            raise ImproperlyConfigured(
                f"settings.DATABASES[{self.alias!r}]['OPTIONS']['process_queue'] must be True or False, got {use_queue!r}"
            )
        # SQLite's own busy handler serves the rare BUSY of a read; writes retry BEGIN themselves.
        kwargs["timeout"] = 1e6 if self._sf_timeout is None else self._sf_timeout
        name = str(kwargs["database"])
        self._sf_private_gate: _Gate | None = None
        if self.is_in_memory_db():
            file = None
            if "cache=shared" not in name:  # a database of this connection alone: a line of its own
                self._sf_private_gate = _Gate(name, None, False)
        elif name.startswith("file:"):
            file = os.path.realpath(uri_file_path(name))
        else:
            file = os.path.realpath(name)
        self._sf_gate_args = (file or name, file, use_queue)
        return kwargs

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        conn = super().get_new_connection(conn_params)
        self._sf_busy_ms = int(conn_params["timeout"] * 1000)
        for pragma, value in self._sf_pragmas.items():
            conn.execute(pragma_sql(pragma, value))
        for init_command in self.init_commands:  # OPTIONS["init_command"] has the last word, as in Django
            if init_command := init_command.strip():
                conn.execute(init_command)
        _interrupts.install()  # (main thread only) a Ctrl-C never lands between a turn and its record
        return conn

    def create_cursor(self, name: str | None = None) -> Any:
        cursor = self.connection.cursor(factory=SqlitefairCursorWrapper)
        cursor._sf_db = self
        return cursor

    # -- the turn ----------------------------------------------------------------

    def _start_transaction_under_autocommit(self) -> None:
        """The outermost ``atomic()`` block: its turn, then ``BEGIN IMMEDIATE``, run through a cursor
        as Django's backend runs its ``BEGIN`` (in ``connection.queries``, counted by
        ``assertNumQueries``, its errors Django's)."""
        with self.wrap_database_errors:
            self._sf_begin(logged=True)

    @protected
    def _sf_take(self) -> tuple[_Gate, _Turn, float, float | None]:
        """Wait for this connection's turn to write: its place in the gate's FIFO lock, then (on a
        file) this process's turn in the cross-process queue.  Returns the gate, the turn, when the
        wait began and the deadline it has (``time.monotonic()``), for what comes next."""
        gate = self._sf_private_gate or _gate(*self._sf_gate_args)
        if gate.lock.held_by_current_thread():
            raise self.Database.OperationalError(
                f"database is locked: this thread already holds the turn to write to {self.settings_dict['NAME']!r} "
                "through another connection (another alias of the same database file, in an open atomic() "
                "block or transaction); waiting for it would wait for itself. Write through that connection, "
                "or after its transaction ends."
            )
        timeout = self._sf_timeout
        start = monotonic()
        deadline = None if timeout is None else start + timeout
        turn = _Turn()
        try:
            gate.lock.acquire(timeout, permit=turn, now=start)
        except LockTimeout as exc:
            raise self._sf_timeout_error(f"{exc.statistics.waiting} other connections of this process waiting", start) from None
        try:
            if gate.procq is not None:
                try:
                    gate.procq.enter(turn.since, deadline)
                except QueueTimeout:
                    raise self._sf_timeout_error("other processes' writers ahead in the queue", start) from None
        except BaseException:
            gate.lock.release(turn)
            raise
        return gate, turn, start, deadline

    @staticmethod
    @protected
    def _sf_give(gate: _Gate, turn: _Turn) -> None:
        """Give a turn on that was not used for a transaction (or whose transaction rolled back)."""
        if gate.procq is not None:
            gate.procq.abandon()
        gate.lock.release(turn)

    @protected
    def _sf_begin(self, logged: bool = False) -> None:
        """This connection's turn, then ``BEGIN IMMEDIATE`` (retried with the fair busy policy
        while a writer outside sqlitefair holds the database's lock); ``logged``: through a Django
        cursor (else on the connection itself, unseen, like an autocommit write's own transaction
        in Django's backend)."""
        gate, turn, start, deadline = self._sf_take()
        try:
            conn = self.connection
            conn.execute("PRAGMA busy_timeout = 0")
            try:
                if logged:
                    cursor = self.cursor()
                    retry_while_busy(lambda: cursor.execute("BEGIN IMMEDIATE"), _is_busy, _POLICY, deadline)
                else:
                    retry_while_busy(lambda: conn.execute("BEGIN IMMEDIATE"), _is_busy, _POLICY, deadline)
            except BusyTimeout:
                raise self._sf_timeout_error("a writer outside sqlitefair held the database's lock", start) from None
            finally:
                conn.execute(f"PRAGMA busy_timeout = {self._sf_busy_ms}")
            self._sf_held = (gate, turn)
        except BaseException:
            if self._sf_held is None:  # cut short (an error, an interrupt), maybe after BEGIN succeeded
                try:
                    if self.connection.in_transaction:
                        self.connection.rollback()
                finally:
                    self._sf_give(gate, turn)
            raise

    @protected
    def _sf_turn_only(self, run: Callable[[], Any]) -> Any:
        """Run ``run`` (a statement SQLite refuses inside a transaction, or a script) in this
        connection's turn, without a BEGIN."""
        gate, turn, _, _ = self._sf_take()
        try:
            return run()
        finally:
            self._sf_give(gate, turn)

    def _sf_timeout_error(self, why: str, start: float) -> sqlite3.OperationalError:
        return self.Database.OperationalError(
            f"database is locked: sqlitefair waited {monotonic() - start:.3f} s for a turn to write to "
            f"{self.settings_dict['NAME']!r} ({why}), the OPTIONS['timeout'] of {self._sf_timeout} s. Keep "
            "write transactions short, or raise the timeout."
        )

    @protected
    def _sf_end(self, committed: bool) -> None:
        """Give the turn on once the transaction has ended (a COMMIT that failed leaves it open:
        the rollback that follows gives it)."""
        held = self._sf_held
        if held is None:
            return
        conn = self.connection
        if conn is not None and committed and conn.in_transaction:
            return
        self._sf_held = None
        gate, turn = held
        if gate.procq is not None:
            if committed:
                gate.procq.leave(monotonic(), gate.lock.has_waiters())
            else:
                gate.procq.abandon()
        gate.lock.release(turn)

    def _sf_write(self, cursor: SqlitefairCursorWrapper, run: Callable[[], Any]) -> Any:
        """A write outside a transaction: in its own transaction (autocommit), or the start of the
        one ``set_autocommit(False)`` asked for (it then ends at commit() or rollback())."""
        autocommit = self.get_autocommit()
        try:
            self._sf_begin()
            result = run()
            if autocommit and cursor.description is not None:  # RETURNING: rows before the COMMIT
                cursor._sf_rows = deque(sqlite3.Cursor.fetchall(cursor))  # (before the class that reads them)
                cursor.__class__ = _ReturnedRows
            if autocommit:
                self.connection.commit()
        except BaseException:
            if autocommit:
                try:
                    self.connection.rollback()
                finally:
                    self._sf_end(committed=False)
            raise
        if autocommit:
            self._sf_end(committed=True)
        return result

    # -- where transactions end ----------------------------------------------------

    def _set_autocommit(self, autocommit: bool) -> None:
        """Back to autocommit, Python's sqlite3 commits an open transaction by itself: the turn goes
        with it (the commit hooks of Django's ``commit()`` are not run: as with Django's backend)."""
        try:
            super()._set_autocommit(autocommit)
        finally:
            if autocommit:
                self._sf_end(committed=True)

    def _savepoint(self, sid: str) -> None:
        """A savepoint outside a transaction (``atomic()`` after ``set_autocommit(False)``) would
        begin a deferred one: take the turn and begin IMMEDIATE first."""
        if self._sf_held is None and not self.connection.in_transaction:
            with self.wrap_database_errors:
                self._sf_begin(logged=True)
        super()._savepoint(sid)

    def _commit(self) -> None:
        try:
            super()._commit()
        finally:
            self._sf_end(committed=True)

    def _rollback(self) -> None:
        try:
            super()._rollback()
        finally:
            self._sf_end(committed=False)

    def _close(self) -> None:
        try:
            super()._close()
        finally:
            self._sf_end(committed=False)


_sqlite3_is_busy = get_backend("sqlite3").is_busy


def _is_busy(exc: BaseException) -> bool:
    """SQLITE_BUSY, raised by sqlite3 or wrapped by Django (its error's cause is sqlite3's)."""
    return _sqlite3_is_busy(exc) or (exc.__cause__ is not None and _sqlite3_is_busy(exc.__cause__))
