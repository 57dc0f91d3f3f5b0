"""A Hypothesis state machine: the real pool against a tiny model of who holds what.

Three actor threads each run commands sent to them one at a time, so the
interleaving is chosen (and shrunk) by Hypothesis.  Checkouts use
``timeout=0``: whenever the model says the writer or every reader is taken,
the pool must raise PoolTimeout, and otherwise it must succeed.
"""

from __future__ import annotations

import queue
import sqlite3
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from hypothesis.strategies import integers, sampled_from

import sqlitefair

ACTORS = 3
READERS = 2


class Actor:
    """A thread that runs one command at a time on behalf of the state machine."""

    def __init__(self, name: str) -> None:
        self.inbox: queue.Queue[Callable[[], Any] | None] = queue.Queue()
        self.outbox: queue.Queue[tuple[bool, Any]] = queue.Queue()
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.thread.start()
        self.write: Any = None  # the entered transaction() context, if any
        self.write_conn: Any = None  # and the connection it returned
        self.reads: list[Any] = []  # entered read() contexts, innermost last

    def _loop(self) -> None:
        while (command := self.inbox.get()) is not None:
            try:
                self.outbox.put((True, command()))
            except BaseException as exc:  # noqa: BLE001 - handed back to the test
                self.outbox.put((False, exc))

    def run(self, command: Callable[[], Any]) -> Any:
        self.inbox.put(command)
        ok, value = self.outbox.get(timeout=30)
        if not ok:
            raise value
        return value

    def stop(self) -> None:
        self.inbox.put(None)
        self.thread.join(30)


class PoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.folder = tempfile.TemporaryDirectory()
        self.path = Path(self.folder.name) / "state.db"
        self.pool = sqlitefair.connect(self.path, readers=READERS, timeout=10)
        with self.pool.transaction() as conn:
            conn.execute("create table t(id integer primary key)")
        self.actors = [Actor(f"actor-{i}") for i in range(ACTORS)]
        self.writer: int | None = None  # model: which actor holds the writer
        self.readers_out = 0  # model: reader connections checked out (not counting borrowed writers)
        self.committed: set[int] = set()
        self.pending: set[int] = set()
        self.next_id = 0

    # -- writes --

    @rule(actor=integers(0, ACTORS - 1))
    def begin_write(self, actor: int) -> None:
        a = self.actors[actor]
        if a.write is not None:
            return  # nesting is covered by the unit tests
        ctx = self.pool.transaction(timeout=0)
        try:
            a.write_conn = a.run(ctx.__enter__)
        except sqlitefair.PoolTimeout:
            assert self.writer is not None and self.writer != actor
            return
        assert self.writer is None, f"actor {actor} got the writer while actor {self.writer} holds it"
        self.writer = actor
        a.write = ctx

    @precondition(lambda self: self.writer is not None)
    @rule()
    def insert(self) -> None:
        a = self.actors[self.writer]  # type: ignore[index]
        row = self.next_id
        self.next_id += 1
        a.run(lambda: a.write_conn.execute("insert into t(id) values (?)", (row,)))
        self.pending.add(row)

    @precondition(lambda self: self.writer is not None)
    @rule(commit=sampled_from([True, False]))
    def end_write(self, commit: bool) -> None:
        a = self.actors[self.writer]  # type: ignore[index]
        ctx, a.write = a.write, None
        if commit:
            a.run(lambda: ctx.__exit__(None, None, None))
            self.committed |= self.pending
        else:
            error = RuntimeError("roll back")
            a.run(lambda: ctx.__exit__(RuntimeError, error, None))
        self.pending = set()
        self.writer = None

    # -- reads --

    @rule(actor=integers(0, ACTORS - 1))
    def begin_read(self, actor: int) -> None:
        a = self.actors[actor]
        ctx = self.pool.read(timeout=0)
        own = sum(not borrowed for _, borrowed in a.reads)  # readers this actor holds itself
        try:
            conn = a.run(ctx.__enter__)
        except sqlitefair.NestingError:  # it would wait for itself
            assert own == READERS and self.writer != actor
            return
        except sqlitefair.PoolTimeout:
            assert self.readers_out == READERS and own < READERS and self.writer != actor
            return
        borrowed = self.writer == actor
        if borrowed:
            assert conn is a.write_conn
        else:
            assert self.readers_out < READERS
            self.readers_out += 1
        seen = {r[0] for r in a.run(lambda: conn.execute("select id from t").fetchall())}
        assert seen == (self.committed | self.pending if borrowed else self.committed)
        a.reads.append((ctx, borrowed))

    @rule(actor=integers(0, ACTORS - 1))
    def end_read(self, actor: int) -> None:
        a = self.actors[actor]
        if not a.reads:
            return
        ctx, borrowed = a.reads.pop()  # a borrowed writer may outlive its transaction: exit is a no-op
        a.run(lambda: ctx.__exit__(None, None, None))
        if not borrowed:
            self.readers_out -= 1

    # -- invariants --

    @invariant()
    def pool_matches_model(self) -> None:
        stats = self.pool.stats()
        assert stats.writer_in_use == (self.writer is not None)
        assert stats.readers_in_use == self.readers_out
        assert stats.readers_open <= READERS
        assert stats.writer_queue == 0 and stats.reader_queue == 0

    def teardown(self) -> None:
        try:
            for a in self.actors:
                while a.reads:
                    ctx, borrowed = a.reads.pop()
                    a.run(lambda: ctx.__exit__(None, None, None))
                    self.readers_out -= 0 if borrowed else 1
                if a.write is not None:
                    ctx, a.write = a.write, None
                    a.run(lambda: ctx.__exit__(None, None, None))
                    self.committed |= self.pending
            stats = self.pool.stats()
            assert stats.readers_in_use == 0  # every checkout came back
            self.pool.close(timeout=5)
            conn = sqlite3.connect(self.path)
            assert {r[0] for r in conn.execute("select id from t")} == self.committed
            conn.close()
        finally:
            for a in self.actors:
                a.stop()
            self.folder.cleanup()


PoolMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
test_pool_state_machine = PoolMachine.TestCase
