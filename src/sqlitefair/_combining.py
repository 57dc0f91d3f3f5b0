"""``pool.write(fn)``: FIFO-fair writes without a thread wake-up between two of them.

With the context manager, every transaction ends by handing the writer to
the next thread in the queue, which must wake up (50-90 us here) before the
writer does anything again: on short transactions the writer is idle most of
the time.  A *callable* can be run by whichever thread holds the writer, so:

* **Where.**  Calls are combined with group commit, and wherever the GIL is off
  (:func:`combines`); with the GIL on and no group commit each call runs in its
  caller's thread as a ``transaction()`` block, which measured faster there.
* **Flat combining.**  ``write(fn)`` queues in the writer's FIFO queue like a
  transaction, carrying its call.  The thread that gets the writer (the
  *combiner*) runs its own call, then takes the ``write()`` calls waiting at
  the head of the queue and runs them too, in their order, each in a
  transaction of its own, and wakes each caller with its result.  It stops at
  the first waiter that is not a ``write()`` call (a ``transaction()``, a
  ``close()``), which gets the writer handed over as usual: arrival order is
  kept across both kinds.  (On a free-threaded build a ``transaction()`` with
  the default bounded hand-off first waits up to ``BATON_WAIT`` at the lock's
  baton, where the combiner does not see it: calls that arrive during that
  wait may run before it.)  A combiner serves for at most
  ``COMBINE_SECONDS``, then hands the writer on (to a ``write()`` caller,
  which combines in turn).
* **Group commit** (``connect(..., group_commit=True)``).  The combiner runs
  consecutive calls in one ``BEGIN IMMEDIATE ... COMMIT``, each in a
  ``SAVEPOINT`` of its own (:func:`_run_in_savepoint`; the first call of a
  group needs none, see :func:`_run_first`): a call that raises rolls back
  only itself and gets its exception; a failed ``COMMIT`` fails every call
  of the batch.  A batch holds at most ``GROUP_COMMIT_MAX_CALLS``
  calls and takes new ones for at most ``GROUP_COMMIT_MAX_SECONDS``.  Every
  call returns only after the ``COMMIT`` that contains it: durability is
  that of a transaction of its own.

The combiner holds the writer lock with its call as the permit and *lends*
it to each transaction it opens (``FairLock._lend``), so those transactions
are ordinary ones: the same checks, the same refusal of transaction
control, the same statistics and interrupt protection.

Ctrl-C reaches the main thread only, so the main thread runs its own call
and no other: a ``KeyboardInterrupt`` can never land in somebody else's
call.  A caller interrupted while its call waits in the queue leaves the
queue and its call never runs; once a combiner has taken the call up, the
caller gets its ``KeyboardInterrupt`` at once and the call still runs to its
end (committed or rolled back as usual); nobody else's result is affected.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from threading import get_ident
from time import monotonic
from typing import TYPE_CHECKING, Any, Callable

from . import _interrupts
from ._backends import Backend
from ._errors import GroupCommitError, NestingError, SqlitefairError, TransactionControlError
from ._guard import RESERVED_SAVEPOINT_PREFIX
from ._fairlock import FairLock, Permit, _gil_enabled
from ._interrupts import interruptible, protected
from ._waitqueue import LockTimeout, Waiter
from ._writer import Transaction, _current, enclosing_transaction

if TYPE_CHECKING:
    from ._pool import Pool

__all__ = ("write", "write_async", "combines", "COMBINE_SECONDS", "GROUP_COMMIT_MAX_CALLS", "GROUP_COMMIT_MAX_SECONDS")

#: Seconds a combiner serves other callers' write() calls before it hands the writer on.
COMBINE_SECONDS = 0.005
#: Calls in one group commit, at most.
GROUP_COMMIT_MAX_CALLS = 64
#: Seconds a group commit takes new calls for, from its BEGIN.
GROUP_COMMIT_MAX_SECONDS = 0.002


class _Call(Permit):
    """One ``write()`` call: what to run, and its outcome.  It is the caller's permit in the writer
    queue (so the lock can grant it the writer, or a combiner can take it up)."""

    __slots__ = ("fn", "args", "kwargs", "result", "error", "done", "arrived", "timeout", "deadline")

    def __init__(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float | None
    ) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = False
        self.arrived = arrived = monotonic()
        self.timeout = timeout
        #: Until when (``time.monotonic()``) the call may still start: a combiner that took it up
        #: with others and reaches it later fails it with a timeout instead (see _run_group).
        self.deadline = None if timeout is None else arrived + timeout

    def outcome(self) -> Any:
        """Return the call's result, or raise its exception."""
        error = self.error
        if error is not None:
            self.error = None  # no cycle through the traceback's frames
            raise error
        return self.result


