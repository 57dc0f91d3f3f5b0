"""The writer role: one connection, a FIFO queue for it, and the transactions that own it.

Life of a write (``with pool.transaction() as conn``):

1. queue for the writer in this process (a :class:`FairLock`: FIFO among waiters; with the
   default ``handoff="bounded"`` a running thread may take a freed writer first unless the
   oldest waiter has waited 1 ms);
2. at the head of that queue, queue behind the writers of other processes on the same file
   (:mod:`._procqueue`; skipped with ``process_queue=False``);
3. ``BEGIN IMMEDIATE``, retried under the busy policy while a connection outside the
   queues (another program, or a pool without the queue) holds SQLite's write lock;
4. the caller's statements, then ``COMMIT`` (or ``ROLLBACK`` on exception), and a
   checkpoint when one is due, all before the next process may begin;
5. hand the turn to the next process, and the writer to the next thread in the queue.

**Ownership belongs to the checkout.**  A :class:`Transaction` object owns
the connection and the stack of its open blocks, and is itself the writer
lock's permit (the lock's record of its holder); nothing is kept per thread.  A nested ``pool.transaction()`` finds its enclosing transaction
through a :class:`contextvars.ContextVar`, so nesting works alike for
threads, asyncio tasks and generators, and becomes a ``SAVEPOINT``.  Blocks
must end last-in-first-out: a block that would open beside another open one
(sibling asyncio tasks) or end before a block opened inside it raises
:class:`NestingError`, and a transaction whose blocks were interleaved can
only roll back.  A transaction opened in an asyncio task takes nested
blocks from that task only: a task started inside the block inherits its
context, and its savepoint would take in the opening task's writes.  A
block may end on another thread than it began on (a generator resumed
elsewhere); the context it began in then keeps a
reference to an ended checkout, which lookups skip.

**No window between a grant and its cleanup.**  Everything a checkout
acquires is recorded in the same statement that acquires it (the writer
permit by the lock itself, which names the checkout its holder), inside a
``try`` whose handler gives back exactly what is recorded; giving
back is idempotent and retried once if it is itself cut short.  The methods
are :func:`~sqlitefair._interrupts.protected`, so a SIGINT in them is
deferred until they return; the waits inside are interruptible.
"""

from __future__ import annotations

import logging
from asyncio import current_task
from asyncio import _get_running_loop as _running_loop
from contextvars import ContextVar
from threading import get_ident
from time import monotonic
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import _defaults
from ._backends import Connection
from ._busy import BusyTimeout
from ._errors import (
    NestingError,
    SqlitefairError,
    TransactionControlError,
    busy_timeout_error,
    process_queue_timeout_error,
    queue_timeout_error,
)
from ._fairlock import FairLock, Permit
from ._interrupts import _deferred, protected, raise_if_deferred
from ._procqueue import ProcessQueue, QueueTimeout
from ._waitqueue import CancelScope, LockTimeout

if TYPE_CHECKING:
    from ._pool import Pool, _ProcessState

__all__ = ("WriterGate", "Transaction", "enclosing_transaction")

log = logging.getLogger("sqlitefair")

#: The innermost transaction block entered in the current context (any pool); each links to the one before.
_current: ContextVar[Transaction | None] = ContextVar("sqlitefair_transaction", default=None)


def _task() -> object:
    """The running asyncio task, or None outside an event loop (cheap: no loop, one C call)."""
    loop = _running_loop()
    return None if loop is None else current_task(loop)


def enclosing_transaction(state: _ProcessState) -> Transaction | None:
    """The innermost open transaction block of ``state``'s pool in the current context, if any."""
    tx = _current.get()
    while isinstance(tx, Transaction):  # the chain ends in None or Token.MISSING
        if tx._state is state and not tx._ended and not tx._root._ended:  # type: ignore[union-attr]
            return tx
        token = tx._token
        tx = None if token is None else token.old_value
    return None


