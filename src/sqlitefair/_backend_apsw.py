"""The apsw backend: ``sqlitefair.connect(path, backend="apsw")``.

apsw bundles a current SQLite (3.54 at the time of writing, free of the
WAL-reset bug) and exposes ``set_busy_handler``, so the busy policy runs
*inside* SQLite's own retry loop: SQLite calls the handler with the GIL held,
the handler decides at once and sleeps with ``time.sleep``, which releases
the GIL, so other Python threads keep running while a writer waits for
another process.

apsw has no free-threading support yet: importing it turns the GIL back on
in a free-threaded interpreter.  Choosing this backend there warns; the
stdlib ``sqlite3`` backend stays the default.
"""

from __future__ import annotations

import sysconfig
import threading
import time
import warnings
from typing import Any, Callable

import apsw

from ._backends import GuardedBackend, _own_sql, _own_sql_cache, check_role, gil_enabled
from ._busy import BusyPolicy, BusyTimeout
from ._errors import FreeThreadingWarning, PoolTimeout, TransactionControlError
from ._guard import OWN_SQL_SUFFIX, TRANSACTION_LOST, TxnPolice, not_checked_out, note_failure
from ._interrupts import interruptible

__all__ = (
    "ApswBackend",
    "ApswPoolTimeout",
    "ApswTransactionControlError",
    "PooledApswConnection",
    "PooledApswCursor",
)

_get_ident = threading.get_ident
_cursor_execute = apsw.Cursor.execute
_cursor_executemany = apsw.Cursor.executemany
_cursor_fetchone = apsw.Cursor.fetchone
_cursor_fetchall = apsw.Cursor.fetchall
_authorizer = apsw.Connection.authorizer  # a getset descriptor


class ApswPoolTimeout(PoolTimeout, apsw.BusyError):
    """:class:`sqlitefair.PoolTimeout` for apsw pools: also an ``apsw.BusyError``."""


class ApswTransactionControlError(TransactionControlError, apsw.AuthError):
    """:class:`sqlitefair.TransactionControlError` for apsw pools: also an ``apsw.AuthError``
    (SQLite's authorizer refused the statement)."""


def _refusal(conn: Any, exc: apsw.Error) -> TransactionControlError | None:
    """The error to raise instead of ``exc`` (a refusal), or None; notes a transaction SQLite ended."""
    police = conn._sf_police
    error = None if police is None else police.take_error(exc, ApswTransactionControlError)
    if error is None and police is not None:
        note_failure(conn)
    return error


def _rollback_hook(conn: Any, police: TxnPolice) -> Callable[[], None]:
    """The writer's rollback hook: refuse the rest of a block whose transaction SQLite rolled back itself."""

    def hook() -> None:
        if not police.own and conn._sf_holder is not None:
            conn._sf_holder = TRANSACTION_LOST

    return hook


class PooledApswConnection(apsw.Connection):
    """The apsw backend's connection: its cursors (which ``execute``, ``executemany`` and
    ``pragma`` use too) run SQL only for the thread that has it checked out, and (opened with
    a role) refuse transaction control with :class:`~sqlitefair.TransactionControlError`
    (see ``_guard``).

    ``with conn:`` is allowed on the writer: apsw makes it a SAVEPOINT (named
    ``_apsw-N``), released at the end or rolled back if the body raises, so it
    nests inside the pool's transaction and undoes only its own part.

    ``authorizer`` / ``set_authorizer()`` install the user's authorizer behind
    the pool's: the pool's decides first (and alone for the pool's own
    statements); what it allows, the user's decides.
    """

    __slots__ = ("_sf_holder", "_sf_label", "_sf_police")

    @property  # type: ignore[override]
    def authorizer(self) -> Any:
        police = self._sf_police
        return _authorizer.__get__(self) if police is None else police.user

    @authorizer.setter
    def authorizer(self, callable: Any) -> None:
        self.set_authorizer(callable)

    def set_authorizer(self, callable: Any) -> None:  # type: ignore[override]
        police = self._sf_police
        if police is None:
            _authorizer.__set__(self, callable)
            return
        police.user = callable
        police.refused = None
        # Not policing yet (an on_connect hook): the user's alone; start_policing() composes them.
        # Re-installing makes SQLite re-check the statements in the cache.
        _authorizer.__set__(self, callable if police.pending else police.make_authorizer())

    setauthorizer = set_authorizer  # apsw's old name