class _LentTransaction(Transaction):
    """A transaction a combiner opens on the writer it holds (lent to it: no wait to record)."""

    __slots__ = ()
    _records_wait = False


def combines(pool: Pool) -> bool:
    """Whether ``pool.write()`` calls queue for a combiner (else each runs in its caller's thread, as
    a ``transaction()`` block does): with group commit, and wherever the GIL is off.

    With the GIL on, combining measured slower than a block in the caller's thread (16 threads, 2
    cores, short transactions, side by side: 0.59x a block's throughput on 3.11 and on 3.13):
    every caller the combiner wakes takes the GIL from it at its next SQLite call, so the
    callers' Python runs between the combiner's calls instead of beside them, and the bounded
    hand-off a block gets (a running thread may take the writer while the oldest waiter is
    younger than 1 ms) wakes nobody on most commits.  Without the GIL the callers run on other
    cores; combining spares the writer a wake-up per call there."""
    return pool._group_commit or not _gil_enabled()


def write(pool: Pool, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float | None) -> Any:
    """See :meth:`sqlitefair.Pool.write`."""
    state = pool._state
    if _current.get() is not None and enclosing_transaction(state) is not None:  # nested: a savepoint, here
        with pool.transaction() as conn:
            return fn(conn, *args, **kwargs)
    if not combines(pool):  # a block in this thread, with the pool's queue, hand-off and timeout
        with pool.transaction(timeout=timeout) as conn:
            return fn(conn, *args, **kwargs)
    if state.refusal is not None:  # the pool closed, or a fork child that may not write
        raise state.refusal()
    call = _Call(fn, args, kwargs, timeout)
    _queue_and_run(pool, call)
    return call.outcome()


class _LoopWake:
    """The parker of an event loop's waiter: ``release()`` (from any thread) sets an asyncio.Event."""

    __slots__ = ("_loop", "event")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.event = asyncio.Event()

    def release(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self.event.set)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass


async def write_async(pool: Pool, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float | None) -> Any:
    """``write()`` for a task: it queues without a thread; a thread runs the call (or is the
    combiner) only once the call's turn has come.  See :meth:`sqlitefair.aio.AsyncPool.write`."""
    state = pool._state
    if state.refusal is not None:  # the pool closed, or a fork child that may not write
        raise state.refusal()
    call = _Call(fn, args, kwargs, timeout)
    lock = state.writer.lock
    wake = _LoopWake(asyncio.get_running_loop())
    waiter = lock._acquire_or_join(call, wake)
    if waiter is not None:
        try:
            try:
                await asyncio.wait_for(wake.event.wait(), timeout)
            except (TimeoutError, asyncio.TimeoutError):
                outcome = lock._leave_queue(waiter)
                if outcome == "left":
                    exc = LockTimeout(monotonic() - call.arrived, lock.statistics())
                    raise state.writer.timeout_error(exc, timeout) from None
                if outcome == "claimed":  # taken up: a combiner runs it (or times it out before it starts)
                    await wake.event.wait()
        except asyncio.CancelledError:
            if lock._leave_queue(waiter) == "granted" and not call.done:
                lock.release(call)  # our turn came as we stopped waiting: pass it on
            raise
    if not call.done:  # the writer is ours: serve on a thread (the event loop must not block)
        loop = asyncio.get_running_loop()
        try:
            job = loop.run_in_executor(None, functools.partial(contextvars.copy_context().run, _serve, pool, lock, call))
        except BaseException:  # no thread will serve it (the executor is shut down): hand the writer on
            lock.release(call)
            raise
        # Shielded: cancelled before a thread took it up, the job would never run, and the writer
        # would stay held by this call with nobody to hand it on.  Once the writer is ours the call
        # runs, as one a combiner took up does; a cancelled task only stops waiting for its outcome.
        await asyncio.shield(job)
    return call.outcome()