class WriterGate:
    """The writer of one pool in one process: the FIFO lock, the one writer connection, and
    this pool's place in the queue across processes.

    Invariant: ``conn`` and ``procq``'s turn are used only by the thread holding a ``lock``
    permit (a transaction, or ``close()``); a connection found inside a transaction at
    checkout, closed, or in an unknown state is rolled back or replaced, never handed out
    as it is.  The turn across processes is taken after the permit and given back before it.
    """

    def __init__(self, pool: Pool, state: _ProcessState) -> None:
        self.lock = FairLock(barging=pool._barging, depth=_defaults.BARGING_DEPTH)
        self.conn: Connection | None = None
        #: The cross-process writer queue (None: off, see ``connect(process_queue=...)``).
        self.procq: ProcessQueue | None = (
            ProcessQueue(pool._file, pool._name) if pool._process_queue else None
        )
        self._pool = pool
        self._state = state

    def timeout_error(self, exc: LockTimeout, timeout: float | None) -> Exception:
        """The :class:`PoolTimeout` for a wait in the writer queue that gave up (counted)."""
        pool = self._pool
        pool._stats.add("write_timeouts")
        return queue_timeout_error(pool._backend, pool._name, "writer", exc.waited, timeout, exc.statistics)

    def process_timeout_error(self, exc: QueueTimeout, timeout: float | None, start: float) -> Exception:
        """The :class:`PoolTimeout` for a wait behind writers of other processes that gave up (counted)."""
        pool = self._pool
        pool._stats.add("write_timeouts")
        return process_queue_timeout_error(pool._backend, pool._name, monotonic() - start, exc.waited, timeout)

    def connection(self, deadline: float | None) -> Connection:
        """The writer connection, opened on first use (the caller holds the permit)."""
        conn = self.conn
        if conn is None:
            conn = self.conn = self._pool._open_registered("writer", deadline)
        return conn

    @protected
    def reset(self, conn: Connection) -> None:
        """Take ``conn`` back from a checkout: roll back what is left open, or replace the connection."""
        pool = self._pool
        backend = pool._backend
        backend.set_holder(conn, None)
        try:
            if backend.in_transaction(conn):
                backend.execute(conn, "ROLLBACK")
        except Exception:
            # Closed by the caller, or in an unknown state: the next writer opens a fresh one.
            if not backend.is_closed(conn):
                log.warning("ROLLBACK failed on %s; replacing the writer connection", pool._name, exc_info=True)
            self.drop(conn)
            return
        if self._state.shut_down:
            self.drop(conn)

    def drop(self, conn: Connection) -> None:
        """Close ``conn`` and stop using it (the caller holds the permit)."""
        if self.conn is conn:
            self.conn = None
        self._pool._discard(self._state, conn)


class _EndedRoot:
    """What an outermost block's ``_root`` becomes once its transaction ended (it was the block
    itself): no reference cycle then keeps the ended checkout alive until the cyclic GC runs.

    It answers every question asked of a root: another thread holding a copy of the context may
    find the block open (``enclosing_transaction``) and look at its root just after it ended; it
    then sees a transaction of no thread and no task (so: not its own)."""

    _ended = True
    _stack: tuple[()] = ()
    _doomed = None
    thread_ident = 0
    _task = None
    _conn = None
    _state = None


_ENDED = _EndedRoot()