class PooledApswCursor(apsw.Cursor):
    """The ``cursor_factory`` of :class:`PooledApswConnection`: refuses callers that lack the checkout,
    and turns the authorizer's refusals into :class:`~sqlitefair.TransactionControlError`.

    ``execute`` runs a string of several statements one at a time, each seen by
    the authorizer: ``"insert ...; COMMIT; insert ..."`` runs the first insert
    (inside the block's transaction) and is refused at ``COMMIT``.  A refusal
    met while iterating (``for row in cursor`` after ``"select ...; COMMIT"``)
    is refused just the same, but surfaces as apsw's ``AuthError``.
    """

    __slots__ = ()

    def execute(self, *args: Any, **kwargs: Any) -> apsw.Cursor:
        conn = self.connection
        if conn._sf_holder != _get_ident():
            raise not_checked_out(conn)
        try:
            return _cursor_execute(self, *args, **kwargs)
        except apsw.Error as exc:
            error = _refusal(conn, exc)
            if error is None:
                raise
        raise error

    def executemany(self, *args: Any, **kwargs: Any) -> apsw.Cursor:
        conn = self.connection
        if conn._sf_holder != _get_ident():
            raise not_checked_out(conn)
        try:
            return _cursor_executemany(self, *args, **kwargs)
        except apsw.Error as exc:
            error = _refusal(conn, exc)
            if error is None:
                raise
        raise error

    def fetchone(self) -> Any:
        conn = self.connection
        if conn._sf_holder != _get_ident():
            raise not_checked_out(conn)
        try:
            return _cursor_fetchone(self)
        except apsw.Error as exc:  # a refusal of the next statement of a multi-statement string, or a failure
            error = _refusal(conn, exc)
            if error is None:
                raise
        raise error

    def fetchall(self) -> list[Any]:
        conn = self.connection
        if conn._sf_holder != _get_ident():
            raise not_checked_out(conn)
        try:
            return _cursor_fetchall(self)
        except apsw.Error as exc:
            error = _refusal(conn, exc)
            if error is None:
                raise
        raise error


class _BusyHandler:
    """SQLite's busy callback for one ``BEGIN IMMEDIATE``: the policy's interval, the caller's deadline."""

    __slots__ = ("policy", "deadline", "retries", "first_busy")

    def __init__(self, policy: BusyPolicy, deadline: float | None) -> None:
        self.policy = policy
        self.deadline = deadline
        self.retries = 0
        self.first_busy = 0.0

    @interruptible  # a Ctrl-C while waiting for another process lands here at once
    def __call__(self, count: int) -> bool:
        now = time.monotonic()
        if count == 0:
            self.first_busy = now
        pause = self.policy.delay(count + 1, now - self.first_busy)
        if pause is None or (self.deadline is not None and now >= self.deadline):
            return False  # SQLite gives up and raises BusyError
        if self.deadline is not None:
            pause = min(pause, self.deadline - now)
        self.retries = count + 1
        time.sleep(pause)  # releases the GIL
        return True