@protected
def _queue_and_run(pool: Pool, call: _Call) -> None:
    """Queue ``call`` for the writer; run it (and others) if granted the writer, else it was run."""
    state = pool._state
    lock = state.writer.lock
    try:
        lock._queue_call(call, call.arrived, call.timeout)  # the writer, or our call done by a combiner
        if not call.done:  # granted the writer: _serve's finally hands it on
            _serve(pool, lock, call)
    except BaseException as exc:
        # Cut short between the grant and _serve's try, or in its finally: hand the writer on.
        lock._end_loan(call)
        if lock.holds(call):
            lock.release(call)
        if isinstance(exc, LockTimeout):  # (nothing held: it never got the writer)
            raise state.writer.timeout_error(exc, call.timeout) from None
        raise


@protected
def _serve(pool: Pool, lock: FairLock, own: _Call) -> None:
    """Holding the writer as ``own``: run it, then (off the main thread) the write() calls queued
    next, in order, for at most COMBINE_SECONDS; then hand the writer on."""
    taken: list[tuple[_Call, Waiter]] = []  # claimed and not yet completed
    try:
        state = pool._state
        combine = _interrupts._main_ident != get_ident()
        group = pool._group_commit
        until = own.since + COMBINE_SECONDS
        pool._stats.write_waited(own.since - own.arrived)  # (a call a combiner ran was counted by it)
        batch: list[tuple[_Call, Waiter | None]] = [(own, None)]
        while True:
            if group:
                left = _run_group(pool, lock, own, batch, taken if combine else None)
            else:
                for call, waiter in batch:
                    if waiter is not None:  # taken up from the queue (one at a time here): it starts now
                        pool._stats.write_waited(monotonic() - call.arrived)
                    _run_alone(pool, lock, own, call)
                left = []
            # Calls run: their callers are woken with the next claim, once it has let the lock's
            # mutex go (or by the finally below); a completed waiter has its grant set.
            done = [(waiter, call) for call, waiter in batch if waiter is not None and call.done]
            batch = list(left)
            if batch:  # (group commit: calls a broken transaction did not run go in the next one)
                for waiter, call in done:
                    lock._complete(waiter, call)
            elif not combine or monotonic() >= until or state.shut_down:
                break
            else:
                claimed = _claim(pool, lock, own, GROUP_COMMIT_MAX_CALLS if group else 1, done)
                if not claimed:
                    break
                batch = [(waiter.permit, waiter) for waiter in claimed]
                taken = [item for item in taken if item[1].grant is None]
                taken.extend(batch)  # type: ignore[arg-type]
    finally:
        for call, waiter in taken:  # cut short: nobody may be left waiting for an outcome
            if waiter.grant is not None:  # completed already (only this thread completes them)
                continue
            if not call.done:
                call.error = SqlitefairError("the combiner running this write() call stopped before it ran")
                call.done = True
            lock._complete(waiter, call)
        lock._end_loan(own)
        lock.release(own)


def _claim(
    pool: Pool, lock: FairLock, own: Permit, limit: int, done: list[tuple[Waiter, _Call]] | None = None
) -> list[Waiter]:
    """Take the write() calls at the head of the queue, up to ``limit``; then wake the callers of
    ``done``, (waiter, call) pairs whose calls ran.  Taking several under one acquisition of the
    lock's mutex spares a group commit an acquisition per call.  (Their waits are recorded when
    they start.)"""
    return lock._claim_next(own, _Call, done, limit)


def _run_alone(pool: Pool, lock: FairLock, own: _Call, call: _Call) -> None:
    """``call`` in a transaction of its own, on the writer ``own`` holds."""
    tx = _LentTransaction(pool, pool._timeout)
    if call is not own:  # another thread's call: keep the turn across processes for its next one
        tx._for_others = True
    lock._lend(own, tx)
    try:
        with tx as conn:
            call.result = _invoke(call, conn)
    except BaseException as exc:  # noqa: BLE001 - the caller's outcome, raised in the caller
        call.error = exc
    finally:
        lock._end_loan(own)
    call.done = True