class Transaction(Permit):
    """A write transaction checkout; see :meth:`sqlitefair.Pool.transaction`.

    The outermost block (its ``_root`` is itself) holds the permit and the
    connection and keeps ``_stack``, its open blocks, outermost first; nested
    blocks point at it.  ``_doomed`` says why the transaction can only roll
    back (its blocks were interleaved).

    The outermost block is its own writer permit: the lock records the
    checkout itself as its holder (``thread_ident``, ``since``), so a
    transaction makes no separate permit object.
    """

    # The fields of the common path are slots, each set in __init__ (none a class-level default):
    # slot loads and stores are the interpreter's cheapest on every build, and a class-level
    # default would make them generic.  Fields that an outermost block outside an event loop
    # only reads, or never touches, are class-level defaults instead (set, they go to the
    # instance's __dict__): every store saved counts on the free-threaded build, where none is
    # specialised.
    __slots__ = ("_pool", "_timeout", "_state", "_conn", "_root", "_stack", "_token", "_ended", "__dict__")
    _savepoint: str | None = None  # a nested block's SAVEPOINT name
    _task: object = None  # the asyncio task that entered the outermost block (None outside a loop)
    _doomed: str | None = None  # why the transaction can only roll back (its blocks were interleaved)
    _cancel: CancelScope | None = None  # lets another thread (the asyncio facade) take it out of the queue

    #: Whether entering records a write wait in the pool's statistics (a combiner's transactions,
    #: which run calls whose waits it recorded itself, do not).  A class attribute: slots hide none.
    _records_wait = True
    #: Whether the transaction ran ``write()`` calls of other threads (a combiner's, see
    #: ``_combining``): their callers are back at once, so the cross-process turn is kept for
    #: them at the commit, as for a thread queued for the writer.
    _for_others = False

    def __init__(self, pool: Pool, timeout: float | None, cancel: CancelScope | None = None) -> None:
        self._pool = pool
        self._timeout = timeout
        if cancel is not None:
            self._cancel = cancel
        self._state: _ProcessState | None = None  # set on entering: "entered" is "_state is not None"
        self._conn: Connection | None = None
        self._root: Transaction | _EndedRoot | None = None
        self._stack: list[Transaction] | tuple[()] = ()  # the outermost block's open blocks, outermost first
        # The ContextVar token that made this block the innermost; kept after the block ended, since
        # its old_value (the block before, or Token.MISSING) links the context's chain of blocks.
        self._token: Any = None
        self._ended = False
        # Permit's thread_ident (the thread that entered the outermost block) and since are set by
        # the writer lock at the grant, and read only after it.

    def __repr__(self) -> str:
        kind = "ended" if self._ended else "open" if self._state is not None else "not entered"
        return f"<sqlitefair transaction of {self._pool.path!r}, {kind}>"

    # -- entering -----------------------------------------------------------------

    @protected
    def __enter__(self) -> Connection:
        if self._state is not None:
            raise SqlitefairError("this transaction() context was already entered; call pool.transaction() again")
        pool = self._pool
        state = self._state = pool._state
        if _current.get() is not None:  # inside some block of this context: nested, if it is ours
            parent = enclosing_transaction(state)
            if parent is not None:
                return self._enter_savepoint(parent)
        # The outermost block (written out here rather than in a helper: this runs on every transaction).
        if state.refusal is not None:  # the pool closed, or a fork child that may not write
            raise state.refusal()
        gate = state.writer
        start = monotonic()
        timeout = self._timeout
        deadline = None if timeout is None else start + timeout
        try:
            try:
                # The checkout is its own permit, and the lock's record of its holder is the record:
                # there is no step between "granted" and "recorded" (see _give_back).
                gate.lock.acquire(timeout, cancel=self._cancel, permit=self, now=start)
            except LockTimeout as exc:
                raise gate.timeout_error(exc, timeout) from None
            # From here on, only this checkout touches the writer connection.
            if state.shut_down:
                raise pool._closed_error()
            procq = gate.procq
            queued = 0.0  # seconds waited behind writers of other processes
            if procq is not None:  # our process's turn (kept from the transaction before, or taken now)
                try:
                    queued = procq.enter(self.since, deadline)
                except QueueTimeout as exc:
                    raise gate.process_timeout_error(exc, timeout, start) from None
            conn = self._conn = gate.conn or gate.connection(deadline)
            backend = pool._backend
            if conn.in_transaction:  # left open by an interrupted holder: heal, count, go on (both bindings)
                backend.execute(conn, "ROLLBACK")
                pool._stats.add("writer_resets")
            try:
                retries = backend.begin(conn, "BEGIN IMMEDIATE", pool._policy, deadline)
            except BusyTimeout as exc:
                pool._stats.add("write_timeouts")
                pool._stats.add("busy_retries", exc.retries)
                raise busy_timeout_error(
                    backend, pool._name, pool._policy, "write lock", exc, start, deadline,
                    gate.lock.statistics().waiting,
                ) from exc.__cause__
            self._stack = [self]  # before _root: the cleanup trusts a _root's _stack
            self._root = self
            # backend.set_holder(), inlined (both bindings keep the holder in _sf_holder; begin() did the rest)
            conn._sf_holder = self.thread_ident
            loop = _running_loop()  # _task(), inlined: outside an event loop this is all it costs
            if loop is not None:
                self._task = current_task(loop)
            self._token = _current.set(self)  # its old_value: Token.MISSING at the outermost
            # Statistics and warnings last: if a warning is an error here, the handler below rolls back.
            if retries:  # waited for another connection's lock since the permit was granted
                now = monotonic()
                pool._stats.write_served(now - start, retries, now - self.since - queued)
                pool._saw_other_writer()  # (with the queue on: a writer outside it)
            elif self._records_wait:  # the wait in the queues (none when the writer was free)
                pool._stats.write_waited(monotonic() - start if queued else self.since - start)
                if state.in_fork_child and procq is None:
                    pool._saw_other_writer()
            return conn  # inside the try: an exception even here gives everything back
        except BaseException:
            self._give_back()
            raise

    def _enter_savepoint(self, parent: Transaction) -> Connection:
        root = parent._root
        assert root is not None
        if root.thread_ident != get_ident():
            raise NestingError(
                "pool.transaction() was nested in a transaction that another thread entered (this thread "
                "inherited its context, e.g. through asyncio.to_thread or contextvars.copy_context); a "
                "transaction's connection belongs to the thread that entered it. Run this block in that "
                "thread, or after its transaction ends."
            )
        if root._task is not None and root._task is not _task():
            raise NestingError(
                "pool.transaction() was nested in a transaction that another asyncio task opened (a task "
                "started inside the block inherits its context); its savepoint would take in the other "
                "task's writes, and its rollback would undo them. Nothing of this block ran. Await the work "
                "in the task that opened the transaction, or give the new task a transaction of its own "
                "after that one ends."
            )
        if root._doomed is not None:
            raise NestingError(root._doomed)
        if root._stack[-1] is not parent:
            raise NestingError(
                "pool.transaction() would open beside another open block of the same transaction (for "
                "example two asyncio tasks nested in one transaction at once); their savepoints would "
                "interleave, so one's rollback could undo the other's work. Nothing of this block ran. "
                "Nest blocks one after the other, or give each task its own transaction."
            )
        self._state = root._state
        self._root = root
        conn = self._conn = root._conn
        name = f"sqlitefair_{len(root._stack)}"
        try:
            self._pool._backend.execute(conn, f"SAVEPOINT {name}")
            self._savepoint = name
            root._stack.append(self)
            self._token = _current.set(self)
            return conn
        except BaseException:
            self._leave()
            raise

    # -- exiting ----------------------------------------------------------------

    @protected
    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._root is not self or self._state is not self._pool._state:
                if self._state is not self._pool._state and self._state is not None:
                    return self._exit_in_fork_child(exc_type)
                if self._root is _ENDED:
                    raise SqlitefairError("this transaction() block has already ended")
                return self._exit_savepoint(exc_type)
            if self._ended:
                raise SqlitefairError("this transaction() block has already ended")
            conn = self._conn
            try:  # still the transaction the pool opened? (read straight off the connection: both bindings)
                intact = self._doomed is None and len(self._stack) == 1 and conn.in_transaction  # type: ignore[union-attr]
            except Exception:  # closed inside the block
                intact = False
            problem = None if intact else self._problem()
            if exc_type is None and problem is None:
                # Commit: check the file, COMMIT, keep the WAL bounded, hand the writer on (written
                # out here, not in a helper: this runs on every transaction).
                pool = self._pool
                start = monotonic()
                files = pool._files  # (see FileWatch.changed) never acknowledge a commit into a deleted file
                if files.changed(0) or start >= files.due:
                    files.check(start)
                if _deferred:
                    raise_if_deferred()  # a Ctrl-C that arrived while this block was ending rolls it back
                timeout = self._timeout
                try:
                    # COMMIT can only meet SQLITE_BUSY outside WAL mode (waiting for readers to leave).
                    pool._backend.begin(conn, "COMMIT", pool._policy, None if timeout is None else start + timeout)
                except BusyTimeout as exc:
                    pool._stats.add("write_timeouts")
                    pool._stats.add("busy_retries", exc.retries)
                    raise busy_timeout_error(
                        pool._backend, pool._name, pool._policy, "commit", exc, start, None if timeout is None else start + timeout
                    ) from exc.__cause__
                state = self._state
                assert state is not None
                wal = pool._wal
                if wal.due <= start:
                    wal.after_commit(conn, state.readers.slots)
                # Committed: hand the writer on, nothing to roll back.  The same steps as _give_back(),
                # straight; if anything here is cut short, __exit__'s handler runs _give_back() to finish.
                if state.shut_down:
                    self._give_back()
                    return
                conn._sf_holder = None  # backend.set_holder(), inlined
                procq = state.writer.procq
                if procq is not None:  # kept for a waiting thread while the turn lasts (after our checkpoint)
                    procq.leave(start, self._for_others or state.writer_lock.has_waiters())
                del self._stack[0]
                try:  # (the token stays: a give-back after this resets it again, which raises and is caught)
                    _current.reset(self._token)
                except (ValueError, RuntimeError):  # ended in another context: see _leave
                    pass
                self._ended = True
                state.writer_lock.release(self)
                self._root = _ENDED  # no longer itself: no reference cycle
                return
            self._give_back()  # rolls back whatever was not committed
            if problem is not None and exc_type is None:
                raise problem
        except BaseException:
            self._abandon()  # whatever was cut short, give back what this block still holds
            raise

    def _exit_in_fork_child(self, exc_type: type[BaseException] | None) -> None:
        """The block began before ``os.fork()`` and ends in the child: the transaction is the parent's.

        Committing or rolling back the copied connection here would commit the parent's work behind
        its back or roll it back through shared memory (a corrupt database), so nothing is touched.
        """
        self._ended = True
        self._token = None
        if exc_type is None:
            raise SqlitefairError(
                "this transaction() block began before os.fork() and ended in the child process; the "
                "transaction belongs to the parent, so the child neither committed nor rolled it back. "
                "Fork outside write blocks."
            )

    @protected
    def _abandon(self) -> None:
        """After an exception anywhere in ``__exit__``: leave nothing behind.  Idempotent."""
        if self._state is not self._pool._state:  # in a fork child: the parent's, do not touch
            self._ended = True
            return
        if self._root is self or self._root is None or self._root is _ENDED:
            self._give_back()
            return
        root = self._root
        if self._savepoint is not None and not root._ended and self in root._stack:
            # Cut short before its savepoint was released or rolled back: undo it, or the whole transaction.
            try:
                self._pool._backend.execute(self._conn, f"ROLLBACK TO {self._savepoint}")
                self._pool._backend.execute(self._conn, f"RELEASE {self._savepoint}")
            except Exception:
                root._doomed = "a nested transaction() block could not be undone after an error; the transaction can only roll back"
            self._savepoint = None
        self._leave()

    def _problem(self) -> SqlitefairError | None:
        """Why this transaction may not commit, or None: is it still the one the pool opened?"""
        backend = self._pool._backend
        conn = self._conn
        try:
            intact = backend.in_transaction(conn)
        except Exception:
            if not backend.is_closed(conn):
                raise
            return TransactionControlError(
                "the writer connection was closed inside the transaction() block (conn.close()); SQLite "
                "rolled the block back, so nothing of it was committed. Do not close pooled connections: "
                "the pool opens a new one for the next transaction."
            )
        if not intact:
            return TransactionControlError(
                "the block's transaction ended before the block did: SQLite rolled it back when a statement "
                "failed (ON CONFLICT ROLLBACK, RAISE(ROLLBACK) in a trigger, an interrupt, a full disk) and the "
                "block carried on, or something the pool could not refuse ended it. Nothing of the block is "
                "committed."
            )
        if self._doomed is not None:
            return NestingError(self._doomed)
        if len(self._stack) != 1:
            return NestingError(
                f"the transaction ended while {len(self._stack) - 1} block(s) nested in it were still open "
                "(blocks exited out of order, e.g. from interleaved generators); it was rolled back."
            )
        return None

    @protected
    def _give_back(self) -> None:
        """Return what this (outermost) checkout holds: roll back, hand the writer on.  Idempotent."""
        state = self._state
        lock = None if state is None else state.writer.lock
        # Only while the lock names this checkout its holder: once released (and this call repeats a
        # give-back that was cut short after the release), the connection may be the next holder's.
        if lock is not None and lock.holds(self):
            assert state is not None
            gate = state.writer
            conn = self._conn
            if conn is not None:
                gate.reset(conn)
            if state.shut_down and gate.conn is not None:
                gate.drop(gate.conn)
            if gate.procq is not None:
                gate.procq.abandon()  # (nothing if not taken)
                if state.shut_down:  # the last holder after a close() that timed out: nobody queues any more
                    gate.procq.close()
        stack = self._stack if self._root is self else ()
        if len(stack) > 1:
            for block in stack[1:]:  # nested blocks still open (out of order): they can never run again
                block._ended = True
        self._leave()
        if lock is not None:
            lock.discard(self)  # nothing if not held (any more)
        if self._root is self:
            self._root = _ENDED  # no longer itself: no reference cycle

    def _exit_savepoint(self, exc_type: type[BaseException] | None) -> None:
        root = self._root
        assert root is not None
        if self._ended or root._ended:
            self._leave()
            raise NestingError(
                "this nested transaction() block ended after its enclosing transaction had already ended "
                "(blocks ended out of order); the transaction was rolled back, nothing of this block was committed."
            )
        if root._stack and root._stack[-1] is self:
            self._end_savepoint(exc_type is None and root._doomed is None)
            self._leave()
            return
        problem = self._unwind_out_of_order()
        self._leave()
        raise problem

    def _end_savepoint(self, success: bool) -> None:
        """RELEASE (success) or ROLLBACK TO this block's savepoint; ``_savepoint`` is None once it is gone."""
        backend, conn, name = self._pool._backend, self._conn, self._savepoint
        try:
            intact = backend.in_transaction(conn)
        except Exception:
            self._savepoint = None
            return  # closed: the outer block reports it
        if not intact:  # SQLite rolled the whole transaction back; whoever caught the error must not go on
            self._savepoint = None
            root = self._root
            assert root is not None
            message = (
                "SQLite rolled back the whole transaction when a statement of this nested block failed (ON "
                "CONFLICT ROLLBACK, RAISE(ROLLBACK) in a trigger, an interrupt, a full disk), not only this "
                "block's savepoint; nothing of the enclosing transaction is committed."
            )
            root._doomed = message
            if success:
                raise TransactionControlError(message)
            return
        if success:
            try:
                backend.execute(conn, f"RELEASE {name}")
                self._savepoint = None
                return
            except Exception:
                backend.execute(conn, f"ROLLBACK TO {name}")
                backend.execute(conn, f"RELEASE {name}")
                self._savepoint = None
                raise
        backend.execute(conn, f"ROLLBACK TO {name}")
        backend.execute(conn, f"RELEASE {name}")
        self._savepoint = None

    def _unwind_out_of_order(self) -> NestingError:
        """This block ends while a block entered after it is open: undo both, doom the transaction."""
        root = self._root
        assert root is not None
        message = (
            "transaction() blocks of one transaction ended out of order (a block ended while a block "
            "entered after it was still open, e.g. interleaved generators or tasks); their savepoints "
            "would interleave, so the whole transaction is rolled back and can no longer commit."
        )
        root._doomed = message
        stack = root._stack
        if self in stack:
            del stack[stack.index(self) + 1 :]  # the later blocks go with this one's savepoint
            backend = self._pool._backend
            try:
                backend.execute(self._conn, f"ROLLBACK TO {self._savepoint}")
                backend.execute(self._conn, f"RELEASE {self._savepoint}")
            except Exception:  # the outermost block rolls everything back anyway
                log.debug("rolling back an out-of-order savepoint failed", exc_info=True)
            self._savepoint = None
        return NestingError(message)

    def _leave(self) -> None:
        """Stop being an open block: off the stack, out of the context.  Idempotent."""
        root = self._root
        if root is not None:
            stack = root._stack
            if stack and stack[-1] is self:
                del stack[-1]
            elif self in stack:
                stack.remove(self)
        token = self._token
        if token is not None and not self._ended:
            try:
                _current.reset(token)
            except (ValueError, RuntimeError):
                # Used already (a give-back repeating a commit's steps), or ended in another context
                # than it began in (another thread, a generator resumed elsewhere): that context still
                # names this checkout, which lookups skip once ended.
                pass
        self._ended = True
