"""Pooled connections refuse to run SQL outside their checkout, or to end the pool's transaction.

**Checkout.**  A pooled connection outlives the ``with`` block that handed it
out: the pool gives it to the next thread.  A reference kept past the block (a
connection stored on an object, a cursor returned from a function) would run
its statements inside somebody else's transaction, or write outside the writer
queue.  So every pooled connection records which thread has it checked out,
and the methods that run SQL or fetch rows, on the connection and on its
cursors, check that first and raise :class:`~sqlitefair.NotCheckedOut`
otherwise.  The check costs about 0.2-0.3 microseconds per statement.

**Transaction control.**  Inside ``with pool.transaction()`` the pool owns the
transaction: a ``COMMIT`` sent by the block would commit half of it and leave
the rest in autocommit mode, where a later exception can no longer roll it
back.  So a pooled connection opened with a ``role`` carries a
:class:`TxnPolice`, installed as SQLite's authorizer, which sees every
statement as SQLite's parser understood it (case, comments, ``END``,
``END TRANSACTION`` make no difference) and refuses, before anything runs:

* on the writer: ``BEGIN``/``COMMIT``/``END``/``ROLLBACK``, any use of a
  savepoint whose name starts with ``sqlitefair`` (the pool's nested blocks;
  users' own savepoints are fine), and writes to the ``query_only``,
  ``journal_mode`` (other than ``wal``) and ``locking_mode`` pragmas;
* on readers: only those pragma writes (a reader may ``BEGIN``/``COMMIT`` a
  read transaction of its own for a consistent snapshot).

The authorizer runs when a statement is prepared, not when a cached prepared
statement is run again, so its verdict must depend on the SQL text alone:
statements it refuses never reach the statement cache, and the pool's own
statements (which it allows) end in a per-process random whitespace suffix
(:data:`OWN_SQL_SUFFIX`), so they never share a cache entry with user SQL.
The pool runs them only through its backend's ``execute``/``query_one``/
``query_all``/``begin``, which set ``TxnPolice.own`` meanwhile.

Policing starts when the pool calls the backend's ``start_policing(conn)``,
after its ``on_connect`` hook (which so still runs on a plain connection), or
at the writer's first ``begin()`` at the latest.  Installing the authorizer
then makes SQLite re-prepare, and so re-check, every statement prepared before.

A refusal surfaces from SQLite as "not authorized"; the Python wrappers below
turn it into :class:`~sqlitefair.TransactionControlError`, which says what was
refused and what to do.  ``commit()``, ``rollback()``, ``with conn:`` and
setting ``isolation_level`` on the writer raise it directly, and
``executescript()`` on the writer runs the script inside the transaction (see
:meth:`PooledSqlite3Connection.executescript`).

The pool's own statements (``BEGIN IMMEDIATE``, ``COMMIT``, pragmas,
checkpoints) call the binding's methods directly and skip the checkout check.

Not covered: iterating a cursor (``for row in cursor``) after the block; that
would make every row slower.  Fetch the rows you need inside the block.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
from typing import Any, Callable, Iterable, Iterator

from ._errors import NotCheckedOut, SqlitefairError, TransactionControlError
from ._interrupts import protected

__all__ = (
    "PooledSqlite3Connection",
    "PooledSqlite3Cursor",
    "TxnPolice",
    "OWN_SQL_SUFFIX",
    "RESERVED_SAVEPOINT_PREFIX",
    "not_checked_out",
    "split_script",
)

_get_ident = threading.get_ident

#: Appended to every statement the pool runs itself on a policed connection: 64 random spaces
#: and tabs (2**64 choices, drawn once per process), so that no user statement can share (and
#: reuse) the prepared statement of the pool's own ``COMMIT``.  Whitespace rather than a comment
#: so that traces (``set_trace_callback``, apsw's ``exec_trace``) still read ``BEGIN IMMEDIATE``
#: once stripped.
OWN_SQL_SUFFIX = "".join(secrets.choice(" \t") for _ in range(64))

#: Savepoints whose name starts with this (any case) belong to the pool; users may not touch them.
RESERVED_SAVEPOINT_PREFIX = "sqlitefair"

# SQLite's authorizer action codes and answers (the same in sqlite3 and apsw).
_SQLITE_OK = 0
_SQLITE_DENY = 1
_SQLITE_AUTH = 23  # the error code of a statement the authorizer refused
_PRAGMA = 19
_TRANSACTION = 22
_SAVEPOINT = 32
#: Pragmas whose change would take the connection out of the pool's set-up.
_GUARDED_PRAGMAS = frozenset({"query_only", "journal_mode", "locking_mode"})

_connection_cursor = sqlite3.Connection.cursor
_connection_commit = sqlite3.Connection.commit
_connection_rollback = sqlite3.Connection.rollback
_connection_backup = sqlite3.Connection.backup
_connection_enter = sqlite3.Connection.__enter__
_connection_set_authorizer = sqlite3.Connection.set_authorizer
_connection_blobopen = getattr(sqlite3.Connection, "blobopen", None)  # Python 3.11+
_isolation_level = sqlite3.Connection.isolation_level  # a getset descriptor
_autocommit = getattr(sqlite3.Connection, "autocommit", None)  # Python 3.12+
_cursor_execute = sqlite3.Cursor.execute
_cursor_executemany = sqlite3.Cursor.executemany
_cursor_executescript = sqlite3.Cursor.executescript
_cursor_fetchone = sqlite3.Cursor.fetchone
_cursor_fetchmany = sqlite3.Cursor.fetchmany
_cursor_fetchall = sqlite3.Cursor.fetchall
_complete_statement = sqlite3.complete_statement


#: Put in a writer's ``_sf_holder`` once SQLite ended the block's whole transaction by itself:
#: every later statement of the block then fails the holder check, which every statement makes.
TRANSACTION_LOST = "transaction lost"


def note_failure(conn: Any) -> None:
    """After a statement failed on ``conn``: if it is a writer inside a block and SQLite ended the
    whole transaction by itself (``ON CONFLICT ROLLBACK``, ``RAISE(ROLLBACK)``, an interrupt, a full
    disk), refuse the rest of the block, which would otherwise run in autocommit mode."""
    police = conn._sf_police
    if police is None or not police.txn or conn._sf_holder != _get_ident():
        return
    try:
        lost = not conn.in_transaction
    except Exception:  # closed: the pool sees to it at the end of the block
        return
    if lost:
        conn._sf_holder = TRANSACTION_LOST


def not_checked_out(conn: Any) -> SqlitefairError:
    """The error for using ``conn`` (a pooled connection) where it is not checked out."""
    holder = getattr(conn, "_sf_holder", None)
    label = getattr(conn, "_sf_label", "a pooled connection")
    if holder == TRANSACTION_LOST:
        return TransactionControlError(
            f"SQLite rolled back the whole transaction of this block on {label} when an earlier statement "
            "failed (a conflict clause ON CONFLICT ROLLBACK or OR ROLLBACK, RAISE(ROLLBACK) in a trigger, an "
            "interrupt, a full disk), so this statement would run outside any transaction; it was refused. "
            "Nothing of the block is committed: let the error end the block, and start again in a new one."
        )
    if holder is None:
        where = "after the `with` block that handed it out had ended (the pool has it back)"
        try:
            _ = conn.in_transaction  # raises once the connection is closed
        except Exception:
            where = "after the `with` block that handed it out had ended (its pool has closed it since)"
    else:
        where = f"from thread {_get_ident()} while thread {holder} has it checked out"
    return NotCheckedOut(
        f"{label} was used {where}. A pooled connection, and every cursor made from it, may be used "
        "only inside its `with pool.transaction()` / `with pool.read()` block, by the thread that "
        "entered the block; nothing was run. Open a new block to use the database again, and fetch "
        "the rows you need before the block ends."
    )


# -- transaction control ------------------------------------------------------

_KEEP_NESTED = (
    "for a part that can fail on its own, nest `with pool.transaction():` (a SAVEPOINT) or use a "
    "SAVEPOINT / RELEASE / ROLLBACK TO of your own"
)


def _refusal_message(refused: tuple[str, ...], role: str, label: str) -> str:
    """What was refused on ``label``, why, and what to do instead."""
    kind = refused[0]
    block = "inside a write block (`with pool.transaction()`)"
    if kind in ("COMMIT", "commit()"):
        doing = "COMMIT (or END)" if kind == "COMMIT" else "conn.commit()"
        return (
            f"{doing} {block} was refused on {label}: nothing was committed and the block's transaction "
            "is still open. The pool commits the block when it ends without an exception and rolls it "
            "back if it raises; a COMMIT in between would commit half of the block and run the rest "
            "outside any transaction. To commit part of the work early, end the block and open another; "
            f"{_KEEP_NESTED}."
        )
    if kind in ("ROLLBACK", "rollback()"):
        doing = "ROLLBACK" if kind == "ROLLBACK" else "conn.rollback()"
        return (
            f"{doing} {block} was refused on {label}: nothing was rolled back or committed and the "
            "block's transaction is still open (a ROLLBACK would run the rest of the block outside any "
            "transaction). To roll the whole block back, raise an exception out of it; to undo only a "
            "part, run that part in a nested `with pool.transaction():` and raise inside it, or use a "
            "SAVEPOINT of your own and ROLLBACK TO it."
        )
    if kind == "BEGIN":
        return (
            f"BEGIN {block} was refused on {label}: the block already is a transaction (the pool sent "
            "BEGIN IMMEDIATE) and commits when the block ends without an exception; "
            f"{_KEEP_NESTED}."
        )
    if kind == "with":
        return (
            f"`with conn:` on the writer {block} was refused on {label} (nothing was run): the sqlite3 "
            "module's connection context manager COMMITs when it ends, which would commit the pool's "
            "transaction halfway through the block. Nest `with pool.transaction():` instead: a SAVEPOINT "
            "that rolls back on its own if its body raises."
        )
    if kind in ("isolation_level", "autocommit"):
        return (
            f"setting conn.{kind} on {label} was refused (nothing was changed): the pool keeps the "
            "writer in the sqlite3 module's autocommit mode (isolation_level=None) and sends BEGIN "
            "IMMEDIATE and COMMIT itself; the assignment would commit or begin a transaction behind its "
            "back. Use `with pool.transaction():` blocks to group writes."
        )
    if kind == "savepoint":
        operation, name = refused[1], refused[2]
        verb = {"BEGIN": "SAVEPOINT", "RELEASE": "RELEASE", "ROLLBACK": "ROLLBACK TO"}.get(operation, operation)
        return (
            f"{verb} {name} {block} was refused on {label} (nothing was run): savepoint names starting "
            f"with {RESERVED_SAVEPOINT_PREFIX!r} belong to the pool's nested `with pool.transaction()` "
            "blocks, and releasing or rolling back to one from inside would end that block's savepoint "
            "under it. Use savepoint names of your own; to roll a nested block back, raise out of it."
        )
    if kind == "pragma":
        name, value = refused[1], refused[2]
        if role == "reader":
            advice = "Readers stay read-only: write inside `with pool.transaction()`."
        else:
            advice = "Inside a write block it would change the pool's transaction under it."
        return (
            f"PRAGMA {name} = {value} was refused on {label} (nothing was changed): the pool sets "
            "query_only (OFF on the writer, ON on readers), journal_mode and locking_mode itself. "
            f"{advice} Choose journal_mode and locking_mode with sqlitefair.connect(pragmas={{...}})."
        )
    return f"{kind} was refused on {label}: the pool owns this connection's transaction."  # pragma: no cover


class TxnPolice:
    """The authorizer of one pooled connection: refuses transaction control (see the module docstring).

    One per connection (``conn._sf_police``); what :meth:`make_authorizer`
    returns is installed with the binding's ``set_authorizer``.  ``own`` is True
    while the pool runs a statement of its own; ``refused`` records the last
    refusal, for the error message; ``user`` is an authorizer the user
    installed (asked about what this one allows).
    """

    __slots__ = ("role", "label", "own", "refused", "user", "pending", "txn", "pragmas")

    def __init__(self, role: str, label: str) -> None:
        if role not in ("writer", "reader"):
            raise ValueError(f"role must be 'writer', 'reader' or None, not {role!r}")
        self.role = role
        self.label = label
        self.own = False
        self.refused: tuple[str, ...] | None = None
        self.user: Callable[..., int] | None = None
        self.pending = True  # not policing yet (see activate())
        self.txn = False  # refuse BEGIN/COMMIT/ROLLBACK and the pool's savepoints (the writer)
        self.pragmas = False  # refuse changes of query_only, journal_mode, locking_mode

    def activate(self) -> None:
        """Start policing.  The caller installs this authorizer right after, which makes SQLite
        re-prepare (so re-check) every statement prepared before (by an ``on_connect`` hook)."""
        self.pending = False
        self.txn = self.role == "writer"
        self.pragmas = True

    def make_authorizer(self) -> Callable[[int, str | None, str | None, str | None, str | None], int]:
        """The callable to install with the binding's ``set_authorizer``.

        SQLite calls it for every table, column and function a statement
        touches while preparing it (about 0.15 us a call), so it is a closure
        that dismisses the actions it does not watch with three comparisons
        (a callable instance adds about half as much again)."""
        judge = self.judge

        def authorize(action: int, arg1: str | None, arg2: str | None, db_name: str | None, trigger: str | None) -> int:
            if action == _TRANSACTION or action == _SAVEPOINT or action == _PRAGMA:
                return judge(action, arg1, arg2, db_name, trigger)
            user = self.user
            if user is None or self.own:  # the user's authorizer is not asked about the pool's statements
                return _SQLITE_OK
            return _user_verdict(self, user(action, arg1, arg2, db_name, trigger))

        # SQLite calls it in the middle of preparing a statement, and the stdlib turns any exception
        # it raises into SQLITE_DENY: a Ctrl-C landing here would surface as "not authorized" and be
        # lost. Protected, it is put off until the statement call returns.
        return protected(authorize)

    def judge(self, action: int, arg1: str | None, arg2: str | None, db_name: str | None, trigger: str | None) -> int:
        """The verdict on a transaction, savepoint or pragma action."""
        if self.own:
            return _SQLITE_OK  # the pool's own statement; the user's authorizer is not asked either
        if action == _TRANSACTION:
            if self.txn:
                self.refused = (arg1 or "BEGIN",)
                return _SQLITE_DENY
        elif action == _SAVEPOINT:
            if self.txn and arg2 is not None and arg2.lower().startswith(RESERVED_SAVEPOINT_PREFIX):
                self.refused = ("savepoint", arg1 or "", arg2)
                return _SQLITE_DENY
        elif action == _PRAGMA:
            if self.pragmas and arg2 is not None and arg1 is not None:
                name = arg1.lower()
                if name in _GUARDED_PRAGMAS and (
                    name == "query_only"  # one setting for the whole connection
                    or (
                        (db_name is None or db_name.lower() == "main")  # an attached database is the user's
                        and not (name == "journal_mode" and arg2.lower() == "wal")  # SQLite's no-op in WAL mode
                    )
                ):
                    self.refused = ("pragma", name, arg2)
                    return _SQLITE_DENY
        user = self.user
        if user is None:
            return _SQLITE_OK
        return _user_verdict(self, user(action, arg1, arg2, db_name, trigger))

    def refuse(self, kind: str) -> TransactionControlError:
        """The error for a refusal decided in Python (``commit()``, ``with conn:`` ...)."""
        return TransactionControlError(_refusal_message((kind,), self.role, self.label))

    def take_error(
        self, exc: BaseException, cls: type[TransactionControlError] = TransactionControlError
    ) -> TransactionControlError | None:
        """If ``exc`` is SQLite's "not authorized" for a statement this authorizer refused, the error to
        raise instead (and forget the refusal); otherwise None."""
        refused = self.refused
        if refused is None:
            return None
        code = getattr(exc, "sqlite_errorcode", None)  # sqlite3 on Python 3.11+; apsw has extendedresult
        if code is None:
            code = getattr(exc, "extendedresult", None)
        if code is None or code & 0xFF != _SQLITE_AUTH:  # not SQLite's answer (a binding error, say)
            return None
        self.refused = None
        return cls(_refusal_message(refused, self.role, self.label))


def _user_verdict(police: TxnPolice, verdict: int) -> int:
    if verdict == _SQLITE_DENY:
        police.refused = None  # the user's authorizer refused: its own error, not ours
    return verdict


def split_script(script: str) -> Iterator[str]:
    """The statements of ``script`` one by one, each whole: pieces between ``;`` are joined until
    :func:`sqlite3.complete_statement` says they form a statement (so a ``;`` inside a string, a
    comment or a trigger body stays inside its statement).  A tail without ``;`` is yielded too."""
    parts = script.split(";")
    pending = ""
    for part in parts[:-1]:
        pending += part + ";"
        if _complete_statement(pending):
            yield pending
            pending = ""
    pending += parts[-1]
    if pending.strip():
        yield pending


def _run_script(cursor: sqlite3.Cursor, script: str) -> Any:
    """Run ``script`` statement by statement on ``cursor``, inside whatever transaction is open."""
    if not isinstance(script, str):
        raise TypeError(f"executescript() argument must be str, not {type(script).__name__}")
    for statement in split_script(script):
        _cursor_execute(cursor, statement)
        if cursor.description is not None:  # like the sqlite3 module's executescript: run it to the end
            _cursor_fetchall(cursor)
    return cursor


def _refusal(conn: Any, exc: BaseException) -> TransactionControlError | None:
    """The error to raise instead of ``exc`` (a refusal), or None; notes a transaction SQLite ended."""
    police = conn._sf_police
    error = None if police is None else police.take_error(exc)
    if error is None and police is not None:
        note_failure(conn)
    return error


# -- the stdlib backend's connection and cursor ---------------------------------


class PooledSqlite3Connection(sqlite3.Connection):
    """The stdlib backend's connection: a ``sqlite3.Connection`` that checks it is checked out,
    and (opened with a role) refuses to end the pool's transaction.

    ``execute``, ``executemany``, ``executescript``, ``cursor``, ``commit``,
    ``rollback``, ``backup`` and ``blobopen`` raise :class:`NotCheckedOut`
    unless the calling thread has this connection checked out of its pool.
    (The check is written out in each method rather than in a decorator: it
    runs on every statement, and a wrapper call would double its cost.)

    On the writer, ``commit()``, ``rollback()``, ``with conn:`` and setting
    ``isolation_level`` raise :class:`TransactionControlError`, and statements
    that SQLite's authorizer refused (see the module docstring) raise it from
    ``execute``/``executemany``/``executescript`` instead of "not authorized".
    """

    __slots__ = ("_sf_holder", "_sf_label", "_sf_police")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sf_holder: int | None = None
        self._sf_label = "a pooled connection"
        self._sf_police: TxnPolice | None = None

    def cursor(self, factory: Any = None) -> Any:  # type: ignore[override]
        if self._sf_holder != _get_ident():
            raise not_checked_out(self)
        return _connection_cursor(self, PooledSqlite3Cursor if factory is None else factory)

    def execute(self, sql: str, parameters: Any = (), /) -> PooledSqlite3Cursor:  # type: ignore[override]
        if self._sf_holder != _get_ident():
            raise not_checked_out(self)
        try:  # free on the happy path (Python 3.11+)
            # Through Connection.cursor so the cursor inherits row_factory, as with the stdlib's execute().
            return _cursor_execute(_connection_cursor(self, PooledSqlite3Cursor), sql, parameters)
        except sqlite3.DatabaseError as exc:
            error = _refusal(self, exc)
            if error is None:
                raise
        raise error

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> PooledSqlite3Cursor:  # type: ignore[override]
        if self._sf_holder != _get_ident():
            raise not_checked_out(self)
        try:
            return _cursor_executemany(_connection_cursor(self, PooledSqlite3Cursor), sql, parameters)
        except sqlite3.DatabaseError as exc:
            error = _refusal(self, exc)
            if error is None:
                raise
        raise error

    def executescript(self, sql_script: str, /) -> PooledSqlite3Cursor:  # type: ignore[override]
        """On the writer inside its transaction, run the script statement by statement.

        The sqlite3 module's ``executescript()`` first COMMITs any open
        transaction, which would commit the pool's half-done block.  So on the
        writer this runs the statements one at a time through ``execute``
        (split with :func:`sqlite3.complete_statement`, so trigger bodies stay
        whole) inside the block's transaction: they commit or roll back with
        the block, and a ``COMMIT``/``ROLLBACK``/``BEGIN`` in the script is
        refused like any other, with nothing committed (the statements before
        it roll back with the block if it raises).  Elsewhere (readers, an
        ``on_connect`` hook) it is the sqlite3 module's ``executescript()``.
        """
        if self._sf_holder != _get_ident():
            raise not_checked_out(self)
        cursor = _connection_cursor(self, PooledSqlite3Cursor)
        police = self._sf_police
        try:
            if police is not None and police.txn:
                return _run_script(cursor, sql_script)
            return _cursor_executescript(cursor, sql_script)
        except sqlite3.DatabaseError as exc:
            error = _refusal(self, exc)
            if error is None:
                raise
        raise error

    def commit(self) -> None:
        if self._sf_holder != _get_ident():
            raise not_checked_out(self)
        police = self._sf_police
        if police is not None and police.txn:
            raise police.refuse("commit()")
        _connection_commit(self)

    def rollback(self) -> None:
        if self._sf_holder != _get_ident():
            raise not_checked_out(self)
        police = self._sf_police
        if police is not None and police.txn:
            raise police.refuse("rollback()")
        _connection_rollback(self)

    def __enter__(self) -> PooledSqlite3Connection:
        """Refused on the writer: the sqlite3 module's ``with conn:`` commits at its end."""
        police = self._sf_police
        if police is not None and police.txn:
            raise police.refuse("with")
        return _connection_enter(self)  # type: ignore[no-any-return]

    @property  # type: ignore[override]
    def isolation_level(self) -> str | None:
        return _isolation_level.__get__(self)  # type: ignore[no-any-return]

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        # Setting it to None COMMITs an open transaction (the sqlite3 module's doing).
        police = self._sf_police
        if police is not None and police.txn:
            raise police.refuse("isolation_level")
        _isolation_level.__set__(self, value)

    if _autocommit is not None:  # Python 3.12+: assigning it commits or begins

        @property
        def autocommit(self) -> Any:
            return _autocommit.__get__(self)

        @autocommit.setter
        def autocommit(self, value: Any) -> None:
            police = self._sf_police
            if police is not None and police.txn:
                raise police.refuse("autocommit")
            _autocommit.__set__(self, value)

    def set_authorizer(self, authorizer_callback: Callable[..., int] | None) -> None:  # type: ignore[override]
        """Install the user's authorizer behind the pool's: the pool's decides first (and alone
        for the pool's own statements); what it allows, ``authorizer_callback`` decides."""
        police = self._sf_police
        if police is None:
            _connection_set_authorizer(self, authorizer_callback)
            return
        police.user = authorizer_callback
        police.refused = None
        # Not policing yet (an on_connect hook): the user's alone; start_policing() composes them.
        # Re-installing makes SQLite re-check the statements in the cache.
        _connection_set_authorizer(self, authorizer_callback if police.pending else police.make_authorizer())

    def backup(self, target: sqlite3.Connection, **kwargs: Any) -> None:  # type: ignore[override]
        if self._sf_holder != _get_ident():
            raise not_checked_out(self)
        _connection_backup(self, target, **kwargs)

    if _connection_blobopen is not None:

        def blobopen(self, *args: Any, **kwargs: Any) -> Any:
            if self._sf_holder != _get_ident():
                raise not_checked_out(self)
            return _connection_blobopen(self, *args, **kwargs)


