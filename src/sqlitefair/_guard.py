"""Pooled connections refuse to run SQL outside the checkout that handed them out.

A pooled connection outlives the ``with`` block that handed it out: the pool
gives it to the next thread.  A reference kept past the block (a connection
stored on an object, a cursor returned from a function) would run its
statements inside somebody else's transaction, or write outside the writer
queue.  So every pooled connection records which thread has it checked out,
and the methods that run SQL or fetch rows, on the connection and on its
cursors, check that first and raise :class:`~sqlitefair.NotCheckedOut`
otherwise.  The check costs about 0.2-0.3 microseconds per statement.

The pool's own statements (``BEGIN IMMEDIATE``, ``COMMIT``, pragmas,
checkpoints) call the binding's methods directly and skip the check.

Not covered: iterating a cursor (``for row in cursor``) after the block; that
would make every row slower.  Fetch the rows you need inside the block.
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Any, Iterable

from ._errors import NotCheckedOut

__all__ = ("PooledSqlite3Connection", "PooledSqlite3Cursor", "not_checked_out")

_get_ident = threading.get_ident

_connection_cursor = sqlite3.Connection.cursor
_connection_commit = sqlite3.Connection.commit
_connection_rollback = sqlite3.Connection.rollback
_connection_backup = sqlite3.Connection.backup
_connection_blobopen = getattr(sqlite3.Connection, "blobopen", None)  # Python 3.11+
_cursor_execute = sqlite3.Cursor.execute
_cursor_executemany = sqlite3.Cursor.executemany
_cursor_executescript = sqlite3.Cursor.executescript
_cursor_fetchone = sqlite3.Cursor.fetchone
_cursor_fetchmany = sqlite3.Cursor.fetchmany
_cursor_fetchall = sqlite3.Cursor.fetchall


def not_checked_out(conn: Any) -> NotCheckedOut:
    """The error for using ``conn`` (a pooled connection) where it is not checked out."""
    holder = getattr(conn, "_sf_holder", None)
    label = getattr(conn, "_sf_label", "a pooled connection")
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


class PooledSqlite3Connection(sqlite3.Connection):
    """The stdlib backend's connection: a ``sqlite3.Connection`` that checks it is checked out.

    ``execute``, ``executemany``, ``executescript``, ``cursor``, ``commit``,
    ``rollback``, ``backup`` and ``blobopen`` raise :class:`NotCheckedOut`
    unless the calling thread has this connection checked out of its pool.
    (The check is written out in each method rather than in a decorator: it
    runs on every statement, and a wrapper call would double its cost.)
    """

    __slots__ = ("_sf_holder", "_sf_label")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sf_holder: int | None = None
        self._sf_label = "a pooled connection"

    def cursor(self, factory: Any = None) -> Any:  # type: ignore[override]
        if self._sf_holder != _get_ident():
            raise not_checked_out(self)
        return _connection_cursor(self, PooledSqlite3Cursor if factory is None else factory)

    def execute(self, sql: str, parameters: Any = (), /) -> PooledSqlite3Cursor:  # type: ignore[override]
        if self._sf_holder != _get_ident():
            raise not_checked_out(self)
        # Through Connection.cursor so the cursor inherits row_factory, as with the stdlib's execute().
        return _cursor_execute(_connection_cursor(self, PooledSqlite3Cursor), sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> PooledSqlite3Cursor:  # type: ignore[override]
        if self._sf_holder != _get_ident():
            raise not_checked_out(self)
        return _cursor_executemany(_connection_cursor(self, PooledSqlite3Cursor), sql, parameters)

    def executescript(self, sql_script: str, /) -> PooledSqlite3Cursor:  # type: ignore[override]
        if self._sf_holder != _get_ident():
            raise not_checked_out(self)
        return _cursor_executescript(_connection_cursor(self, PooledSqlite3Cursor), sql_script)

    def commit(self) -> None:
        if self._sf_holder != _get_ident():
            raise not_checked_out(self)
        _connection_commit(self)

    def rollback(self) -> None:
        if self._sf_holder != _get_ident():
            raise not_checked_out(self)
        _connection_rollback(self)

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
    """A cursor of a :class:`PooledSqlite3Connection`: runs and fetches only while that is checked out."""

    __slots__ = ()

    def execute(self, sql: str, parameters: Any = (), /) -> PooledSqlite3Cursor:  # type: ignore[override]
        if self.connection._sf_holder != _get_ident():  # type: ignore[attr-defined]
            raise not_checked_out(self.connection)
        return _cursor_execute(self, sql, parameters)

    def executemany(self, sql: str, seq_of_parameters: Iterable[Any], /) -> PooledSqlite3Cursor:  # type: ignore[override]
        if self.connection._sf_holder != _get_ident():  # type: ignore[attr-defined]
            raise not_checked_out(self.connection)
        return _cursor_executemany(self, sql, seq_of_parameters)

    def executescript(self, sql_script: str, /) -> PooledSqlite3Cursor:  # type: ignore[override]
        if self.connection._sf_holder != _get_ident():  # type: ignore[attr-defined]
            raise not_checked_out(self.connection)
        return _cursor_executescript(self, sql_script)

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
