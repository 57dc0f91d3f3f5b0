"""Backends: the few things the pool needs from a SQLite binding.

The pool never calls a binding directly; it calls one of these objects, so
adding a binding (apsw) means writing one more class, not touching the pool.
Connections handed to users are the binding's own objects.
"""

from __future__ import annotations

import sqlite3
import sys
from typing import Any, Callable

from ._busy import BusyPolicy, retry_while_busy
from ._errors import ConfigurationError, PoolTimeout
from ._guard import PooledSqlite3Connection

__all__ = ("Backend", "Sqlite3Backend", "get_backend", "gil_enabled", "has_wal_reset_bug", "apsw_sqlite_version")

#: A connection object of whichever binding the pool uses.
Connection = Any

# The binding's own methods, for the pool's statements (no checkout check).
_sqlite3_execute = sqlite3.Connection.execute


def gil_enabled() -> bool:
    """Whether the GIL is on right now (always True before Python 3.13)."""
    check: Callable[[], bool] | None = getattr(sys, "_is_gil_enabled", None)
    return True if check is None else bool(check())


class Backend:
    """What the pool needs from a binding.  Subclasses implement the stubs."""

    #: Name used in ``connect(backend=...)`` and in statistics.
    name: str = ""
    #: The class the pool raises on timeouts; a subclass of the binding's busy error where it has one.
    timeout_error: type[PoolTimeout] = PoolTimeout
    #: Base class of the binding's own errors ("SQLite said no", as opposed to a bug).
    error: type[Exception] = Exception

    def connect(self, target: str, *, uri: bool, busy_timeout: float, label: str = "") -> Connection:
        """Open a connection in autocommit mode, usable from any thread (one at a time).

        ``label`` ("the writer connection of 'app.db'") names it in errors."""
        raise NotImplementedError

    def set_holder(self, conn: Connection, holder: int | None) -> None:
        """Record the thread (``threading.get_ident()``) that has ``conn`` checked out, or None
        when the pool has it back; backends whose connections check it refuse other callers."""

    def execute(self, conn: Connection, sql: str) -> None:
        """Run one statement and discard any rows."""
        raise NotImplementedError

    def query_one(self, conn: Connection, sql: str) -> tuple[Any, ...] | None:
        """Run one statement and return its first row."""
        raise NotImplementedError

    def query_all(self, conn: Connection, sql: str) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def in_transaction(self, conn: Connection) -> bool:
        raise NotImplementedError

    def is_busy(self, exc: BaseException) -> bool:
        """Whether ``exc`` is SQLITE_BUSY ("database is locked")."""
        raise NotImplementedError

    def close(self, conn: Connection) -> None:
        raise NotImplementedError

    def sqlite_version(self) -> str:
        raise NotImplementedError

    def begin(self, conn: Connection, sql: str, policy: BusyPolicy, deadline: float | None) -> int:
        """Run ``BEGIN IMMEDIATE`` (or ``COMMIT``), waiting out other connections'
        locks with ``policy``; return the number of BUSY retries."""
        return retry_while_busy(lambda: self.execute(conn, sql), self.is_busy, policy, deadline)


class Sqlite3Backend(Backend):
    """The standard library's ``sqlite3``: the default, and GIL-free on free-threaded builds."""

    name = "sqlite3"
    error = sqlite3.Error

    def connect(self, target: str, *, uri: bool, busy_timeout: float, label: str = "") -> sqlite3.Connection:
        # isolation_level=None: Python's implicit transaction handling never sends
        # its own BEGIN; sqlitefair sends BEGIN IMMEDIATE itself.
        # check_same_thread=False: a pooled connection moves between threads
        # (never used by two at once; the pool's permits guarantee that, and
        # PooledSqlite3Connection refuses any thread but the holder).
        conn = sqlite3.connect(
            target,
            timeout=busy_timeout,
            isolation_level=None,
            check_same_thread=False,
            uri=uri,
            factory=PooledSqlite3Connection,
        )
        if label:
            conn._sf_label = label
        return conn

    def set_holder(self, conn: PooledSqlite3Connection, holder: int | None) -> None:
        conn._sf_holder = holder

    def execute(self, conn: sqlite3.Connection, sql: str) -> None:
        _sqlite3_execute(conn, sql).close()

    def begin(self, conn: sqlite3.Connection, sql: str, policy: BusyPolicy, deadline: float | None) -> int:
        try:  # the uncontended case without the retry machinery: it is on every transaction's path
            _sqlite3_execute(conn, sql)
            return 0
        except sqlite3.OperationalError as exc:
            if not self.is_busy(exc):
                raise
        return 1 + super().begin(conn, sql, policy, deadline)

    def query_one(self, conn: sqlite3.Connection, sql: str) -> tuple[Any, ...] | None:
        cursor = _sqlite3_execute(conn, sql)
        try:
            row = cursor.fetchone()
        finally:
            cursor.close()
        return None if row is None else tuple(row)

    def query_all(self, conn: sqlite3.Connection, sql: str) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in _sqlite3_execute(conn, sql).fetchall()]

    def in_transaction(self, conn: sqlite3.Connection) -> bool:
        return conn.in_transaction

    def is_busy(self, exc: BaseException) -> bool:
        if not isinstance(exc, sqlite3.OperationalError) or isinstance(exc, PoolTimeout):
            return False
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None:
            return code & 0xFF == sqlite3.SQLITE_BUSY
        return "database is locked" in str(exc)

    def close(self, conn: sqlite3.Connection) -> None:
        conn.close()

    def sqlite_version(self) -> str:
        return sqlite3.sqlite_version


def _apsw_backend() -> Backend:
    try:
        from ._backend_apsw import ApswBackend
    except ImportError as exc:
        raise ConfigurationError(
            f"backend='apsw' needs the apsw package ({exc}); install it with: pip install 'sqlitefair[apsw]'"
        ) from exc
    return ApswBackend()


_BACKENDS: dict[str, Callable[[], Backend]] = {
    "sqlite3": Sqlite3Backend,
    "apsw": _apsw_backend,
}


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:3] if part.isdigit())


def has_wal_reset_bug(sqlite_version: str) -> bool:
    """Whether this SQLite has the WAL-reset race (3.7.0 to 3.51.2, except 3.44.6+ and 3.50.7+ backports).

    With two or more connections writing one WAL database, a checkpoint that
    races a commit can lose committed transactions.  https://sqlite.org/wal.html#walresetbug
    """
    v = _version_tuple(sqlite_version)
    if v >= (3, 51, 3) or (3, 44, 6) <= v < (3, 45) or (3, 50, 7) <= v < (3, 51):
        return False
    return v >= (3, 7, 0)


def apsw_sqlite_version() -> str | None:
    """The SQLite version apsw bundles, read from its package metadata without importing it
    (importing apsw would turn the GIL back on in a free-threaded interpreter)."""
    from importlib import metadata

    try:
        return ".".join(metadata.version("apsw").split(".")[:3])
    except metadata.PackageNotFoundError:
        return None


def get_backend(name: str | Backend) -> Backend:
    """Return the backend called ``name`` ("sqlite3" or "apsw"), or ``name`` itself if it is one."""
    if isinstance(name, Backend):
        return name
    factory = _BACKENDS.get(name) if isinstance(name, str) else None
    if factory is None:
        raise ConfigurationError(f"unknown backend {name!r}; choose one of {sorted(_BACKENDS)}")
    return factory()