def _run_group(
    pool: Pool,
    lock: FairLock,
    own: _Call,
    batch: list[tuple[_Call, Waiter | None]],
    taken: list[tuple[_Call, Waiter]] | None,
) -> list[tuple[_Call, Waiter | None]]:
    """Run ``batch`` (and, if ``taken`` is given, write() calls claimed from the queue while the
    batch is open) in one transaction, each call in a savepoint; return the calls that did not run
    (the transaction could only roll back: they go in the next one).  Every call of ``batch`` is
    done on return: committed, or failed with nothing of it committed."""
    tx = _LentTransaction(pool, pool._timeout)
    backend = pool._backend
    left: list[tuple[_Call, Waiter | None]] = []
    begun = False
    i = 0  # batch[i] is the call that runs (or runs next)
    started = 0  # the calls of batch[:started] began (they ran, or may have)
    record = pool._stats.write_waited
    try:
        lock._lend(own, tx)
        with tx as conn:
            begun = True
            until = monotonic() + GROUP_COMMIT_MAX_SECONDS
            while True:
                if i == len(batch):
                    if taken is None or len(batch) >= GROUP_COMMIT_MAX_CALLS or monotonic() >= until:
                        break
                    claimed = _claim(pool, lock, tx, GROUP_COMMIT_MAX_CALLS - len(batch))
                    if not claimed:
                        break
                    for waiter in claimed:
                        batch.append((waiter.permit, waiter))
                        taken.append((waiter.permit, waiter))
                if tx._doomed is not None or not tx._conn.in_transaction:
                    left = batch[i:]  # a call before broke the transaction: these run in the next one
                    del batch[i:]
                    break
                call, waiter = batch[i]
                if waiter is not None:  # taken up from the queue, maybe with others: it starts now, if
                    now = monotonic()
                    if i and now >= until:  # the group has run long enough: the rest go in the next one
                        left = batch[i:]
                        del batch[i:]
                        break
                    if call.deadline is not None and now >= call.deadline:  # its time ran out meanwhile
                        _timed_out(pool, call, now)
                        started = i = i + 1
                        continue
                    record(now - call.arrived)
                    tx._for_others = True  # keep the turn across processes for its caller's next call
                started = i + 1
                if i:
                    _run_in_savepoint(backend, tx, conn, call)
                elif _run_first(tx, conn, call):
                    raise _FirstCallFailed  # roll back the transaction, which holds only this call's work
                i += 1
    except BaseException as exc:  # noqa: BLE001 - nothing of the batch is committed
        if begun:  # calls not begun yet run in the next transaction; the others failed
            left = batch[started:] + left
            del batch[started:]
        for call, _ in batch:
            if call.error is None:
                call.error = _group_failure(exc, call, own, None if begun else batch[0][0])
    finally:
        lock._end_loan(own)
    for call, _ in batch:
        call.done = True
    return left


def _timed_out(pool: Pool, call: _Call, now: float) -> None:
    """``call`` was taken up with others and its timeout ran out before its turn in the group: it
    fails as if it had timed out in the queue (``timeout`` bounds the wait before a call starts)."""
    gate = pool._state.writer
    call.error = gate.timeout_error(LockTimeout(now - call.arrived, gate.lock.statistics()), call.timeout)


def _group_failure(exc: BaseException, call: _Call, own: _Call, first: _Call | None) -> BaseException:
    """What ``call`` gets when its group's transaction failed with ``exc``: ``exc`` itself if it is
    an interrupt of this thread and ``call`` its own (a Ctrl-C stays a KeyboardInterrupt), or if
    the transaction never began and ``call`` is ``first`` (a timeout, a closed pool); else a
    :class:`GroupCommitError` from ``exc``."""
    if (call is own and not isinstance(exc, Exception)) or call is first:
        return exc
    if first is not None:
        error = GroupCommitError(f"the group commit for this write() call could not begin ({exc})")
    else:
        error = GroupCommitError(
            f"the group commit that contained this write() call failed ({type(exc).__name__}: {exc}); "
            "nothing of the call was committed"
        )
    error.__cause__ = exc
    return error


class _FirstCallFailed(Exception):
    """The first call of a group raised: its transaction, which holds nothing else, rolls back."""


