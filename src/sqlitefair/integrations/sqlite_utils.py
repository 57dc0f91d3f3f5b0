"""sqlite-utils on a sqlitefair pool: ``sqlite_utils.Database`` objects bound to pooled connections.

>>> from sqlitefair.integrations import sqlite_utils as sfu
>>> dbpool = sfu.connect("data.db", readers=4, timeout=5.0)      # doctest: +SKIP
>>> with dbpool.write() as db:        # one BEGIN IMMEDIATE transaction   # doctest: +SKIP
...     db["items"].insert_all(rows, pk="id")
...     db["items"].create_index(["name"], if_not_exists=True)
>>> with dbpool.read() as db:         # a read-only connection, in parallel   # doctest: +SKIP
...     names = [row["name"] for row in db["items"].rows]
>>> dbpool.close()                                               # doctest: +SKIP

How it works:

* ``write()`` queues for the pool's writer (FIFO), which sends ``BEGIN
  IMMEDIATE``; the block gets the ``Database`` of the writer connection and
  commits when it ends, or rolls back on an exception.  sqlite-utils 4.x
  nests its own transactions (``insert``, ``upsert``, ``atomic()``,
  ``transform`` ...) as ``SAVEPOINT`` inside an open transaction, so all the
  block's writes commit or roll back together.
* ``read()`` checks out one of the read-only (``PRAGMA query_only``)
  connections; inside ``write()`` on the same thread it returns the writer's
  ``Database`` (so it sees the block's own writes).
* Each pooled connection gets one ``Database`` object, built when the pool
  opens the connection (sqlite-utils runs ``PRAGMA recursive_triggers=on``
  and its plugins' ``prepare_connection`` hooks then, not on every checkout).
  That object works only in the thread that has it checked out, and only
  inside its ``with`` block: anywhere else it raises :class:`NotCheckedOut`.
* Inside ``write()``, ``db.begin()``, ``db.commit()``, ``db.rollback()`` and
  ``db.execute("COMMIT")`` (or ``BEGIN``/``END``/``ROLLBACK``) raise
  :class:`TransactionControlError` instead of breaking the block's atomicity.

sqlite-utils 3.x is refused: its write methods end in ``with conn:``, which
commits whatever transaction is open, the pool's included.  4.0 and 4.1 are
refused too: their ``transform()`` inside a transaction fires ``ON DELETE``
actions of the tables that reference the transformed one (fixed in 4.1.1).
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
from importlib import metadata
from types import TracebackType
from typing import Any, Callable, Mapping, TypeVar

import sqlite_utils
import sqlite_utils.db

import sqlitefair
from sqlitefair import ConfigurationError, SqlitefairError, _defaults
from sqlitefair._pool import _UNSET, _Unset


T = TypeVar("T")
__all__ = (
    "connect",
    "wrap",
    "DatabasePool",
    "PooledDatabase",
    "PooledDatabaseError",
    "NotCheckedOut",
    "TransactionControlError",
    "UnsupportedSqliteUtils",
    "MIN_SQLITE_UTILS",
    "check_sqlite_utils_version",
)

#: The oldest sqlite-utils this integration accepts (see the module docstring for why).
MIN_SQLITE_UTILS: tuple[int, int, int] = (4, 1, 1)

_INSTALLED: Any = _Unset("<the installed version>")
_get_ident = threading.get_ident

# sqlite_utils.db.TransactionError exists from 4.0 on; on older versions connect() refuses anyway.
_TransactionError: type[Exception] = getattr(sqlite_utils.db, "TransactionError", Exception)

#: Options of ``sqlite_utils.Database`` that make sense for a pooled connection.
_DATABASE_OPTIONS = ("recursive_triggers", "tracer", "use_counts_table", "execute_plugins", "use_old_upsert", "strict")
_POOL_PARAMETERS = ("readers", "timeout", "pragmas", "busy_policy", "on_connect")


class UnsupportedSqliteUtils(SqlitefairError, RuntimeError):
    """The installed sqlite-utils cannot keep a write block atomic (too old)."""


class PooledDatabaseError(SqlitefairError, sqlite3.ProgrammingError):
    """A pooled ``Database`` was used in a way the pool cannot allow."""


class NotCheckedOut(PooledDatabaseError, sqlitefair.NotCheckedOut):
    """A pooled ``Database`` was used outside its ``with`` block, or from another thread.

    Also a :class:`sqlitefair.NotCheckedOut`, which its raw connection raises in the same cases."""


class TransactionControlError(  # type: ignore[misc, valid-type]
    PooledDatabaseError, sqlitefair.TransactionControlError, _TransactionError
):
    """Transaction control inside ``write()``, or the block's transaction ended before the block did.

    Also a :class:`sqlitefair.TransactionControlError` (which the pooled connection itself raises
    for ``db.conn.commit()`` and the like) and a ``sqlite_utils.db.TransactionError``.
    """


# -- version check ----------------------------------------------------------


def _parse_version(text: str) -> tuple[int, ...]:
    match = re.match(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?", text)
    if match is None:
        return ()
    return tuple(int(part) for part in match.groups() if part is not None)


def check_sqlite_utils_version(version: str | None = _INSTALLED) -> None:
    """Raise :class:`UnsupportedSqliteUtils` unless sqlite-utils ``version`` (default: the installed one) is supported."""
    if version is _INSTALLED:
        try:
            version = metadata.version("sqlite-utils")
        except metadata.PackageNotFoundError:  # vendored or run from a checkout: judge by features
            version = None
    if version is None:
        # 4.1.1 documents that transform() raises TransactionError rather than cascade.
        transform_doc = getattr(getattr(sqlite_utils.db, "Table", None), "transform", None).__doc__ or ""
        if hasattr(sqlite_utils.db, "TransactionError") and "TransactionError" in transform_doc:
            return
        raise UnsupportedSqliteUtils(
            "sqlitefair.integrations.sqlite_utils needs sqlite-utils "
            f"{'.'.join(map(str, MIN_SQLITE_UTILS))} or later; the imported sqlite_utils has no package "
            "metadata and lacks the transaction handling of 4.1.1 (Table.transform() refusing to fire ON "
            "DELETE actions inside a transaction). Install it with: pip install 'sqlite-utils>=4.1.1'"
        )
    parsed = _parse_version(version)
    if parsed and parsed + (0,) * (3 - len(parsed)) >= MIN_SQLITE_UTILS:
        return
    wanted = ".".join(map(str, MIN_SQLITE_UTILS))
    if parsed and parsed[0] >= 4:
        why = (
            "its Table.transform() inside a transaction (and every dbpool.write() block is one) "
            "drops the old table with foreign keys still enforced, so ON DELETE CASCADE / SET NULL "
            "actions of tables that reference it delete or change their rows (fixed in 4.1.1)"
        )
    else:
        why = (
            "sqlite-utils 3.x runs insert(), insert_all(), upsert(), create_table() and most other "
            "writes in `with conn:`, which COMMITs whatever transaction is open: the pool's BEGIN "
            "IMMEDIATE transaction would be committed halfway through a dbpool.write() block and the "
            "rest of the block would run outside any transaction, so an exception could no longer "
            "roll the block back"
        )
    raise UnsupportedSqliteUtils(
        f"sqlitefair.integrations.sqlite_utils needs sqlite-utils {wanted} or later, but {version} is "
        f"installed: {why}. Upgrade with: pip install 'sqlite-utils>={wanted}'"
    )


# -- the Database subclass ----------------------------------------------------

_SKIP = re.compile(r"(?:\s+|;|\ufeff|--[^\n]*(?:\n|\Z)|/\*.*?(?:\*/|\Z))*", re.S)
_WORD = re.compile(r"[A-Za-z_]+")


def _leading_words(sql: str, count: int) -> list[str]:
    """The first ``count`` keywords of ``sql``, upper-cased, skipping whitespace and comments."""
    words: list[str] = []
    pos = 0
    while len(words) < count:
        skip = _SKIP.match(sql, pos)
        pos = skip.end() if skip else pos
        word = _WORD.match(sql, pos)
        if word is None:
            break
        words.append(word.group().upper())
        pos = word.end()
    return words


def _ends_or_starts_transaction(sql: str) -> str | None:
    """``"BEGIN"``, ``"COMMIT"``, ``"END"`` or ``"ROLLBACK"`` if ``sql`` would begin or end a
    transaction (not ``ROLLBACK TO`` a savepoint), else ``None``."""
    words = _leading_words(sql, 1)
    if not words:
        return None
    verb = words[0]
    if verb in ("BEGIN", "COMMIT", "END"):
        return verb
    if verb == "ROLLBACK":
        rest = _leading_words(sql, 3)[1:]
        if rest[:1] == ["TO"] or rest[:2] == ["TRANSACTION", "TO"]:
            return None
        return verb
    return None


class PooledDatabase(sqlite_utils.Database):
    """A ``sqlite_utils.Database`` on one pooled connection; get it from ``dbpool.write()``/``read()``.

    Usable only by the thread that checked it out, inside the ``with`` block.
    """

    # Set in __init__; class-level defaults keep __repr__ safe during construction.
    _sf_conn: sqlite3.Connection | None = None
    _sf_owner: int | None = None
    _sf_depth: int = 0
    _sf_guard: bool = False  # inside a write() block: transaction control is refused
    _sf_role: str = "?"
    _sf_name: str = "?"

    def __init__(self, conn: sqlite3.Connection, *, role: str, name: str, **options: Any) -> None:
        self._sf_role = role
        self._sf_name = name
        self._sf_owner = _get_ident()  # the constructing thread may use it until __init__ ends
        try:
            super().__init__(conn, **options)
        finally:
            self._sf_owner = None

    # The connection is reachable only by the thread that has this Database checked out.
    @property
    def conn(self) -> sqlite3.Connection:
        """The pooled ``sqlite3.Connection``; :class:`NotCheckedOut` outside the block or from another thread."""
        if self._sf_owner != _get_ident():
            raise self._sf_not_checked_out()
        return self._sf_conn  # type: ignore[return-value]

    @conn.setter
    def conn(self, value: sqlite3.Connection) -> None:
        self._sf_conn = value

    def _sf_not_checked_out(self) -> NotCheckedOut:
        where = "outside its `with` block" if self._sf_owner is None else "from a thread that did not check it out"
        return NotCheckedOut(
            f"this sqlite_utils.Database belongs to a pooled {self._sf_role} connection of {self._sf_name!r} "
            f"and was used {where}. Use the Database (and Table objects made from it) only inside "
            "`with dbpool.write() as db:` or `with dbpool.read() as db:`, in the thread that entered "
            "the block; open a new block to use the database again."
        )

    def _sf_check_out(self, write: bool) -> None:
        me = _get_ident()
        if self._sf_owner is None:
            self._sf_owner = me
            self._sf_depth = 1
            self._sf_guard = write
        elif self._sf_owner == me:  # read() or write() nested inside write() on the same thread
            self._sf_depth += 1
            self._sf_guard = self._sf_guard or write
        else:  # pragma: no cover - the pool never hands one connection to two threads
            raise PooledDatabaseError(f"internal error: a pooled connection of {self._sf_name!r} is checked out twice")

    def _sf_check_in(self) -> None:
        self._sf_depth -= 1
        if self._sf_depth <= 0:
            self._sf_depth = 0
            self._sf_guard = False
            self._sf_owner = None

    def _sf_transaction_ended(self, doing: str, at_exit: bool = False) -> TransactionControlError:
        if at_exit:
            consequence = (
                "Nothing of the block is committed: the pooled connection refused every statement "
                "after that point (sqlitefair.TransactionControlError)."
            )
        else:
            consequence = (
                "Nothing more can be written atomically in this block: let the exception propagate "
                "and write in a new block."
            )
        return TransactionControlError(
            f"{doing}, but the block's transaction had already ended: something inside the block "
            "committed or rolled it back (a COMMIT or ROLLBACK sent through db.conn, or SQLite rolled "
            "it back after an error such as a RAISE(ROLLBACK) trigger or a full disk, and the "
            f"exception was caught inside the block). {consequence}"
        )

    def _sf_require_transaction(self, doing: str) -> None:
        if not self.conn.in_transaction:
            raise self._sf_transaction_ended(doing)

    # -- transaction control: the write() block owns the transaction ---------

    def begin(self) -> None:
        """Refused inside a ``write()`` block (:class:`TransactionControlError`): the block already is a transaction."""
        if self._sf_guard:
            raise TransactionControlError(
                "db.begin() inside `with dbpool.write()`: the block already is a transaction "
                "(BEGIN IMMEDIATE) that commits when the block ends. Use `with db.atomic():` "
                "for a nested part that can roll back on its own."
            )
        super().begin()

    def commit(self) -> None:
        """Refused inside a ``write()`` block (:class:`TransactionControlError`): the block commits when it ends."""
        if self._sf_guard:
            raise TransactionControlError(
                "db.commit() inside `with dbpool.write()`: the block commits when it ends without "
                "an exception. To commit part of the work early, end the block and open another one."
            )
        super().commit()

    def rollback(self) -> None:
        """Refused inside a ``write()`` block (:class:`TransactionControlError`): raise out of the block instead."""
        if self._sf_guard:
            raise TransactionControlError(
                "db.rollback() inside `with dbpool.write()`: raise an exception out of the block to "
                "roll the whole block back, or raise inside `with db.atomic():` to undo only that part."
            )
        super().rollback()

    def close(self) -> None:
        """Refused (:class:`PooledDatabaseError`): the connection is the pool's; close the pool instead."""
        raise PooledDatabaseError(
            f"this Database's connection belongs to the pool of {self._sf_name!r}: leave the `with` "
            "block to return it, and call dbpool.close() to close the pool."
        )

    def atomic(self) -> Any:
        """sqlite-utils' ``atomic()``: inside a ``write()`` block, a savepoint that can roll back on its own."""
        if self._sf_guard:
            self._sf_require_transaction("db.atomic() inside `with dbpool.write()`")
        return super().atomic()

    def execute(self, sql: str, parameters: Any = None) -> sqlite3.Cursor:
        """Run SQL, as sqlite-utils does; inside a ``write()`` block ``BEGIN``, ``COMMIT``, ``END`` and
        ``ROLLBACK`` are refused (:class:`TransactionControlError`), savepoints are fine."""
        if self._sf_guard:
            verb = _ends_or_starts_transaction(sql)
            if verb is not None:
                raise TransactionControlError(
                    f"db.execute({verb!r}...) inside `with dbpool.write()`: the block is one BEGIN "
                    "IMMEDIATE transaction that commits when the block ends (or rolls back on an "
                    "exception). Use SAVEPOINT/RELEASE/ROLLBACK TO, or `with db.atomic():`, for "
                    "nested parts."
                )
            self._sf_require_transaction("db.execute() inside `with dbpool.write()`")
        return super().execute(sql, parameters)

    def executescript(self, sql: str) -> sqlite3.Cursor:
        """Run a script, as sqlite-utils does; inside a ``write()`` block it runs inside the transaction."""
        if self._sf_guard:
            self._sf_require_transaction("db.executescript() inside `with dbpool.write()`")
        return super().executescript(sql)

    def query(self, sql: str, params: Any = None) -> Any:
        """Rows as dicts, as sqlite-utils' ``query()``."""
        if self._sf_guard:
            self._sf_require_transaction("db.query() inside `with dbpool.write()`")
        return super().query(sql, params)

    def __repr__(self) -> str:
        return f"<PooledDatabase {self._sf_role} of {self._sf_name!r}>"


