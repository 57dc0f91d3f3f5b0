"""The exceptions and warnings sqlitefair raises.

Each subclasses the standard exception that existing code already catches:
a :class:`PoolTimeout` is a ``sqlite3.OperationalError`` (like SQLite's own
"database is locked") and a ``TimeoutError``; a :class:`ConfigurationError` is
a ``ValueError``.  Messages say what was waited for, for how long, who held it
and what to do.  All of them pickle (extra fields live in ``__dict__``).
"""

from __future__ import annotations

import sqlite3

__all__ = (
    "SqlitefairError",
    "PoolTimeout",
    "PoolClosed",
    "NotCheckedOut",
    "TransactionControlError",
    "NestingError",
    "ConfigurationError",
    "OpenError",
    "FreeThreadingWarning",
    "WalResetBugWarning",
)


class SqlitefairError(Exception):
    """Base class of every exception sqlitefair raises itself."""


class PoolTimeout(SqlitefairError, sqlite3.OperationalError, TimeoutError):
    """Waiting for the writer, a reader or the database's write lock took longer than ``timeout``.

    Attributes (``None`` where they do not apply):

    * ``waiting_for``: ``"writer"``, ``"reader"``, ``"write lock"`` (another
      connection, usually another process, held SQLite's lock) or ``"close"``.
    * ``waited``: seconds waited in total.
    * ``timeout``: the limit that was exceeded.
    * ``queued``: threads of this process still queued for the same thing.
    * ``holder``: name of the thread holding it in this process, ``held_for`` seconds.
    * ``busy_retries``: how often SQLite answered SQLITE_BUSY before giving up.
    """

    waiting_for: str | None = None
    waited: float | None = None
    timeout: float | None = None
    queued: int | None = None
    holder: str | None = None
    held_for: float | None = None
    busy_retries: int | None = None

    def __init__(self, message: str, **fields: object) -> None:
        super().__init__(message)
        for name, value in fields.items():
            if not hasattr(type(self), name):
                raise TypeError(f"unknown PoolTimeout field {name!r}")
            setattr(self, name, value)

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class PoolClosed(SqlitefairError, sqlite3.ProgrammingError):
    """The pool was used after ``close()``."""


class NotCheckedOut(SqlitefairError, sqlite3.ProgrammingError):
    """A pooled connection (or one of its cursors) was used outside the ``with`` block that
    handed it out, or by a thread other than the one that entered the block.  Nothing was run."""


class TransactionControlError(SqlitefairError, sqlite3.ProgrammingError):
    """Code inside a write block tried to end or change the pool's transaction (``commit()``,
    ``rollback()``, ``COMMIT``/``ROLLBACK``/``END``/``BEGIN``, ``RELEASE`` of the pool's savepoint,
    ``with conn:``, changing ``query_only``/``journal_mode``), or the pool found at the end of the
    block that its transaction had been ended anyway.  Refused before anything was committed; the
    block rolls back.  (Django's ``atomic()`` raises ``TransactionManagementError`` for the same.)"""


class NestingError(SqlitefairError, sqlite3.ProgrammingError):
    """Blocks of one transaction were nested out of last-in-first-out order (two asyncio tasks
    inside one ``async with apool.transaction()``, interleaved generators), so their savepoints
    would interleave.  Refused; nothing of the refused block ran."""


class ConfigurationError(SqlitefairError, ValueError):
    """An argument to :func:`sqlitefair.connect` (or a pragma) is invalid."""


class OpenError(SqlitefairError, sqlite3.OperationalError):
    """The database file could not be opened or set up (missing directory, not a database, ...)."""


class FreeThreadingWarning(RuntimeWarning):
    """A choice (the apsw backend) turned the GIL back on in a free-threaded interpreter."""


class WalResetBugWarning(RuntimeWarning):
    """The linked SQLite has the WAL-reset bug and several connections write this database."""
