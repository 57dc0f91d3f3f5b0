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
from ._guard import OWN_SQL_SUFFIX, PooledSqlite3Connection, TxnPolice

__all__ = ("Backend", "Sqlite3Backend", "get_backend", "gil_enabled", "has_wal_reset_bug", "apsw_sqlite_version")

#: A connection object of whichever binding the pool uses.
Connection = Any

# The binding's own methods, for the pool's statements (no checkout check).
_sqlite3_execute = sqlite3.Connection.execute
_sqlite3_set_authorizer = sqlite3.Connection.set_authorizer

#: Roles ``Backend.connect`` accepts (None: a connection that does not police transaction control).
ROLES = ("writer", "reader", None)


def check_role(role: str | None) -> None:
    if role not in ROLES:
        raise ValueError(f"role must be 'writer', 'reader' or None, not {role!r}")


#: The pool's own statements as it sends them (``_own_sql``): a few dozen (BEGIN, COMMIT, savepoints
#: by depth, pragmas); bounded all the same.
_own_sql_cache: dict[str, str] = {}
_OWN_SQL_CACHE_MAX = 512


def _own_sql(sql: str) -> str:
    """``sql`` as the pool's own statement (its own statement-cache entry); cached for the hot path."""
    own = _own_sql_cache.get(sql)
    if own is None:
        own = sql + OWN_SQL_SUFFIX
        if len(_own_sql_cache) < _OWN_SQL_CACHE_MAX:
            _own_sql_cache[sql] = own
    return own


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

    def connect(
        self, target: str, *, uri: bool, busy_timeout: float, label: str = "", role: str | None = None
    ) -> Connection:
        """Open a connection in autocommit mode, usable from any thread (one at a time).

        ``label`` ("the writer connection of 'app.db'") names it in errors.

        ``role`` ("writer" or "reader") makes the connection refuse transaction
        control with :class:`~sqlitefair.TransactionControlError` (see
        ``sqlitefair._guard``): the writer refuses ``BEGIN``/``COMMIT``/``ROLLBACK``,
        ``commit()``/``rollback()``, any use of savepoints named ``sqlitefair...``
        and changes of ``query_only``/``journal_mode``/``locking_mode``; a reader
        refuses those pragma changes only.  Policing starts with
        :meth:`start_policing` (call it after the ``on_connect`` hook, which so
        still runs on a plain connection), on the writer at its first
        :meth:`begin` at the latest.  The pool's own statements must go through
        :meth:`execute`, :meth:`query_one`, :meth:`query_all` and :meth:`begin`,
        which the policing lets through.  None (the default) polices nothing."""
        raise NotImplementedError

    def start_policing(self, conn: Connection) -> None:
        """Start refusing transaction control on ``conn`` (opened with a ``role``; else nothing).
        Idempotent.  Statements prepared before are checked again at their next run."""

    def is_closed(self, conn: Connection) -> bool:
        """Whether ``conn`` has been closed (by the pool, or by user code calling ``close()``)."""
        raise NotImplementedError

    def set_holder(self, conn: Connection, holder: int | None) -> None:
        """Record the thread (``threading.get_ident()``) that has ``conn`` checked out, or None
        when the pool has it back; backends whose connections check it refuse other callers."""

    def execute(self, conn: Connection, sql: str) -> None:
        """Run one statement of the pool's own and discard any rows (transaction control allowed)."""
        raise NotImplementedError

    def query_one(self, conn: Connection, sql: str) -> tuple[Any, ...] | None:
        """Run one statement of the pool's own and return its first row."""
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
        locks with ``policy``; return the number of BUSY retries.  The first call
        on a writer starts its transaction-control policing."""
        return retry_while_busy(lambda: self.execute(conn, sql), self.is_busy, policy, deadline)


class GuardedBackend(Backend):
    """A backend whose pooled connections (``_guard``'s classes) keep their holder in ``_sf_holder``
    and their transaction-control police in ``_sf_police``: both bindings."""

    def set_holder(self, conn: Connection, holder: int | None) -> None:
        conn._sf_holder = holder
        police = conn._sf_police
        if police is not None:
            police.refused = None  # a refusal that surfaced untranslated must not name a later error


class Sqlite3Backend(GuardedBackend):
    """The standard library's ``sqlite3``: the default, and GIL-free on free-threaded builds."""

    name = "sqlite3"
    error = sqlite3.Error

    def connect(
        self, target: str, *, uri: bool, busy_timeout: float, label: str = "", role: str | None = None
    ) -> sqlite3.Connection:
        check_role(role)
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
        if role is not None:
            police = TxnPolice(role, conn._sf_label)
            conn._sf_police = police  # installed as the authorizer by start_policing()
        return conn

    def start_policing(self, conn: PooledSqlite3Connection) -> None:
        police = conn._sf_police
        if police is not None and police.pending:
            police.activate()
            _sqlite3_set_authorizer(conn, police.make_authorizer())  # SQLite re-checks the statements prepared so far

    # The pool's own statements.  On a policed connection they end in OWN_SQL_SUFFIX (their own
    # statement-cache entries) and run with police.own set, so the authorizer lets them through.
    def execute(self, conn: sqlite3.Connection, sql: str) -> None:
        police = getattr(conn, "_sf_police", None)
        if police is None:
            _sqlite3_execute(conn, sql).close()
            return
        police.own = True
        try:  # (a cached string: its hash, which the statement cache looks up, is computed once)
            _sqlite3_execute(conn, _own_sql_cache.get(sql) or _own_sql(sql)).close()
        finally:
            police.own = False

    def begin(self, conn: sqlite3.Connection, sql: str, policy: BusyPolicy, deadline: float | None) -> int:
        police = getattr(conn, "_sf_police", None)
        try:  # the uncontended case without the retry machinery: it is on every transaction's path
            if police is None:
                _sqlite3_execute(conn, sql)
                return 0
            if police.pending:  # the writer's first transaction, and the pool did not start_policing()
                self.start_policing(conn)
            police.own = True
            police.refused = None  # set_holder()'s clearing, here: the pool's hot path sets the holder itself
            try:
                _sqlite3_execute(conn, _own_sql_cache.get(sql) or _own_sql(sql))
            finally:
                police.own = False
            return 0
        except sqlite3.OperationalError as exc:
            if not self.is_busy(exc):
                raise
        return 1 + super().begin(conn, sql, policy, deadline)

    def query_one(self, conn: sqlite3.Connection, sql: str) -> tuple[Any, ...] | None:
        police = getattr(conn, "_sf_police", None)
        if police is not None:
            police.own = True
            sql += OWN_SQL_SUFFIX
        try:
            cursor = _sqlite3_execute(conn, sql)
            try:
                row = cursor.fetchone()
            finally:
                cursor.close()
        finally:
            if police is not None:
                police.own = False
        return None if row is None else tuple(row)

    def query_all(self, conn: sqlite3.Connection, sql: str) -> list[tuple[Any, ...]]:
        police = getattr(conn, "_sf_police", None)
        if police is not None:
            police.own = True
            sql += OWN_SQL_SUFFIX
        try:
            return [tuple(row) for row in _sqlite3_execute(conn, sql).fetchall()]
        finally:
            if police is not None:
                police.own = False

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

    def is_closed(self, conn: sqlite3.Connection) -> bool:
        try:
            conn.in_transaction  # noqa: B018 - raises ProgrammingError on a closed connection
        except sqlite3.ProgrammingError:
            return True
        return False

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