# -- checkouts ---------------------------------------------------------------


class _Checkout:
    """Context manager returned by :meth:`DatabasePool.write` and :meth:`DatabasePool.read`."""

    __slots__ = ("_dbpool", "_inner", "_write", "_db")

    def __init__(self, dbpool: DatabasePool, inner: Any, write: bool) -> None:
        self._dbpool = dbpool
        self._inner = inner  # the pool's transaction() or read() context
        self._write = write
        self._db: PooledDatabase | None = None

    def __enter__(self) -> PooledDatabase:
        if self._db is not None:
            raise SqlitefairError("this context was already entered; call dbpool.write()/read() again")
        inner = self._inner
        conn = inner.__enter__()
        try:
            db = self._dbpool._database_for(conn)
            db._sf_check_out(self._write)
        except BaseException as exc:
            inner.__exit__(type(exc), exc, exc.__traceback__)
            raise
        self._db = db
        return db

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        db = self._db
        assert db is not None, "__exit__ without __enter__"
        ended = False
        try:
            if self._write and exc_type is None:
                ended = not db._sf_conn.in_transaction  # type: ignore[union-attr]
        finally:
            db._sf_check_in()
        if ended:
            error = db._sf_transaction_ended("a `with dbpool.write()` block ended", at_exit=True)
            try:
                self._inner.__exit__(type(error), error, None)
            finally:
                raise error
        suppressed: bool | None = self._inner.__exit__(exc_type, exc, tb)
        return suppressed