class PooledSqlite3Cursor(sqlite3.Cursor):
    """A cursor of a :class:`PooledSqlite3Connection`: runs and fetches only while that is checked out,
    and refuses transaction control like its connection."""

    __slots__ = ()

    def execute(self, sql: str, parameters: Any = (), /) -> PooledSqlite3Cursor:  # type: ignore[override]
        conn = self.connection
        if conn._sf_holder != _get_ident():  # type: ignore[attr-defined]
            raise not_checked_out(conn)
        try:
            return _cursor_execute(self, sql, parameters)
        except sqlite3.DatabaseError as exc:
            error = _refusal(conn, exc)
            if error is None:
                raise
        raise error

    def executemany(self, sql: str, seq_of_parameters: Iterable[Any], /) -> PooledSqlite3Cursor:  # type: ignore[override]
        conn = self.connection
        if conn._sf_holder != _get_ident():  # type: ignore[attr-defined]
            raise not_checked_out(conn)
        try:
            return _cursor_executemany(self, sql, seq_of_parameters)
        except sqlite3.DatabaseError as exc:
            error = _refusal(conn, exc)
            if error is None:
                raise
        raise error

    def executescript(self, sql_script: str, /) -> PooledSqlite3Cursor:  # type: ignore[override]
        """See :meth:`PooledSqlite3Connection.executescript`."""
        conn = self.connection
        if conn._sf_holder != _get_ident():  # type: ignore[attr-defined]
            raise not_checked_out(conn)
        police = conn._sf_police  # type: ignore[attr-defined]
        try:
            if police is not None and police.txn:
                return _run_script(self, sql_script)  # type: ignore[no-any-return]
            return _cursor_executescript(self, sql_script)
        except sqlite3.DatabaseError as exc:
            error = _refusal(conn, exc)
            if error is None:
                raise
        raise error

    def fetchone(self) -> Any:
        if self.connection._sf_holder != _get_ident():  # type: ignore[attr-defined]
            raise not_checked_out(self.connection)
        return _cursor_fetchone(self)

    def fetchmany(self, size: int | None = None) -> list[Any]:
        if self.connection._sf_holder != _get_ident():  # type: ignore[attr-defined]
            raise not_checked_out(self.connection)
        return _cursor_fetchmany(self) if size is None else _cursor_fetchmany(self, size)

    def fetchall(self) -> list[Any]:
        if self.connection._sf_holder != _get_ident():  # type: ignore[attr-defined]
            raise not_checked_out(self.connection)
        return _cursor_fetchall(self)
