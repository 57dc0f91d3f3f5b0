"""The reader role: read-only connections in FIFO-granted slots, and the checkout that borrows one.

Readers run in parallel with each other and with the writer (WAL mode).
Inside an open transaction of the same context, ``pool.read()`` hands out
the transaction's connection instead: it sees the transaction's own writes
and cannot deadlock on the pool.

Like a transaction, a :class:`Read` checkout records its slot in the same
statement that acquires it and gives it back idempotently (the slot's
``owner`` says whether it is still ours), so an exception at any point
leaves no slot checked out.
"""

from __future__ import annotations

from threading import get_ident
from time import monotonic
from types import TracebackType
from typing import TYPE_CHECKING

from ._backends import Connection
from ._errors import SqlitefairError, queue_timeout_error, reads_nested_error
from ._interrupts import protected
from ._slots import FairSlots, Slot
from ._waitqueue import CancelScope, LockTimeout
from ._writer import _current, _task, enclosing_transaction

if TYPE_CHECKING:
    from ._pool import Pool, _ProcessState

__all__ = ("ReaderSet", "Read")


class ReaderSet:
    """The readers of one pool in one process: ``readers`` slots, each holding one connection (or None).

    Invariant: a slot's ``item`` is read and replaced only by the slot's holder.
    """

    def __init__(self, pool: Pool, state: _ProcessState, count: int) -> None:
        self.slots = FairSlots(count)
        self._pool = pool
        self._state = state

    def acquire(self, timeout: float | None, cancel: CancelScope | None, owner: object) -> Slot:
        """A reader slot in FIFO order, or :class:`PoolTimeout`; :class:`NestingError` at once if
        this thread holds every slot already (a ``read()`` nested in all of them)."""
        me = get_ident()
        for slot in self.slots._slots:  # usually one look: the first slot is free or someone else's
            if slot.holder != me or not slot.lock.locked():
                break
        else:
            raise reads_nested_error(self._pool._name, self.slots.capacity)
        try:
            return self.slots.acquire(timeout, cancel=cancel, owner=owner)
        except LockTimeout as exc:
            pool = self._pool
            pool._stats.add("read_timeouts")
            raise queue_timeout_error(pool._backend, pool._name, "reader", exc.waited, timeout, exc.statistics) from None

    def connection(self, slot: Slot, deadline: float | None) -> Connection:
        """The slot's connection, opened on first use (the caller holds the slot)."""
        if self._state.shut_down:  # close() ran while this thread queued
            raise self._pool._closed_error()
        conn = slot.item
        if conn is None:
            conn = slot.item = self._pool._open_registered("reader", deadline)
        return conn

    @protected
    def reset(self, slot: Slot, conn: Connection) -> None:
        """Take ``conn`` back: end a read transaction the caller left open, or drop a broken connection."""
        pool = self._pool
        backend = pool._backend
        backend.set_holder(conn, None)
        keep = not self._state.shut_down
        try:
            if backend.in_transaction(conn):  # the caller began one: do not hand it on
                backend.execute(conn, "ROLLBACK")
        except Exception:  # closed by the caller, or broken: the next reader opens a fresh one
            keep = False
        if not keep and slot.item is conn:
            slot.item = None
            pool._discard(self._state, conn)

    def close_idle(self) -> None:
        """After close(): close the connections in slots nobody holds."""
        for conn in self.slots.take_free_items():
            self._pool._discard(self._state, conn)


class Read:
    """A read checkout; see :meth:`sqlitefair.Pool.read`."""

    __slots__ = ("_pool", "_timeout", "_cancel", "_state", "_slot", "_conn", "_entered", "_borrowed")

    def __init__(self, pool: Pool, timeout: float | None, cancel: CancelScope | None = None) -> None:
        self._pool = pool
        self._timeout = timeout
        self._cancel = cancel  # lets another thread (the asyncio facade) take this waiter out of the queue
        self._state: _ProcessState | None = None
        self._slot: Slot | None = None  # while held
        self._conn: Connection | None = None
        self._entered = False
        self._borrowed = False  # handed the enclosing transaction's connection

    @protected
    def __enter__(self) -> Connection:
        if self._entered:
            raise SqlitefairError("this read() context was already entered; call pool.read() again")
        self._entered = True
        pool = self._pool
        state = pool._state
        if _current.get() is not None:  # inside some transaction block of this context
            tx = enclosing_transaction(state)
            # Our own transaction, on the thread that entered it: read our own writes.  (A thread that
            # inherited the context, e.g. through asyncio.to_thread, takes a reader of its own.)
            root = None if tx is None else tx._root
            # ... and task: a sibling task must not see, or write into, another task's transaction.
            if root is not None and root.thread_ident == get_ident() and (root._task is None or root._task is _task()):
                self._borrowed = True
                conn = self._conn = tx._conn
                return conn
        if state.refusal is not None:  # the pool closed, or a fork child that may not use it
            raise state.refusal()
        self._state = state
        start = monotonic()
        readers = state.readers
        try:
            slot = self._slot = readers.acquire(self._timeout, self._cancel, self)
            conn = slot.item
            if conn is None or state.shut_down:
                conn = readers.connection(slot, None if self._timeout is None else start + self._timeout)
            self._conn = conn
            conn._sf_holder = get_ident()  # backend.set_holder(), inlined (both bindings keep it there)
            return conn  # inside the try: an exception even here gives the slot back
        except BaseException:
            self._give_back()
            raise

    @protected
    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._borrowed:
                return  # the transaction owns the connection
            slot, conn, state = self._slot, self._conn, self._state
            if slot is not None and slot.owner is self and state is self._pool._state and not state.shut_down:  # type: ignore[union-attr]
                # The common path, straight (the same steps as _give_back(), which finishes them if cut short).
                conn._sf_holder = None  # type: ignore[union-attr]
                if not conn.in_transaction:  # type: ignore[union-attr]  # both bindings
                    state.readers.slots.release(slot)  # type: ignore[union-attr]
                    self._slot = None
                    return
            self._give_back()
        except BaseException:
            self._give_back()  # cut short: once more, it is idempotent
            raise

    @protected
    def _give_back(self) -> None:
        """Return the slot, if this checkout still holds it.  Idempotent."""
        slot, state = self._slot, self._state
        if slot is None or state is None:
            return
        if state is not self._pool._state:  # began before a fork, ends in the child: the parent's slot
            self._slot = None
            return
        readers = state.readers
        conn = self._conn
        if conn is not None and slot.owner is self:
            readers.reset(slot, conn)
        readers.slots.discard(slot, self)
        self._slot = None
        if state.shut_down:  # close() may have looked at the slots before this one came back
            readers.close_idle()