def _is_closed(conn: sqlite3.Connection) -> bool:
    try:
        conn.in_transaction  # noqa: B018 - raises on a closed connection
    except sqlite3.ProgrammingError:
        return True
    return False


class DatabasePool:
    """A sqlitefair pool that hands out ``sqlite_utils.Database`` objects; make one with :func:`connect` or :func:`wrap`."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        readers: int = _defaults.READERS,
        timeout: float | None = _defaults.TIMEOUT,
        pragmas: Mapping[str, object] | None = None,
        busy_policy: sqlitefair.BusyPolicy | None = None,
        on_connect: Callable[[sqlite3.Connection, str], None] | None = None,
        database_options: Mapping[str, Any] | None = None,
        group_commit: bool = False,
    ) -> None:
        check_sqlite_utils_version()
        self._options = _check_database_options(dict(database_options or {}))
        if on_connect is not None and not callable(on_connect):
            raise ConfigurationError(f"on_connect must be callable, got {on_connect!r}")
        self._user_on_connect = on_connect
        self._lock = threading.Lock()
        self._databases: dict[sqlite3.Connection, PooledDatabase] = {}
        self._name = "?"
        #: The underlying :class:`sqlitefair.Pool` (for ``stats()``, or raw ``sqlite3`` connections).
        self.pool: sqlitefair.Pool = sqlitefair.connect(
            path,
            readers=readers,
            timeout=timeout,
            pragmas=pragmas,
            busy_policy=busy_policy,
            backend="sqlite3",  # sqlite-utils works on sqlite3.Connection objects only
            on_connect=self._on_connect,
            group_commit=group_commit,
        )
        self._name = self.pool.path

    @property
    def path(self) -> str:
        """The database file's absolute path (:attr:`sqlitefair.Pool.path`)."""
        return self.pool.path

    def write(self, *, timeout: float | None = _UNSET) -> _Checkout:
        """``with dbpool.write() as db:`` a ``Database`` inside one ``BEGIN IMMEDIATE`` transaction.

        Queues FIFO for the writer; commits when the block ends, rolls back on an
        exception.  Nested on the same thread it is a ``SAVEPOINT``.  Raises
        :class:`sqlitefair.PoolTimeout` after ``timeout`` seconds (default: the pool's).
        """
        inner = self.pool.transaction() if timeout is _UNSET else self.pool.transaction(timeout=timeout)
        return _Checkout(self, inner, True)

    def run_write(self, fn: Callable[..., T], /, *args: Any, timeout: float | None = _UNSET, **kwargs: Any) -> T:
        """``fn(db, *args, **kwargs)`` with the ``Database`` of a write transaction, through
        :meth:`sqlitefair.Pool.write`: FIFO with ``write()`` blocks, run by whichever thread holds the
        writer (flat combining: with the GIL off, or with group commit), in a group commit if the pool
        was made with ``group_commit=True``.

        ``fn`` may run on another thread; it must finish with ``db`` before it returns and leave the
        transaction alone (as in a block).  Returns what ``fn`` returns; if it raises, its work is
        rolled back and the exception is raised here.
        """

        def call(conn: sqlite3.Connection) -> T:
            db = self._database_for(conn)
            db._sf_check_out(True)
            try:
                result = fn(db, *args, **kwargs)
                if not conn.in_transaction:
                    raise db._sf_transaction_ended("a dbpool.run_write() call returned", at_exit=True)
                return result
            finally:
                db._sf_check_in()

        if timeout is _UNSET:
            return self.pool.write(call)
        return self.pool.write(call, timeout=timeout)

    def read(self, *, timeout: float | None = _UNSET) -> _Checkout:
        """``with dbpool.read() as db:`` a ``Database`` on a read-only connection.

        Runs in parallel with other reads and with the writer.  Inside
        ``write()`` on the same thread it returns the writer's ``Database``.
        """
        inner = self.pool.read() if timeout is _UNSET else self.pool.read(timeout=timeout)
        return _Checkout(self, inner, False)

    def close(self, *, timeout: float | None = _UNSET) -> None:
        """Close the pool (see :meth:`sqlitefair.Pool.close`)."""
        try:
            if timeout is _UNSET:
                self.pool.close()
            else:
                self.pool.close(timeout=timeout)
        finally:
            with self._lock:
                self._prune_locked()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self.pool.closed

    def __enter__(self) -> DatabasePool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.pool.closed else "open"
        return f"<sqlitefair DatabasePool {self._name!r} readers={self.pool.readers} {state}>"

    # -- one Database per connection ----------------------------------------

    def _on_connect(self, conn: sqlite3.Connection, role: str) -> None:
        """Runs when the pool opens a connection: the user's hook, then this connection's Database."""
        if not isinstance(conn, sqlite3.Connection):
            raise ConfigurationError(
                f"sqlite-utils needs sqlite3.Connection objects, but the pool opened {type(conn).__name__}"
            )
        if self._user_on_connect is not None:
            self._user_on_connect(conn, role)
        db = self._build(conn, role)
        with self._lock:
            self._prune_locked()
            self._databases[conn] = db

    def _build(self, conn: sqlite3.Connection, role: str) -> PooledDatabase:
        # sqlite-utils plugins (prepare_connection hooks) run on the connection now; put back
        # what the pool relies on if one changed it (the writer's busy timeout is part of the
        # busy policy, and readers must stay query_only).
        busy_timeout, query_only = (conn.execute(f"PRAGMA {name}").fetchone()[0] for name in ("busy_timeout", "query_only"))
        db = PooledDatabase(conn, role=role, name=self._name, **self._options)
        if conn.execute("PRAGMA busy_timeout").fetchone()[0] != busy_timeout:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout)}")
        if conn.execute("PRAGMA query_only").fetchone()[0] != query_only:
            conn.execute(f"PRAGMA query_only = {int(query_only)}")
        return db

    def _database_for(self, conn: sqlite3.Connection) -> PooledDatabase:
        with self._lock:
            db = self._databases.get(conn)
        if db is None:  # pragma: no cover - every pooled connection went through _on_connect
            role = "writer" if conn.in_transaction else "reader"
            db = self._build(conn, role)
            with self._lock:
                self._databases[conn] = db
        return db

    def _prune_locked(self) -> None:
        """Forget the Databases of connections the pool has closed."""
        for conn in [c for c in self._databases if _is_closed(c)]:
            del self._databases[conn]