def _run_first(tx: Transaction, conn: Any, call: _Call) -> bool:
    """Run the first call of a group straight in its transaction ``tx``, without a savepoint:
    nothing else is in the transaction yet, so if the call raises, rolling ``tx`` back undoes
    only its work (the calls after it go in the next transaction).  That spares two statements
    per group, all of them for a call that runs alone.  Returns whether the call raised."""
    try:
        call.result = _invoke(call, conn)
    except BaseException as exc:  # noqa: BLE001 - the caller's outcome, raised in the caller
        call.error = exc
        return True
    try:
        still_open = conn.in_transaction
    except Exception:  # closed by the call: the batch's next look at the transaction raises
        return False
    if not (still_open and tx._doomed is None and len(tx._stack) == 1):
        _refuse(tx, call, still_open)
    return False


#: The savepoint each call of a group commit runs in (the prefix is reserved: user SQL cannot end it).
_SAVEPOINT = f"SAVEPOINT {RESERVED_SAVEPOINT_PREFIX}_call"
_RELEASE = f"RELEASE {RESERVED_SAVEPOINT_PREFIX}_call"
_ROLLBACK_TO = f"ROLLBACK TO {RESERVED_SAVEPOINT_PREFIX}_call"

_ROLLED_BACK = (
    "SQLite rolled back the whole group commit when a statement of this write() call failed (ON "
    "CONFLICT ROLLBACK, RAISE(ROLLBACK) in a trigger, an interrupt, a full disk), not only the call's "
    "savepoint; nothing of the call was committed."
)
_LEFT_OPEN = (
    "this write() call left a nested transaction() block open (or ended blocks out of order); the "
    "group commit that contained it was rolled back, nothing of the call was committed. End every "
    "block the call opens before it returns."
)


def _run_in_savepoint(backend: Backend, tx: Transaction, conn: Any, call: _Call) -> None:
    """Run ``call`` in a SAVEPOINT of the batch's transaction ``tx``: if it raises, only its own
    work is rolled back, and it gets its exception.

    Written out here rather than as a nested ``pool.transaction()``, whose bookkeeping cost as
    much as the call on short transactions: blocks the call opens nest in ``tx`` as in any
    transaction.  The call must leave ``tx`` as it found it (open, no block of its own left
    open); if not, ``tx`` is doomed (it can only roll back; the calls after this one go in the
    next transaction) and the call gets the reason.  A call that closed the connection leaves
    it to the batch's next look at the transaction, which raises."""
    backend.execute(conn, _SAVEPOINT)
    try:
        call.result = _invoke(call, conn)
    except BaseException as exc:  # noqa: BLE001 - the caller's outcome, raised in the caller
        call.error = exc
    try:
        still_open = conn.in_transaction
    except Exception:  # closed by the call
        return
    if still_open and tx._doomed is None and len(tx._stack) == 1:  # as the call found it
        try:
            if call.error is not None:
                backend.execute(conn, _ROLLBACK_TO)
            backend.execute(conn, _RELEASE)
            return
        except Exception as exc:  # (never seen) the savepoint could not be ended: roll everything back
            problem = TransactionControlError(f"ending the savepoint of this write() call failed ({exc})")
            problem.__cause__ = exc
            _doom(tx, call, problem)
            return
    _refuse(tx, call, still_open)


def _refuse(tx: Transaction, call: _Call, still_open: bool) -> None:
    """``call`` did not leave the group's transaction ``tx`` as it found it: doom ``tx`` (it can
    only roll back; the calls after this one go in the next transaction) and tell the call why."""
    if not still_open:
        problem: SqlitefairError = TransactionControlError(_ROLLED_BACK)
    elif tx._doomed is not None:
        problem = NestingError(tx._doomed)
    else:
        problem = NestingError(_LEFT_OPEN)
    _doom(tx, call, problem)


def _doom(tx: Transaction, call: _Call, problem: SqlitefairError) -> None:
    if tx._doomed is None:
        tx._doomed = str(problem)
    if call.error is None:
        call.error = problem


@interruptible
def _invoke(call: _Call, conn: Any) -> Any:
    """Run the user's function: a KeyboardInterrupt lands in it as anywhere in user code."""
    return call.fn(conn, *call.args, **call.kwargs)
