"""The exceptions and warnings sqlitefair raises.

Each subclasses the standard exception that existing code already catches:
a :class:`PoolTimeout` is a ``sqlite3.OperationalError`` (like SQLite's own
"database is locked") and a ``TimeoutError``; a :class:`ConfigurationError` is
a ``ValueError``.  Messages say what was waited for, for how long, who held it
and what to do.  All of them pickle (extra fields live in ``__dict__``).
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

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
    "ProcessQueueWarning",
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
    """Blocks were nested in a way that cannot work: blocks of one transaction out of
    last-in-first-out order (two asyncio tasks inside one ``async with apool.transaction()``,
    interleaved generators), so their savepoints would interleave; or more ``read()`` blocks
    nested in one thread (or asyncio task) than the pool has readers, so the innermost would
    wait for its own caller.  Refused; nothing of the refused block ran."""


class GroupCommitError(SqlitefairError):
    """The group commit that contained a ``Pool.write()`` call failed: nothing of the call was
    committed.  The failure itself is the ``__cause__``."""


class ConfigurationError(SqlitefairError, ValueError):
    """An argument to :func:`sqlitefair.connect` (or a pragma) is invalid."""


class OpenError(SqlitefairError, sqlite3.OperationalError):
    """The database file could not be opened or set up (missing directory, not a database, ...)."""


class FreeThreadingWarning(RuntimeWarning):
    """A choice (the apsw backend) turned the GIL back on in a free-threaded interpreter."""


class WalResetBugWarning(RuntimeWarning):
    """The linked SQLite has the WAL-reset bug and a connection outside sqlitefair's writer queue
    writes this database too."""


class ProcessQueueWarning(RuntimeWarning):
    """The cross-process writer queue is off for a database (its side file cannot be used, or it
    lives on a network file system): writers of different processes are then ordered by the busy
    policy alone."""


# -- messages that carry live numbers ------------------------------------------------------------


def queue_timeout_error(backend: Any, name: str, what: str, waited: float, timeout: float | None, stats: Any) -> PoolTimeout:
    """The error for a wait in this process's queue (``what``: "writer" or "reader") that timed out.

    ``stats`` is the :class:`~sqlitefair.LockStatistics` seen as the wait gave up."""
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
    error: PoolTimeout = backend.timeout_error(
        f"Timed out after {waited:.2f} s waiting for {subject} of {name!r} (timeout={timeout} s): "
        f"{held}; {stats.waiting} more thread(s) queued. {advice}",
        waiting_for=what,
        waited=waited,
        timeout=timeout,
        queued=stats.waiting,
        holder=None if oldest is None else oldest.thread_name,
        held_for=None if oldest is None else now - oldest.since,
    )
    return error


def reads_nested_error(name: str, readers: int, caller: str = "thread") -> NestingError:
    """The error for a ``read()`` nested in as many open ``read()`` blocks of the same caller as
    the pool has readers: it could only wait for its own caller, until the timeout."""
    return NestingError(
        f"pool.read() was nested in {readers} open read() block(s) of the same {caller} on {name!r}, "
        f"which has readers={readers}: every reader connection is checked out by this {caller}, so "
        "waiting for one would wait for itself until the timeout. Nothing was run. Use the enclosing "
        "block's connection, or pass a larger readers= to connect()."
    )


def process_queue_timeout_error(backend: Any, name: str, waited: float, queued: float, timeout: float | None) -> PoolTimeout:
    """The error for a deadline that passed while writers of other processes were ahead in the
    cross-process queue (``queued``: seconds of the wait spent there)."""
    error: PoolTimeout = backend.timeout_error(
        f"Timed out after {waited:.2f} s waiting for the writer of {name!r} (timeout={timeout} s), "
        f"{queued:.2f} s of it in sqlitefair's cross-process queue, behind the writers of other pools on "
        "the file (usually other processes): one held its transaction that long, or many were ahead. "
        "Keep write transactions short in every process that uses this file, or pass a longer timeout.",
        waiting_for="writer",
        waited=waited,
        timeout=timeout,
    )
    return error


def busy_timeout_error(
    backend: Any, name: str, policy: Any, what: str, exc: Any, start: float, deadline: float | None, queued: int | None = None
) -> PoolTimeout:
    """The error for a deadline that passed while another connection held SQLite's write lock.

    ``exc`` is the busy loop's :class:`~sqlitefair._busy.BusyTimeout` (retries, seconds busy)."""
    waited = time.monotonic() - start
    timeout = None if deadline is None else deadline - start
    error: PoolTimeout = backend.timeout_error(
        f"Timed out after {waited:.2f} s waiting for the database write lock of {name!r}: another "
        f"connection (most likely another process) held it through {exc.retries} retries over "
        f"{exc.busy_for:.2f} s (busy policy {policy.name}). Keep write transactions short in "
        "every process that uses this file, or pass a longer timeout.",
        waiting_for=what,
        waited=waited,
        timeout=timeout,
        busy_retries=exc.retries,
        queued=queued,
    )
    return error