def _check_database_options(options: dict[str, Any]) -> dict[str, Any]:
    try:
        import inspect

        accepted = set(inspect.signature(sqlite_utils.Database.__init__).parameters)
    except (TypeError, ValueError):  # pragma: no cover
        accepted = set(_DATABASE_OPTIONS)
    allowed = [name for name in _DATABASE_OPTIONS if name in accepted]
    for name in options:
        if name == "backend":
            raise ConfigurationError(
                "backend: sqlite-utils works on sqlite3.Connection objects, so this integration always "
                "uses backend='sqlite3'"
            )
        if name not in allowed:
            raise ConfigurationError(
                f"unknown argument {name!r}: the pool takes {', '.join(_POOL_PARAMETERS)}; "
                f"sqlite_utils.Database options are {', '.join(allowed)}"
            )
    return options


# -- entry points ------------------------------------------------------------


def connect(
    path: str | os.PathLike[str],
    *,
    readers: int = _defaults.READERS,
    timeout: float | None = _defaults.TIMEOUT,
    pragmas: Mapping[str, object] | None = None,
    busy_policy: sqlitefair.BusyPolicy | None = None,
    on_connect: Callable[[sqlite3.Connection, str], None] | None = None,
    group_commit: bool = False,
    **database_options: Any,
) -> DatabasePool:
    """Open a :class:`DatabasePool` on the SQLite file at ``path`` (created if missing).

    The pool arguments are those of :func:`sqlitefair.connect` (``on_connect(conn, role)``
    gets the raw ``sqlite3`` connection, e.g. to register SQL functions on every
    connection).  Other keyword arguments go to every ``sqlite_utils.Database``:
    ``recursive_triggers``, ``tracer``, ``use_counts_table``, ``execute_plugins``,
    ``use_old_upsert``, ``strict``.

    Raises :class:`UnsupportedSqliteUtils` if the installed sqlite-utils is older
    than 4.1.1, and :class:`sqlitefair.ConfigurationError` for an in-memory path.
    """
    return DatabasePool(
        path,
        readers=readers,
        timeout=timeout,
        pragmas=pragmas,
        busy_policy=busy_policy,
        on_connect=on_connect,
        database_options=database_options,
        group_commit=group_commit,
    )


