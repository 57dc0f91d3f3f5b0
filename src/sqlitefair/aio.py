"""asyncio facade of the pool, for ASGI apps (Starlette, FastAPI, Quart, ...).

>>> import sqlitefair.aio
>>> apool = sqlitefair.aio.connect("app.db", readers=4, timeout=5.0)   # doctest: +SKIP
>>> async with apool.transaction() as conn:                           # doctest: +SKIP
...     row = await conn.fetchone("select value from counters where name = ?", ("hits",))
...     await conn.execute("update counters set value = ? where name = ?", (row[0] + 1, "hits"))
>>> async with apool.read() as conn:                                  # doctest: +SKIP
...     rows = await conn.fetchall("select * from items order by id desc limit 10")
>>> def bump(conn, name):                                              # doctest: +SKIP
...     conn.execute("update counters set value = value + 1 where name = ?", (name,))
>>> await apool.run_transaction(bump, "hits")                          # doctest: +SKIP

Nothing blocks the event loop: queueing for the writer or a reader, waiting
for another process's write lock, every statement, ``COMMIT`` and ``ROLLBACK``
run in worker threads.

**Two styles.**  ``async with`` blocks run each ``await conn...`` as one trip
to the block's thread and back through the event loop; the writer stays held
between them while the loop serves other requests.  ``run_transaction(fn)``
runs a plain function as the whole transaction in one job, so the writer is
held only while SQL runs: under load, the faster choice for writes.

**One thread per checkout.**  The pool's ownership is per thread (nesting,
reads inside a transaction, the permit's holder), so each ``async with``
block is pinned to one worker thread for its whole life: it queues there,
every statement of the block runs there, and it is given back there.  Idle
worker threads are kept for reuse (``idle_threads``); a busy server has about
one per request that is inside or queued for a block.

**Fair.**  Checkouts of one :class:`AsyncPool` join the pool's FIFO queues in
the order their ``async with`` started, not in the order the operating
system happens to schedule their threads.  Threads that use the
synchronous pool directly queue beside them, FIFO as usual.

**Cancellation.**  A task cancelled (or timed out by ``asyncio.timeout`` /
``asyncio.wait_for``) while it is queued raises ``CancelledError`` at once,
and its worker thread leaves the pool's queue at once: the task does not
take its turn, so the queue behind it does not wait for it.  If the
connection was handed to it in the same instant, the thread gives it back
(a write: ``BEGIN IMMEDIATE``, then ``ROLLBACK``).  A task cancelled while its writer waits for
another process's lock gives the writer back when that wait ends.  A task
cancelled inside the block rolls back.  Either way no connection stays
checked out and no transaction stays open.

**Nesting**, per task as the synchronous pool does it per thread: inside
``async with apool.transaction()``, another ``apool.transaction()`` in the
same task (or a task it started) is a ``SAVEPOINT`` and ``apool.read()``
returns the transaction's connection, which sees its own writes.  Do not let
a connection or a nested block outlive its block.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import os
import queue
import threading
import time
from types import TracebackType
from typing import Any, Callable, Concatenate, Iterable, Mapping, ParamSpec, Sequence, TypeVar

from ._errors import ConfigurationError, NestingError, NotCheckedOut, PoolClosed, SqlitefairError, reads_nested_error
from . import _combining
from ._fairlock import CancelScope
from ._opening import check_timeout
from ._pool import _UNSET, Pool
from ._pool import connect as _connect_pool
from ._stats import PoolStats

__all__ = ("AsyncPool", "AsyncConnection", "AsyncCursor", "connect")

log = logging.getLogger("sqlitefair")

T = TypeVar("T")
P = ParamSpec("P")
#: Parameters of one statement: a sequence for ``?`` placeholders, a mapping for ``:name``.
Parameters = Sequence[Any] | Mapping[str, Any]

#: Idle worker threads an :class:`AsyncPool` keeps for reuse by default.
IDLE_THREADS = 16


def connect(path: str | os.PathLike[str], *, idle_threads: int = IDLE_THREADS, **pool_kwargs: Any) -> AsyncPool:
    """Open a pool with :func:`sqlitefair.connect` (same keyword arguments) and wrap it in an :class:`AsyncPool`.

    Opening checks the file once (a quick blocking call): do it at startup,
    e.g. in the ASGI lifespan, not per request.
    """
    return AsyncPool(_connect_pool(path, **pool_kwargs), idle_threads=idle_threads)


class AsyncPool:
    """An asyncio facade of a :class:`sqlitefair.Pool`; it owns the pool (``close()`` closes it)."""

    def __init__(self, pool: Pool, *, idle_threads: int = IDLE_THREADS) -> None:
        if not isinstance(pool, Pool):
            raise TypeError(f"AsyncPool wraps a sqlitefair.Pool, got {pool!r}")
        if isinstance(idle_threads, bool) or not isinstance(idle_threads, int) or idle_threads < 0:
            raise ConfigurationError(f"idle_threads must be an int >= 0, got {idle_threads!r}")
        self._pool = pool
        self._idle_threads = idle_threads
        self._lock = threading.Lock()  # guards everything below
        self._idle: list[_Worker] = []
        self._in_use = 0
        self._closed = False
        self._pid = os.getpid()
        # The most recent top-level checkout of each kind: the next one joins the queue after it.
        self._last: dict[str, _Checkout | None] = {"transaction": None, "read": None}
        self._names = itertools.count(1)

    @property
    def pool(self) -> Pool:
        """The synchronous pool (usable beside this facade from ordinary threads)."""
        return self._pool

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def in_use(self) -> int:
        """Checkouts whose worker thread is not back yet, including cancelled ones still queued."""
        with self._lock:
            return self._in_use

    def transaction(self, *, timeout: float | None = _UNSET) -> _Checkout:
        """A write transaction: ``async with apool.transaction() as conn: ...``.

        Queues FIFO for the writer, then ``BEGIN IMMEDIATE``; commits when the
        block ends, rolls back when it raises or is cancelled.  Raises
        :class:`sqlitefair.PoolTimeout` after ``timeout`` seconds (default: the
        pool's).  Inside a transaction of the same task: a ``SAVEPOINT``.
        """
        return _Checkout(self, "transaction", timeout)

    def read(self, *, timeout: float | None = _UNSET) -> _Checkout:
        """A read-only connection: ``async with apool.read() as conn: ...``.

        Inside a transaction of the same task: the transaction's connection.
        """
        return _Checkout(self, "read", timeout)

    async def run_transaction(self, fn: Callable[Concatenate[Any, P], T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(conn, *args, **kwargs)`` in a write transaction, entirely on one worker thread.

        Queueing, ``BEGIN IMMEDIATE``, ``fn`` and ``COMMIT`` (``ROLLBACK`` if
        ``fn`` raises) run as one job, so the writer is held only while SQL
        runs, never while the event loop is busy with other requests: the
        fastest way to write under load.  Returns what ``fn`` returns.  If the
        task is cancelled before the commit starts, it rolls back.
        """
        return await _Checkout(self, "transaction", _UNSET)._run_whole(lambda conn: fn(conn, *args, **kwargs))

    async def write(self, fn: Callable[..., T], /, *args: Any, timeout: float | None = _UNSET, **kwargs: Any) -> T:
        """``fn(conn, *args, **kwargs)`` in a write transaction: :meth:`sqlitefair.Pool.write` for tasks.

        The task queues in the writer's FIFO queue without a thread: no worker
        thread is parked per waiting task.  When its turn comes, a thread
        holding the writer runs the call (flat combining, and group commit if
        the pool has it), or a worker thread starts to serve it and the calls
        queued behind it.  Cancelled while queued, the call never runs; once its
        turn has come (the writer is its, or a thread has taken it up), it runs
        to its end (or, taken up with others, times out before it starts as
        :meth:`sqlitefair.Pool.write` says) and the task only stops waiting for
        it.  Inside ``async with apool.transaction()`` of the same task it runs
        there, in a savepoint.
        """
        pool = self._pool
        if self._closed:
            raise PoolClosed(f"the async pool for {pool.path!r} is closed")
        task = asyncio.current_task()
        if any(c._apool is self and c._open and c._task is task for c in _open_transactions.get()):
            return await self.run_transaction(fn, *args, **kwargs)
        timeout = pool.timeout if timeout is _UNSET else check_timeout(timeout)
        return await _combining.write_async(pool, fn, args, kwargs, timeout)  # type: ignore[no-any-return]

    async def run_read(self, fn: Callable[Concatenate[Any, P], T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(conn, *args, **kwargs)`` with a read-only connection, entirely on one worker thread."""
        return await _Checkout(self, "read", _UNSET)._run_whole(lambda conn: fn(conn, *args, **kwargs))

    def stats(self) -> PoolStats:
        """The pool's statistics (:meth:`sqlitefair.Pool.stats`); cheap, does not block."""
        return self._pool.stats()

    async def close(self, *, timeout: float | None = _UNSET) -> None:
        """Close the pool (in a thread: it waits for checked-out connections) and stop idle workers.

        Called inside a transaction or read of this pool in the same task, it raises
        :class:`sqlitefair.SqlitefairError` at once, as the synchronous pool does: it would wait
        for itself.
        """
        task = asyncio.current_task()
        for kind, blocks in (("transaction", _open_transactions), ("read", _open_reads)):
            if any(c._apool is self and c._open and c._task is task for c in blocks.get()):
                raise SqlitefairError(f"close() called inside apool.{kind}() in the same task would wait for itself")
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.stop()
        kwargs = {} if timeout is _UNSET else {"timeout": timeout}
        await asyncio.to_thread(self._pool.close, **kwargs)

    async def __aenter__(self) -> AsyncPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<sqlitefair.aio.AsyncPool {self._pool.path!r} in_use={self.in_use} {'closed' if self._closed else 'open'}>"

    # -- worker threads -------------------------------------------------------

    def _take_worker(self, checkout: _Checkout) -> tuple[_Worker, _Checkout | None]:
        """A worker for a new top-level checkout, and the checkout of the same kind that came before it."""
        with self._lock:
            if self._closed:
                raise PoolClosed(f"the async pool for {self._pool.path!r} is closed")
            if os.getpid() != self._pid:  # a fork child: the parent's threads do not exist here
                self._pid = os.getpid()
                self._idle = []
                self._in_use = 0
                self._last = {"transaction": None, "read": None}
            self._in_use += 1
            prev, self._last[checkout._kind] = self._last[checkout._kind], checkout
            worker = self._idle.pop() if self._idle else None
        if worker is None:
            try:
                worker = _Worker(f"sqlitefair-aio-{next(self._names)}")
            except BaseException:
                self._give_back(None)
                raise
        return worker, prev

    def _give_back(self, worker: _Worker | None) -> None:
        """A checkout is over (called on its worker thread): keep the thread for reuse or stop it."""
        with self._lock:
            self._in_use -= 1
            if worker is None:
                return
            if not self._closed and len(self._idle) < self._idle_threads and os.getpid() == self._pid:
                self._idle.append(worker)
                return
        worker.stop()


class AsyncCursor:
    """The result of :meth:`AsyncConnection.execute`: fetch its rows with ``await``.

    ``rowcount``, ``lastrowid`` and ``description`` are read right after the
    statement ran.  Usable only inside the ``async with`` block it came from.
    """

    __slots__ = ("_checkout", "_cursor", "rowcount", "lastrowid", "description")

    def __init__(self, checkout: _Checkout, cursor: Any, rowcount: int, lastrowid: int | None, description: Any) -> None:
        self._checkout = checkout
        self._cursor = cursor
        self.rowcount = rowcount
        self.lastrowid = lastrowid
        self.description = description

    async def fetchone(self) -> Any:
        """The next row, or ``None``."""
        cursor = self._cursor
        return await self._checkout._call(lambda conn: next(iter(cursor), None))

    async def fetchmany(self, size: int = 100) -> list[Any]:
        """Up to ``size`` more rows."""
        cursor = self._cursor
        return await self._checkout._call(lambda conn: list(itertools.islice(cursor, size)))

    async def fetchall(self) -> list[Any]:
        """All remaining rows."""
        cursor = self._cursor
        return await self._checkout._call(lambda conn: list(cursor))

    def __aiter__(self) -> AsyncCursor:
        return self

    async def __anext__(self) -> Any:
        rows = await self.fetchmany(1)
        if not rows:
            raise StopAsyncIteration
        return rows[0]


class AsyncConnection:
    """The connection of one ``async with`` block; every call runs on the block's worker thread."""

    __slots__ = ("_checkout",)

    def __init__(self, checkout: _Checkout) -> None:
        self._checkout = checkout

    async def execute(self, sql: str, parameters: Parameters = ()) -> AsyncCursor:
        """Run one statement; fetch rows from the returned cursor."""
        return await self._checkout._call(lambda conn: _cursor(self._checkout, conn, conn.execute(sql, parameters)))

    async def executemany(self, sql: str, seq_of_parameters: Iterable[Parameters]) -> AsyncCursor:
        """Run one statement for each set of parameters (materialised here, on the event loop)."""
        rows = list(seq_of_parameters)
        return await self._checkout._call(lambda conn: _cursor(self._checkout, conn, conn.executemany(sql, rows)))

    async def fetchone(self, sql: str, parameters: Parameters = ()) -> Any:
        """Run a query and return its first row (or ``None``)."""

        def job(conn: Any) -> Any:
            cursor = conn.execute(sql, parameters)
            try:
                return next(iter(cursor), None)
            finally:
                _close_cursor(cursor)

        return await self._checkout._call(job)

    async def fetchall(self, sql: str, parameters: Parameters = ()) -> list[Any]:
        """Run a query and return all its rows."""
        return await self._checkout._call(lambda conn: list(conn.execute(sql, parameters)))

    async def run(self, fn: Callable[Concatenate[Any, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(raw_connection, *args, **kwargs)`` on the block's worker thread, for anything else.

        The raw connection is the backend's own (``sqlite3.Connection``); do
        not keep it after ``fn`` returns.
        """
        return await self._checkout._call(lambda conn: fn(conn, *args, **kwargs))

    @property
    def kind(self) -> str:
        """``"transaction"`` or ``"read"``."""
        return self._checkout._kind

    def __repr__(self) -> str:
        state = "open" if self._checkout._open else "ended"
        return f"<sqlitefair.aio.AsyncConnection {self._checkout._kind} {state}>"


def _cursor(checkout: _Checkout, conn: Any, cursor: Any) -> AsyncCursor:
    """Wrap a cursor, reading its counters on the worker thread (sqlite3 and apsw spell them differently)."""
    if hasattr(cursor, "rowcount"):
        rowcount, lastrowid = cursor.rowcount, cursor.lastrowid
    else:  # apsw
        rowcount, lastrowid = conn.changes(), conn.last_insert_rowid()
    try:
        description = cursor.description
    except Exception:  # apsw: no description once the statement completed
        description = None
    checkout._cursors.append(cursor)
    return AsyncCursor(checkout, cursor, rowcount, lastrowid, description)


def _close_cursor(cursor: Any) -> None:
    close = getattr(cursor, "close", None)
    if close is not None:
        close()


#: The async transactions open in the current task (innermost last), for nesting.
_open_transactions: contextvars.ContextVar[tuple[_Checkout, ...]] = contextvars.ContextVar(
    "sqlitefair_aio_open_transactions", default=()
)
#: The async reads open in the current task that hold a reader (not a transaction's connection).
_open_reads: contextvars.ContextVar[tuple[_Checkout, ...]] = contextvars.ContextVar("sqlitefair_aio_open_reads", default=())


class _Checkout:
    """One ``async with`` block: a synchronous ``pool.transaction()`` / ``pool.read()``
    entered, used and exited on one worker thread.

    The event loop and the worker meet under ``_lock`` on two flags: ``_open``
    (the worker entered and the task may use the connection) and
    ``_abandoned`` (the task stopped waiting).  Whichever side comes second
    sees the other's flag, so a connection granted to a task that is gone is
    given back exactly once.
    """

    __slots__ = (
        "_apool", "_kind", "_sync_cm", "_used", "_worker", "_parent", "_prev", "_ident",
        "_lock", "_open", "_abandoned", "_cm", "_conn", "_started", "_settled", "_token", "_cursors",
        "_cancel", "_child", "_task",
    )

    def __init__(self, apool: AsyncPool, kind: str, timeout: float | None) -> None:
        self._apool = apool
        self._kind = kind
        # Made here (cheap, validates ``timeout`` at the call), entered and exited on the worker thread.
        pool = apool._pool
        self._cancel = CancelScope()  # takes the worker out of the queue
        kwargs: dict[str, Any] = {"cancel": self._cancel}
        if timeout is not _UNSET:
            kwargs["timeout"] = timeout
        self._sync_cm: Any = pool.transaction(**kwargs) if kind == "transaction" else pool.read(**kwargs)
        self._used = False
        self._worker: _Worker | None = None
        self._parent: _Checkout | None = None  # the enclosing transaction, for nested blocks
        # The nested transaction block open inside this one (touched on the event loop only): a second
        # one, from a sibling task, would interleave savepoints with it, so it is refused.
        self._child: _Checkout | None = None
        self._task: asyncio.Task[Any] | None = None  # the task that entered the block
        self._prev: _Checkout | None = None  # the checkout that queues just before this one
        self._ident = 0  # the worker thread's ident, once it started
        self._lock = threading.Lock()
        self._open = False
        self._abandoned = False
        self._cm: Any = None
        self._conn: Any = None
        self._started = threading.Event()  # about to queue (or gave up before)
        self._settled = threading.Event()  # no longer waiting in the pool's queue
        self._token: contextvars.Token[tuple[_Checkout, ...]] | None = None
        self._cursors: list[Any] = []  # closed when the block ends: an unfinished SELECT holds its snapshot

    # -- the event loop's side --------------------------------------------------

    async def __aenter__(self) -> AsyncConnection:
        if self._used:
            raise SqlitefairError(f"this {self._kind}() context was already entered; call it again for a new block")
        worker = self._start()
        future = worker.submit(self._enter)
        try:
            await future
        except asyncio.CancelledError:
            self._leave_parent()
            with self._lock:
                self._abandoned = True
                entered = self._open
                self._open = False
            self._cancel.cancel()  # still queued: leave the queue now instead of taking the turn
            if entered:  # the worker got the connection just before we stopped waiting: give it back now
                try:
                    await worker.submit(lambda: self._exit(asyncio.CancelledError, asyncio.CancelledError(), None))
                except Exception:
                    log.warning("rolling back an abandoned %s failed", self._kind, exc_info=True)
            raise
        except BaseException:
            self._leave_parent()
            raise
        if self._kind == "transaction":
            self._token = _open_transactions.set(_open_transactions.get() + (self,))
        elif self._parent is None:  # a reader of its own
            self._token = _open_reads.set(_open_reads.get() + (self,))
        return AsyncConnection(self)

    def _start(self) -> _Worker:
        """Pick the worker: the enclosing transaction's (nested) or a fresh one queued after the last."""
        self._used = True
        self._task = asyncio.current_task()
        apool = self._apool
        parent = next((c for c in reversed(_open_transactions.get()) if c._apool is apool and c._open), None)
        if parent is not None and self._kind == "read" and parent._task is not self._task:
            parent = None  # another task's transaction: a reader of its own, not that transaction's connection
        if parent is not None:
            if self._kind == "transaction":
                if parent._child is not None:
                    raise NestingError(
                        "async with apool.transaction() would open beside another open block nested in the "
                        "same transaction (two tasks nested in one transaction at once, e.g. asyncio.gather); "
                        "their savepoints would interleave, so one's rollback could undo the other's work. "
                        "Nothing of this block ran. Await nested blocks one after the other, or give each "
                        "task its own transaction."
                    )
                parent._child = self
            self._parent, self._worker = parent, parent._worker
        else:
            if self._kind == "read":  # as many reads open in this task as there are readers: it would wait for itself
                pool = apool._pool
                mine = sum(1 for c in _open_reads.get() if c._apool is apool and c._open and c._task is self._task)
                if mine >= pool.readers:
                    raise reads_nested_error(pool.path, pool.readers, "asyncio task")
            self._worker, self._prev = apool._take_worker(self)
        assert self._worker is not None
        return self._worker

    async def _run_whole(self, fn: Callable[[Any], T]) -> T:
        """Enter, ``fn(conn)``, commit (or roll back) and give back, all in one job on the worker."""
        worker = self._start()

        def job() -> T:
            self._enter()
            if self._cm is None:  # the task was cancelled while queued; already given back
                raise asyncio.CancelledError
            try:
                result = fn(self._conn)
            except BaseException as exc:
                self._exit(type(exc), exc, exc.__traceback__)
                raise
            with self._lock:
                abandoned = self._abandoned
                self._open = False
            if abandoned:  # cancelled while fn ran: roll back rather than commit for a task that is gone
                self._exit(asyncio.CancelledError, asyncio.CancelledError(), None)
                raise asyncio.CancelledError
            self._exit(None, None, None)
            return result

        future = worker.submit(job)
        try:
            return await future
        except asyncio.CancelledError:
            with self._lock:
                self._abandoned = True
            self._cancel.cancel()
            raise
        finally:
            self._leave_parent()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._token is not None:
            token, self._token = self._token, None
            blocks = _open_transactions if self._kind == "transaction" else _open_reads
            try:
                blocks.reset(token)
            except ValueError:  # exited in another context than entered: drop just this one
                blocks.set(tuple(c for c in blocks.get() if c is not self))
        with self._lock:
            self._open = False
        worker = self._worker
        assert worker is not None
        # The job runs even if this await is cancelled: the block always ends on its thread.
        try:
            await worker.submit(lambda: self._exit(exc_type, exc, tb))
        finally:
            self._leave_parent()

    def _leave_parent(self) -> None:
        """This nested block is over (event loop side): its parent may open another one."""
        parent = self._parent
        if parent is not None and parent._child is self:
            parent._child = None

    async def _call(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(conn)`` on the worker thread."""
        worker = self._worker
        if worker is None:
            raise SqlitefairError("this connection's async with block has not started")
        child = self._child
        me = asyncio.current_task() if child is not None else None
        while child is not None and child._task is me:  # the whole chain of blocks nested in this one
            child = child._child
        if child is not None:
            raise NestingError(
                "this block's transaction has a block nested in it open in another asyncio task; a "
                "statement here would land in that task's savepoint, and its rollback would undo it. "
                "Nothing was run. Await that task before using this connection again."
            )

        def job() -> T:
            if not self._open:  # what the synchronous pool's connections raise after their block
                raise NotCheckedOut(
                    f"this connection's async with {self._kind}() block has ended; use it only inside the block. "
                    "Nothing was run."
                )
            return fn(self._conn)

        return await worker.submit(job)

    # -- the worker thread's side ---------------------------------------------

    def _enter(self) -> None:
        parent = self._parent
        try:
            if parent is not None and not parent._open:
                raise SqlitefairError(f"the enclosing async transaction ended before this nested {self._kind}() began")
            self._ident = threading.get_ident()
            prev, self._prev = self._prev, None
            if prev is not None:
                prev._wait_until_queued(self._kind)
            self._started.set()
            cm = self._sync_cm
            conn = cm.__enter__()
        except BaseException:
            self._started.set()
            self._settled.set()
            self._finish()
            raise
        self._settled.set()
        with self._lock:
            if not self._abandoned:
                self._cm, self._conn, self._open = cm, conn, True
                return
        # The task was cancelled while this thread queued: give the connection back at once.
        try:
            cm.__exit__(asyncio.CancelledError, asyncio.CancelledError(), None)
        except Exception:
            log.warning("giving back the %s of a cancelled task failed", self._kind, exc_info=True)
        finally:
            self._finish()

    def _exit(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        cm, self._cm, self._conn = self._cm, None, None
        cursors, self._cursors = self._cursors, []
        for cursor in cursors:
            try:
                _close_cursor(cursor)
            except Exception:  # pragma: no cover - closing is best effort
                log.debug("closing a cursor failed", exc_info=True)
        try:
            parent = self._parent
            if cm is not None and (parent is None or parent._cm is not None):
                cm.__exit__(exc_type, exc, tb)
            # else: the enclosing transaction already ended and took this savepoint with it
        finally:
            self._finish()

    def _finish(self) -> None:
        if self._parent is None:
            self._apool._give_back(self._worker)

    def _wait_until_queued(self, kind: str) -> None:
        """Block until this checkout's thread has joined the pool's queue (or holds, or gave up).

        Called by the next checkout of the same kind before it queues, so that
        checkouts join the queue in the order their ``async with`` started.
        """
        self._started.wait()
        pool = self._apool._pool
        spins = 0
        while not self._settled.is_set() and not pool.queued_or_holding(kind, self._ident):
            spins += 1
            time.sleep(0 if spins < 50 else 0.0001)


class _Worker:
    """One thread running jobs in order; the result goes back to the submitting event loop."""

    __slots__ = ("_jobs", "_thread")

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], asyncio.AbstractEventLoop, asyncio.Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        # A daemon: a program that never closed its pool must still be able to exit.
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((fn, loop, future))
        return future

    def stop(self) -> None:
        self._jobs.put(None)

    def _main(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, loop, future = job
            del job
            result: Any = None
            error: BaseException | None = None
            try:
                result = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
                error = exc
            del fn
            try:
                loop.call_soon_threadsafe(_settle, future, result, error)
            except RuntimeError:  # the loop is closed: nobody waits for this result
                pass
            del loop, future, result, error


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the awaiting task was cancelled; the checkout's flags handle the rest
        return
    if error is None:
        future.set_result(result)
    elif isinstance(error, StopIteration):  # a Future refuses StopIteration
        future.set_exception(RuntimeError(f"{type(error).__name__} raised in a worker thread"))
    else:
        future.set_exception(error)