class ApswBackend(GuardedBackend):
    """apsw: a current bundled SQLite and a real busy-handler hook."""

    name = "apsw"
    timeout_error = ApswPoolTimeout
    error = apsw.Error

    def __init__(self) -> None:
        if sysconfig.get_config_var("Py_GIL_DISABLED") and gil_enabled():
            warnings.warn(
                "the apsw backend re-enabled the GIL on this free-threaded interpreter "
                "(apsw does not support free-threading yet): readers will not run in parallel. "
                "Use the default backend='sqlite3' to keep the GIL off.",
                FreeThreadingWarning,
                stacklevel=6,  # the caller of sqlitefair.connect()
            )

    def connect(
        self, target: str, *, uri: bool, busy_timeout: float, label: str = "", role: str | None = None
    ) -> apsw.Connection:
        check_role(role)
        flags = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
        if uri:
            flags |= apsw.SQLITE_OPEN_URI
        conn = PooledApswConnection(target, flags=flags)
        conn._sf_holder = None
        conn._sf_label = label or "a pooled connection"
        conn._sf_police = None
        conn.cursor_factory = PooledApswCursor
        conn.set_busy_timeout(int(busy_timeout * 1000))
        if role is not None:
            police = TxnPolice(role, conn._sf_label)
            conn._sf_police = police  # installed as the authorizer by start_policing()
        return conn

    def start_policing(self, conn: PooledApswConnection) -> None:
        police = conn._sf_police
        if police is not None and police.pending:
            police.activate()
            _authorizer.__set__(conn, police.make_authorizer())  # SQLite re-checks the statements prepared so far
            if police.txn:
                conn.set_rollback_hook(_rollback_hook(conn, police))

    # A rollback that is not the pool's own (police.own): SQLite ended the block's transaction by itself
    # (OR ROLLBACK, RAISE(ROLLBACK), an interrupt, a full disk), on any path, iteration included.

    # The pool's own statements use a plain apsw.Cursor (no checkout check).  On a policed
    # connection they end in OWN_SQL_SUFFIX (their own statement-cache entries) and run with
    # police.own set, so the transaction-control authorizer lets them through.
    def execute(self, conn: apsw.Connection, sql: str) -> None:
        police = getattr(conn, "_sf_police", None)
        if police is not None:
            police.own = True
            sql = _own_sql_cache.get(sql) or _own_sql(sql)
        try:
            for _ in apsw.Cursor(conn).execute(sql):
                pass
        finally:
            if police is not None:
                police.own = False

    def query_one(self, conn: apsw.Connection, sql: str) -> tuple[Any, ...] | None:
        police = getattr(conn, "_sf_police", None)
        if police is not None:
            police.own = True
            sql += OWN_SQL_SUFFIX
        try:
            row = apsw.Cursor(conn).execute(sql).fetchone()
        finally:
            if police is not None:
                police.own = False
        return None if row is None else tuple(row)

    def query_all(self, conn: apsw.Connection, sql: str) -> list[tuple[Any, ...]]:
        police = getattr(conn, "_sf_police", None)
        if police is not None:
            police.own = True
            sql += OWN_SQL_SUFFIX
        try:
            return [tuple(row) for row in apsw.Cursor(conn).execute(sql)]
        finally:
            if police is not None:
                police.own = False

    def in_transaction(self, conn: apsw.Connection) -> bool:
        return bool(conn.in_transaction)

    def is_busy(self, exc: BaseException) -> bool:
        return isinstance(exc, apsw.BusyError) and not isinstance(exc, PoolTimeout)

    def close(self, conn: apsw.Connection) -> None:
        conn.close()

    def is_closed(self, conn: apsw.Connection) -> bool:
        try:
            conn.in_transaction  # noqa: B018 - raises ConnectionClosedError once closed
        except apsw.ConnectionClosedError:
            return True
        return False

    def sqlite_version(self) -> str:
        return apsw.sqlite_lib_version()

    def begin(self, conn: apsw.Connection, sql: str, policy: BusyPolicy, deadline: float | None) -> int:
        """Run ``sql`` with the policy installed as SQLite's busy handler for this one statement.
        The first call on a writer starts its transaction-control policing."""
        police = getattr(conn, "_sf_police", None)
        if police is not None:
            police.refused = None  # set_holder()'s clearing, here: the pool's hot path sets the holder itself
            if police.pending:  # the pool did not start_policing() the writer
                self.start_policing(conn)
        if policy.sqlite_busy_timeout(None) > 0:  # SQLite's own handler was set at connect time
            started = time.monotonic()
            try:
                self.execute(conn, sql)
            except apsw.BusyError as exc:
                raise BusyTimeout(0, time.monotonic() - started) from exc
            return 0
        handler = _BusyHandler(policy, deadline)
        conn.set_busy_handler(handler)
        try:
            self.execute(conn, sql)
        except apsw.BusyError as exc:
            raise BusyTimeout(handler.retries, time.monotonic() - handler.first_busy) from exc
        finally:
            conn.set_busy_handler(None)
        return handler.retries