def wrap(
    db: sqlite_utils.Database,
    *,
    readers: int = _defaults.READERS,
    timeout: float | None = _defaults.TIMEOUT,
    pragmas: Mapping[str, object] | None = None,
    busy_policy: sqlitefair.BusyPolicy | None = None,
    on_connect: Callable[[sqlite3.Connection, str], None] | None = None,
    **database_options: Any,
) -> DatabasePool:
    """A :class:`DatabasePool` on the same file as the existing ``sqlite_utils.Database`` ``db``.

    The pool's Databases get ``db``'s ``strict``, ``use_counts_table``,
    ``use_old_upsert``, tracer and ``recursive_triggers`` setting unless
    ``database_options`` say otherwise.  ``db`` itself is left open and
    unchanged; writes made through it bypass the pool's queue, so stop using it
    for writes (``db.close()`` it when done).  Refuses in-memory databases and a
    ``db`` with an open transaction.
    """
    check_sqlite_utils_version()
    if isinstance(db, PooledDatabase):
        raise ConfigurationError("this Database already belongs to a sqlitefair pool; use that DatabasePool")
    if not isinstance(db, sqlite_utils.Database):
        raise ConfigurationError(f"wrap() takes a sqlite_utils.Database, got {db!r}")
    conn = db.conn
    file = ""
    if not getattr(db, "memory", False):
        for _seq, name, filename in conn.execute("PRAGMA database_list").fetchall():
            if name == "main":
                file = filename or ""
    if not file:
        raise ConfigurationError(
            f"wrap() needs a Database stored in a file, but {db!r} is an in-memory (or temporary) "
            "database: each pooled connection would see a different, empty database. Save it to a "
            "file first (e.g. db.conn.backup(sqlite3.connect('data.db'))) and use "
            "sqlitefair.integrations.sqlite_utils.connect('data.db'), or keep the plain Database."
        )
    if conn.in_transaction:
        raise ConfigurationError(
            f"wrap(): {db!r} has an open transaction, which holds locks the pool would wait for; "
            "commit or roll it back first."
        )
    inherited: dict[str, Any] = {
        "strict": getattr(db, "strict", False),
        "use_counts_table": getattr(db, "use_counts_table", False),
        "use_old_upsert": getattr(db, "use_old_upsert", False),
        "tracer": getattr(db, "_tracer", None),
        "recursive_triggers": bool(conn.execute("PRAGMA recursive_triggers").fetchone()[0]),
    }
    try:
        import inspect

        accepted = set(inspect.signature(sqlite_utils.Database.__init__).parameters)
        inherited = {name: value for name, value in inherited.items() if name in accepted}
    except (TypeError, ValueError):  # pragma: no cover
        pass
    inherited.update(database_options)
    return DatabasePool(
        file,
        readers=readers,
        timeout=timeout,
        pragmas=pragmas,
        busy_policy=busy_policy,
        on_connect=on_connect,
        database_options=inherited,
    )
