"""The ways of running the same transaction that the benchmark compares.

Each strategy opens its connections in :meth:`Instance.warm_up` (before the
clock starts) and then runs a workload body inside a write transaction or a
read for a given worker thread, returning how long it waited for the
transaction to begin.

Adding a strategy is one :func:`register` call; ``sqlitefair-apsw`` is the
pool with ``backend="apsw"`` and shows up by itself once that backend exists.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .workloads import Body, pragma_statements

__all__ = ("Strategy", "StrategyConfig", "Instance", "STRATEGIES", "register", "get_strategy", "classify_error")

#: Every strategy gives up after this many seconds (Python's sqlite3 default, and sqlitefair's).
TIMEOUT = 5.0
#: sqlite3-ruby's ``busy_handler_timeout`` sleeps this long between tries.
RUBY_RETRY = 0.001

perf_counter = time.perf_counter


@dataclass(frozen=True)
class StrategyConfig:
    """What a strategy instance needs to know: where, how many threads, how many readers."""

    path: str
    threads: int
    #: Reader connections for sqlitefair (``None``: the pool's default).
    readers: int | None = None
    timeout: float = TIMEOUT


class Instance:
    """One strategy set up in one process for ``threads`` worker threads."""

    #: Whether :meth:`write` can tell how long it waited for the write lock.
    measures_wait = True

    def warm_up(self) -> None:
        """Open every connection now, so connecting is not part of any measured transaction."""

    def write(self, worker: int, body: Body, *args: Any) -> float | None:
        """Run ``body(conn, *args)`` in a write transaction and commit; return the wait to begin."""
        raise NotImplementedError

    def read(self, worker: int, body: Body, *args: Any) -> float | None:
        """Run ``body(conn, *args)`` on a connection for reading; return the wait for it."""
        raise NotImplementedError

    def close(self) -> None:
        """Close every connection."""


def _raw_connect(path: str, busy_timeout: float) -> sqlite3.Connection:
    """A plain stdlib connection with sqlitefair's default pragmas, in autocommit mode.

    The set-up statements wait out other processes' locks (SQLite's handler, up to TIMEOUT):
    with a strategy's busy timeout of 0 (it retries in Python), a ``journal_mode`` pragma met
    another process starting up and failed at once with "database is locked". The strategy's own
    busy timeout applies from the first measured statement on."""
    conn = sqlite3.connect(path, timeout=max(busy_timeout, TIMEOUT), isolation_level=None, check_same_thread=False)
    for statement in pragma_statements():
        conn.execute(statement).fetchall()
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}").fetchall()
    return conn


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass  # the error that brought us here is the one that gets reported


class PerThreadConnections(Instance):
    """Each worker thread owns one raw ``sqlite3`` connection, as most Python code does.

    ``begin`` is ``BEGIN`` (deferred) or ``BEGIN IMMEDIATE``; ``retry`` is
    ``None`` to rely on SQLite's busy handler (``busy_timeout`` seconds), or
    an interval to retry ``BEGIN`` by hand with the busy handler off, until
    ``timeout`` (sqlite3-ruby's approach).
    """

    def __init__(self, config: StrategyConfig, *, begin: str, retry: float | None) -> None:
        self._config = config
        self._begin_sql = begin
        self._retry = retry
        self._busy_timeout = 0.0 if retry is not None else config.timeout
        self._conns: list[sqlite3.Connection] = []
        # A deferred BEGIN takes no lock: the wait happens inside the statements, unseen.
        self.measures_wait = begin.upper() != "BEGIN"

    def warm_up(self) -> None:
        for _ in range(self._config.threads):
            conn = _raw_connect(self._config.path, self._busy_timeout)
            conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
            self._conns.append(conn)

    def _begin(self, conn: sqlite3.Connection) -> None:
        if self._retry is None:
            conn.execute(self._begin_sql)
            return
        deadline = perf_counter() + self._config.timeout
        while True:
            try:
                conn.execute(self._begin_sql)
                return
            except sqlite3.OperationalError as exc:
                if classify_error(exc) != "locked" or perf_counter() >= deadline:
                    raise
            time.sleep(self._retry)

    def write(self, worker: int, body: Body, *args: Any) -> float | None:
        conn = self._conns[worker]
        start = perf_counter()
        self._begin(conn)
        waited = perf_counter() - start
        try:
            body(conn, *args)
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        return waited if self.measures_wait else None

    def read(self, worker: int, body: Body, *args: Any) -> float | None:
        body(self._conns[worker], *args)
        return 0.0

    def close(self) -> None:
        for conn in self._conns:
            conn.close()
        self._conns.clear()


class UnfairLock(Instance):
    """One raw connection behind a ``threading.Lock``: fast, but a newcomer may overtake a waiter."""

    def __init__(self, config: StrategyConfig) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def warm_up(self) -> None:
        self._conn = _raw_connect(self._config.path, self._config.timeout)

    def write(self, worker: int, body: Body, *args: Any) -> float | None:
        conn = self._conn
        assert conn is not None
        start = perf_counter()
        with self._lock:
            conn.execute("BEGIN IMMEDIATE")
            waited = perf_counter() - start
            try:
                body(conn, *args)
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
        return waited

    def read(self, worker: int, body: Body, *args: Any) -> float | None:
        assert self._conn is not None
        start = perf_counter()
        with self._lock:
            waited = perf_counter() - start
            body(self._conn, *args)
        return waited

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class PoolInstance(Instance):
    """A sqlitefair pool with its defaults (one per process), on the given backend."""

    def __init__(
        self, config: StrategyConfig, *, backend: str, handoff: str | None = None, process_queue: bool = True
    ) -> None:
        import sqlitefair

        kwargs: dict[str, Any] = {"timeout": config.timeout, "backend": backend, "process_queue": process_queue}
        if handoff is not None:  # else the pool's default
            kwargs["handoff"] = handoff
        if config.readers is not None:
            kwargs["readers"] = config.readers
        self._pool = sqlitefair.connect(config.path, **kwargs)

    def warm_up(self) -> None:
        with self._pool.transaction():
            pass
        with contextlib.ExitStack() as stack:  # open every reader connection once
            for _ in range(self._pool.readers):
                stack.enter_context(self._pool.read())

    def write(self, worker: int, body: Body, *args: Any) -> float | None:
        start = perf_counter()
        with self._pool.transaction() as conn:
            waited = perf_counter() - start
            body(conn, *args)
        return waited

    def read(self, worker: int, body: Body, *args: Any) -> float | None:
        start = perf_counter()
        with self._pool.read() as conn:
            waited = perf_counter() - start
            body(conn, *args)
        return waited

    def close(self) -> None:
        self._pool.close()


class PoolWriteInstance(PoolInstance):
    """A sqlitefair pool whose writes go through ``pool.write(fn)`` (flat combining where it applies), with or
    without group commit; reads as :class:`PoolInstance`."""

    def __init__(self, config: StrategyConfig, *, group_commit: bool) -> None:
        import sqlitefair

        kwargs: dict[str, Any] = {"timeout": config.timeout, "group_commit": group_commit}
        if config.readers is not None:
            kwargs["readers"] = config.readers
        self._pool = sqlitefair.connect(config.path, **kwargs)

    def write(self, worker: int, body: Body, *args: Any) -> float | None:
        start = perf_counter()
        began: list[float] = []

        def call(conn: Any) -> None:  # runs on whichever thread combines: it notes when it began
            began.append(perf_counter())
            body(conn, *args)

        self._pool.write(call)
        return began[0] - start


def _backend_missing(name: str) -> Callable[[], str | None]:
    """An availability check: ``None`` if the binding behind backend ``name`` is installed, else
    why not (found without importing it: importing apsw turns the GIL back on in a free-threaded
    interpreter)."""

    def check() -> str | None:
        import importlib.util

        if importlib.util.find_spec(name) is None:
            return f"backend {name!r} unavailable: {name} is not installed (pip install 'sqlitefair[{name}]')"
        return None

    return check


@dataclass(frozen=True)
class Strategy:
    """A named way of doing the work, and how to set it up."""

    name: str
    description: str
    #: The binding's module: imported before the GIL is checked.
    backend_module: str
    make: Callable[[StrategyConfig], Instance] = field(repr=False)
    #: ``None`` when usable here, else the reason it is skipped.
    unavailable: Callable[[], str | None] = field(default=lambda: None, repr=False)
    #: Part of the default comparison of write-contention workloads.
    default: bool = True
    #: A sqlitefair pool (the verdict compares these against the rest).
    is_sqlitefair: bool = False
    #: Differs from another strategy in its writes only (left out of read-only workloads).
    writes_only: bool = False


STRATEGIES: dict[str, Strategy] = {}


def register(strategy: Strategy) -> Strategy:
    """Add a strategy (replacing one of the same name)."""
    STRATEGIES[strategy.name] = strategy
    return strategy


register(
    Strategy(
        "stdlib-deferred",
        "stdlib sqlite3, a connection per thread, BEGIN (deferred), 5 s busy timeout",
        "sqlite3",
        lambda c: PerThreadConnections(c, begin="BEGIN", retry=None),
    )
)
register(
    Strategy(
        "stdlib-immediate",
        "stdlib sqlite3, a connection per thread, BEGIN IMMEDIATE, SQLite's 5 s busy timeout",
        "sqlite3",
        lambda c: PerThreadConnections(c, begin="BEGIN IMMEDIATE", retry=None),
    )
)
register(
    Strategy(
        "ruby-1ms",
        "a connection per thread, BEGIN IMMEDIATE retried every 1 ms for 5 s (sqlite3-ruby)",
        "sqlite3",
        lambda c: PerThreadConnections(c, begin="BEGIN IMMEDIATE", retry=RUBY_RETRY),
    )
)
register(
    Strategy(
        "unfair-lock",
        "one raw connection behind a threading.Lock (fast, unfair)",
        "sqlite3",
        UnfairLock,
        default=False,
    )
)
register(
    Strategy(
        "sqlitefair",
        "sqlitefair pool, default settings (stdlib sqlite3)",
        "sqlite3",
        lambda c: PoolInstance(c, backend="sqlite3"),
        is_sqlitefair=True,
    )
)
register(
    Strategy(
        "sqlitefair-strict",
        "sqlitefair pool, handoff='strict': every release hands the writer to the oldest waiter "
        "(stdlib sqlite3)",
        "sqlite3",
        lambda c: PoolInstance(c, backend="sqlite3", handoff="strict"),
        is_sqlitefair=True,
        writes_only=True,
        default=False,  # a reference for the default hand-off, not a choice to compare at every size
    )
)
register(
    Strategy(
        "sqlitefair-noqueue",
        "sqlitefair pool, process_queue=False: processes ordered by the busy policy alone (stdlib sqlite3)",
        "sqlite3",
        lambda c: PoolInstance(c, backend="sqlite3", process_queue=False),
        is_sqlitefair=True,
        writes_only=True,
        default=False,  # a reference for the cross-process queue (the procs workload)
    )
)
for _name, _group, _how in (
    ("sqlitefair-write", False, "flat combining where the GIL is off"),
    ("sqlitefair-group", True, "flat combining and group_commit=True"),
):
    register(
        Strategy(
            _name,
            f"sqlitefair pool, writes through pool.write(fn): {_how} (stdlib sqlite3)",
            "sqlite3",
            lambda c, group=_group: PoolWriteInstance(c, group_commit=group),
            is_sqlitefair=True,
            writes_only=True,
        )
    )
register(
    Strategy(
        "sqlitefair-apsw",
        "sqlitefair pool, default settings, apsw backend",
        "apsw",
        lambda c: PoolInstance(c, backend="apsw"),
        unavailable=_backend_missing("apsw"),
        is_sqlitefair=True,
    )
)


def get_strategy(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}") from None


def classify_error(exc: BaseException) -> str:
    """``"locked"`` (SQLITE_BUSY / "database is locked"), ``"timeout"`` (sqlitefair's
    PoolTimeout) or ``"other"``: the error columns of the report."""
    from sqlitefair import PoolTimeout

    if isinstance(exc, PoolTimeout):
        return "timeout"
    if type(exc).__name__ in ("BusyError", "LockedError"):  # apsw, without importing it
        return "locked"
    if isinstance(exc, sqlite3.OperationalError):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return "locked"
        text = str(exc)
        if "database is locked" in text or "database table is locked" in text:
            return "locked"
    return "other"
