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
from typing import Any

import apsw

from ._backends import Backend, gil_enabled
from ._busy import BusyPolicy, BusyTimeout
from ._errors import FreeThreadingWarning, PoolTimeout
from ._guard import not_checked_out

__all__ = ("ApswBackend", "ApswPoolTimeout", "PooledApswConnection", "PooledApswCursor")

_get_ident = threading.get_ident
_cursor_execute = apsw.Cursor.execute
_cursor_executemany = apsw.Cursor.executemany
_cursor_fetchone = apsw.Cursor.fetchone
_cursor_fetchall = apsw.Cursor.fetchall


class ApswPoolTimeout(PoolTimeout, apsw.BusyError):
    """:class:`sqlitefair.PoolTimeout` for apsw pools: also an ``apsw.BusyError``."""


class PooledApswConnection(apsw.Connection):
    """The apsw backend's connection: its cursors (which ``execute``, ``executemany`` and
    ``pragma`` use too) run SQL only for the thread that has it checked out (see ``_guard``)."""

    __slots__ = ("_sf_holder", "_sf_label")


class PooledApswCursor(apsw.Cursor):
    """The ``cursor_factory`` of :class:`PooledApswConnection`: refuses callers that lack the checkout."""

    __slots__ = ()

    def execute(self, *args: Any, **kwargs: Any) -> apsw.Cursor:
        if self.connection._sf_holder != _get_ident():
            raise not_checked_out(self.connection)
        return _cursor_execute(self, *args, **kwargs)

    def executemany(self, *args: Any, **kwargs: Any) -> apsw.Cursor:
        if self.connection._sf_holder != _get_ident():
            raise not_checked_out(self.connection)
        return _cursor_executemany(self, *args, **kwargs)

    def fetchone(self) -> Any:
        if self.connection._sf_holder != _get_ident():
            raise not_checked_out(self.connection)
        return _cursor_fetchone(self)

    def fetchall(self) -> list[Any]:
        if self.connection._sf_holder != _get_ident():
            raise not_checked_out(self.connection)
        return _cursor_fetchall(self)


class _BusyHandler:
    """SQLite's busy callback for one ``BEGIN IMMEDIATE``: the policy's interval, the caller's deadline."""

    __slots__ = ("policy", "deadline", "retries", "first_busy")

    def __init__(self, policy: BusyPolicy, deadline: float | None) -> None:
        self.policy = policy
        self.deadline = deadline
        self.retries = 0
        self.first_busy = 0.0

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


class ApswBackend(Backend):
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

    def connect(self, target: str, *, uri: bool, busy_timeout: float, label: str = "") -> apsw.Connection:
        flags = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
        if uri:
            flags |= apsw.SQLITE_OPEN_URI
        conn = PooledApswConnection(target, flags=flags)
        conn._sf_holder = None
        conn._sf_label = label or "a pooled connection"
        conn.cursor_factory = PooledApswCursor
        conn.set_busy_timeout(int(busy_timeout * 1000))
        return conn

    def set_holder(self, conn: PooledApswConnection, holder: int | None) -> None:
        conn._sf_holder = holder

    # The pool's own statements use a plain apsw.Cursor: no checkout check.
    def execute(self, conn: apsw.Connection, sql: str) -> None:
        for _ in apsw.Cursor(conn).execute(sql):
            pass

    def query_one(self, conn: apsw.Connection, sql: str) -> tuple[Any, ...] | None:
        row = apsw.Cursor(conn).execute(sql).fetchone()
        return None if row is None else tuple(row)

    def query_all(self, conn: apsw.Connection, sql: str) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in apsw.Cursor(conn).execute(sql)]

    def in_transaction(self, conn: apsw.Connection) -> bool:
        return bool(conn.in_transaction)

    def is_busy(self, exc: BaseException) -> bool:
        return isinstance(exc, apsw.BusyError) and not isinstance(exc, PoolTimeout)

    def close(self, conn: apsw.Connection) -> None:
        conn.close()

    def sqlite_version(self) -> str:
        return apsw.sqlite_lib_version()

    def begin(self, conn: apsw.Connection, sql: str, policy: BusyPolicy, deadline: float | None) -> int:
        """Run ``sql`` with the policy installed as SQLite's busy handler for this one statement."""
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
