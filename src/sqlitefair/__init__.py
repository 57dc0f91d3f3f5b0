"""sqlitefair: a fair SQLite connection pool.

One writer connection that threads queue for in FIFO order, every write in
``BEGIN IMMEDIATE``; several read-only reader connections that run in
parallel; a fair busy policy for waiting on other processes; statistics of
who waited how long.

>>> import sqlitefair
>>> pool = sqlitefair.connect("app.db", readers=4, timeout=5.0)   # doctest: +SKIP
>>> with pool.transaction() as conn:                              # doctest: +SKIP
...     conn.execute("insert into t(v) values (?)", ("x",))
"""

from __future__ import annotations

from types import MappingProxyType

from . import _defaults
from ._backends import Backend, gil_enabled, has_wal_reset_bug
from ._busy import BusyPolicy, ConstantRetry, FairRetry, SQLiteBusyTimeout
from ._errors import (
    ConfigurationError,
    FreeThreadingWarning,
    GroupCommitError,
    NestingError,
    NotCheckedOut,
    OpenError,
    PoolClosed,
    PoolTimeout,
    ProcessQueueWarning,
    SqlitefairError,
    TransactionControlError,
    WalResetBugWarning,
)
from ._fairlock import (
    CancelScope,
    FairLock,
    FairSemaphore,
    LockStatistics,
    LockTimeout,
    Permit,
    WaitCancelled,
    WouldBlock,
)
from ._pool import Pool, connect
from ._stats import PoolStats, WaitStats

__version__ = "0.1.0.dev0"

#: The pragmas every pool applies unless told otherwise (read-only view).
DEFAULT_PRAGMAS = MappingProxyType(dict(_defaults.PRAGMAS))

__all__ = (
    "connect",
    "Pool",
    "PoolStats",
    "WaitStats",
    "BusyPolicy",
    "FairRetry",
    "ConstantRetry",
    "SQLiteBusyTimeout",
    "Backend",
    "FairLock",
    "FairSemaphore",
    "Permit",
    "LockStatistics",
    "LockTimeout",
    "WouldBlock",
    "CancelScope",
    "WaitCancelled",
    "SqlitefairError",
    "PoolTimeout",
    "PoolClosed",
    "NotCheckedOut",
    "TransactionControlError",
    "NestingError",
    "GroupCommitError",
    "ConfigurationError",
    "OpenError",
    "FreeThreadingWarning",
    "WalResetBugWarning",
    "ProcessQueueWarning",
    "DEFAULT_PRAGMAS",
    "gil_enabled",
    "has_wal_reset_bug",
    "__version__",
)
