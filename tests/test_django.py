"""The Django backend (``"ENGINE": "sqlitefair.django"``) with real threads on a real file.

Django's settings can be configured once per process, so every test here
shares one database file (each its own table) under the aliases below; the
suite of Django's own backend tests runs with scripts/django-tests.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from _helpers import Worker, held_by_another_thread, wait_until
from conftest import STRESS

django = pytest.importorskip("django")

from django.conf import settings  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.db import OperationalError, connections, transaction  # noqa: E402

from sqlitefair.django import base as backend  # noqa: E402

_DIR = Path(tempfile.mkdtemp(prefix="sqlitefair-django-"))
_ALIASES = {
    "default": {"ENGINE": "sqlitefair.django", "NAME": str(_DIR / "app.db"), "OPTIONS": {"timeout": 10}},
    "short": {"ENGINE": "sqlitefair.django", "NAME": str(_DIR / "app.db"), "OPTIONS": {"timeout": 0.2}},
    "deferred": {"ENGINE": "sqlitefair.django", "NAME": str(_DIR / "other.db"), "OPTIONS": {"transaction_mode": "DEFERRED"}},
}

if not settings.configured:
    settings.configure(DATABASES=_ALIASES, INSTALLED_APPS=[], USE_TZ=True)
    django.setup()
elif settings.DATABASES.get("short", {}).get("ENGINE") != "sqlitefair.django":  # pragma: no cover
    pytest.skip("Django was configured by another test module", allow_module_level=True)


def in_thread(fn: Callable[..., Any], *args: Any, name: str | None = None) -> Worker:
    """Run ``fn`` in a new thread with its own Django connections, closed at its end."""

    def run() -> Any:
        try:
            return fn(*args)
        finally:
            connections.close_all()

    w = Worker(run, name=name)
    w.start()
    return w


@contextlib.contextmanager
def a_write_in_atomic(table: str) -> Iterator[None]:
    """An atomic() block that has written a row 'holder' (for held_by_another_thread: the holding
    thread's connections are closed when it leaves)."""
    try:
        with transaction.atomic():
            with connections["default"].cursor() as c:
                c.execute(f"insert into {table}(v) values ('holder')")
            yield
    finally:
        connections.close_all()


def gate() -> backend._Gate:
    conn = connections["default"]
    conn.ensure_connection()
    return backend._gate(*conn._sf_gate_args)


@pytest.fixture
def table(request: pytest.FixtureRequest) -> str:
    name = "t_" + request.node.name.replace("[", "_").replace("]", "").replace("-", "_")
    with connections["default"].cursor() as c:
        c.execute(f"drop table if exists {name}")
        c.execute(f"create table {name}(id integer primary key, v, n integer default 0)")
    yield name
    connections.close_all()


def rows(table: str) -> list[Any]:
    with connections["default"].cursor() as c:
        c.execute(f"select v from {table} order by id")
        return [r[0] for r in c.fetchall()]


def test_read_then_update_in_atomic_loses_nothing_and_never_locks(table: str) -> None:
    """The classic lost update (read a counter, write it back + 1) from many threads in atomic():
    every transaction waits for its turn, begins IMMEDIATE, and none fails or overwrites another."""
    with connections["default"].cursor() as c:
        c.execute(f"insert into {table}(id, v, n) values (1, 'counter', 0)")
    errors: list[BaseException] = []
    per_thread = 40

    def work() -> None:
        for _ in range(per_thread):
            try:
                with transaction.atomic():
                    with connections["default"].cursor() as c:
                        c.execute(f"select n from {table} where id = 1")
                        n = c.fetchone()[0]
                        c.execute(f"update {table} set n = %s where id = 1", [n + 1])
            except BaseException as exc:  # noqa: BLE001 - collected and asserted
                errors.append(exc)

    threads = 8 * STRESS
    for w in [in_thread(work) for _ in range(threads)]:
        w.finish(120)
    assert errors == []
    with connections["default"].cursor() as c:
        c.execute(f"select n from {table} where id = 1")
        assert c.fetchone()[0] == threads * per_thread


def test_writers_are_served_in_order_of_arrival(table: str) -> None:
    lock = gate().lock

    def writer(tag: str) -> None:
        with transaction.atomic():
            with connections["default"].cursor() as c:
                c.execute(f"insert into {table}(v) values (%s)", [tag])

    tags = [f"w{i}" for i in range(6)]
    workers = []
    with held_by_another_thread(a_write_in_atomic(table)):
        for i, tag in enumerate(tags):
            workers.append(in_thread(writer, tag))
            wait_until(lambda: lock.statistics().waiting == i + 1, what=f"{tag} to queue")
    for w in workers:
        w.finish()
    assert rows(table) == ["holder", *tags]


def test_an_autocommit_write_waits_for_its_turn_and_a_read_does_not(table: str) -> None:
    """Outside atomic(), a write (as Model.save() does) queues behind a transaction instead of
    failing with "database is locked"; a read runs at once."""
    lock = gate().lock

    def read() -> list[Any]:
        with connections["default"].cursor() as c:
            c.execute(f"select v from {table}")
            return c.fetchall()

    def write() -> None:
        with connections["default"].cursor() as c:
            c.execute(f"insert into {table}(v) values ('autocommit')")

    with held_by_another_thread(a_write_in_atomic(table)):
        assert in_thread(read).finish(5) == []  # at once, and without the holder's uncommitted row
        w = in_thread(write)
        wait_until(lambda: lock.statistics().waiting == 1, what="the autocommit write to queue")
    w.finish()
    assert rows(table) == ["holder", "autocommit"]
    assert not lock.locked()


def test_a_checkpoint_through_a_cursor_waits_for_its_turn(table: str) -> None:
    """sqlitefair connections checkpoint only in their turn (so that they never run SQLite's
    WAL-reset race among themselves, docs/backends.md): a ``PRAGMA wal_checkpoint`` outside a
    transaction queues like a write instead of running beside the holder's transaction."""
    lock = gate().lock

    def checkpoint() -> Any:
        with connections["default"].cursor() as c:
            c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return c.fetchone()

    with held_by_another_thread(a_write_in_atomic(table)):
        w = in_thread(checkpoint)
        wait_until(lambda: lock.statistics().waiting == 1, what="the checkpoint to queue for its turn")
        assert w.is_alive(), "the checkpoint ran beside the holder's transaction"
    assert w.finish()[0] == 0  # ran, after the holder's commit: not busy
    assert not lock.locked()


def test_insert_returning_in_autocommit_serves_its_rows_and_commits(table: str) -> None:
    with connections["default"].cursor() as c:
        c.execute(f"insert into {table}(v) values ('a'), ('b') returning id, v")
        assert c.fetchone() == (1, "a")
        assert c.fetchall() == [(2, "b")]
        assert c.fetchone() is None
        assert not connections["default"].connection.in_transaction
        c.execute(f"insert into {table}(v) values (%s), (%s), (%s) returning v", ["c", "d", "e"])
        assert c.fetchmany(2) == [("c",), ("d",)]
        assert list(c) == [("e",)]
        # The cursor's next statement is served by sqlite3 again, not from the rows kept before.
        c.execute(f"select v from {table} where v in (%s, %s) order by v", ["a", "e"])
        assert c.fetchall() == [("a",), ("e",)]
        c.execute(f"select count(*) from {table}")
        assert c.fetchone() == (5,)
    assert not gate().lock.locked()
    assert in_thread(rows, table).finish() == ["a", "b", "c", "d", "e"]  # committed: another connection sees them


def test_a_failing_write_rolls_back_and_gives_the_turn_on(table: str) -> None:
    with connections["default"].cursor() as c:
        c.execute(f"create unique index if not exists {table}_v on {table}(v)")
        c.execute(f"insert into {table}(v) values ('x')")
    with pytest.raises(django.db.IntegrityError):
        with connections["default"].cursor() as c:
            c.execute(f"insert into {table}(v) values ('x')")
    with pytest.raises(ValueError):
        with transaction.atomic():
            with connections["default"].cursor() as c:
                c.execute(f"insert into {table}(v) values ('y')")
            raise ValueError("rolled back")
    assert not gate().lock.locked()
    assert in_thread(rows, table).finish() == ["x"]


def test_on_commit_hooks_run_after_the_turn_is_given_on(table: str) -> None:
    """A hook may write again at once (the turn would not be re-entered: it waits in line)."""
    ran: list[str] = []

    def hook() -> None:
        with transaction.atomic(using="short"):  # would time out if this connection's turn were still held
            with connections["short"].cursor() as c:
                c.execute(f"insert into {table}(v) values ('from the hook')")
        ran.append("hook")

    with transaction.atomic():
        with connections["default"].cursor() as c:
            c.execute(f"insert into {table}(v) values ('block')")
        transaction.on_commit(hook)
    assert ran == ["hook"]
    assert rows(table) == ["block", "from the hook"]


def test_a_write_that_waits_past_its_timeout_fails_clearly_and_leaves_the_line_whole(table: str) -> None:
    def late() -> None:
        with transaction.atomic(using="short"):
            with connections["short"].cursor() as c:
                c.execute(f"insert into {table}(v) values ('late')")

    with held_by_another_thread(a_write_in_atomic(table)):
        started = time.monotonic()
        w = in_thread(late)
        with pytest.raises(OperationalError, match=r"database is locked: sqlitefair waited 0\.[0-9]+ s"):
            w.finish(10)
        assert time.monotonic() - started < 5
    in_thread(late).finish()  # and the next write goes through
    assert rows(table) == ["holder", "late"]
    assert not gate().lock.locked()


def test_closing_a_connection_inside_a_transaction_gives_the_turn_on(table: str) -> None:
    def abandon() -> None:
        transaction.atomic().__enter__()  # never left: the thread's connections close at its end
        with connections["default"].cursor() as c:
            c.execute(f"insert into {table}(v) values ('lost')")

    in_thread(abandon).finish()
    assert not gate().lock.locked()
    assert rows(table) == []


def test_manual_transactions_take_the_turn_at_the_first_write(table: str) -> None:
    conn = connections["default"]
    transaction.set_autocommit(False)
    try:
        with conn.cursor() as c:
            c.execute(f"select count(*) from {table}")
            assert not gate().lock.locked()  # a read takes no turn
            c.execute(f"insert into {table}(v) values ('manual')")
            assert gate().lock.locked() and conn.connection.in_transaction
        transaction.commit()
        assert not gate().lock.locked()
    finally:
        transaction.set_autocommit(True)
    assert rows(table) == ["manual"]


def test_a_transaction_mode_other_than_immediate_is_refused() -> None:
    with pytest.raises(ImproperlyConfigured, match="BEGIN IMMEDIATE"):
        connections["deferred"].ensure_connection()


def test_sqlitefair_pragmas_are_set() -> None:
    with connections["default"].cursor() as c:
        c.execute("pragma journal_mode")
        assert c.fetchone()[0] == "wal"
        c.execute("pragma synchronous")
        assert c.fetchone()[0] == 1  # NORMAL


@pytest.mark.parametrize(
    ("sql", "writes"),
    [
        ("SELECT 1", False),
        ("  select * from t", False),
        ("/* c */ -- d\n SELECT 1", False),
        ("PRAGMA foreign_keys", False),
        ("EXPLAIN QUERY PLAN SELECT 1", False),
        ("WITH x AS (SELECT 1) SELECT * FROM x", False),
        ("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", True),
        ("INSERT INTO t VALUES (1)", True),
        ("update t set v = 1", True),
        ("DELETE FROM t", True),
        ("REPLACE INTO t VALUES (1)", True),
        ("CREATE TABLE u(x)", True),
        ("VACUUM", True),
        ("PRAGMA wal_checkpoint(TRUNCATE)", True),
        ("pragma main.user_version = 3", True),
        ("PRAGMA application_id=7", True),
        ("PRAGMA optimize", True),
        ("PRAGMA user_version", False),
        ("PRAGMA table_info(t)", False),
        ("PRAGMA foreign_keys = OFF", False),
        ("SAVEPOINT s", False),
        ("BEGIN", False),
    ],
)
def test_which_statements_wait_for_a_turn(sql: str, writes: bool) -> None:
    assert backend.may_write(sql) is writes


DJANGO_WRITER = """
import sys, time
import django
from django.conf import settings
path, name, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
settings.configure(DATABASES={"default": {"ENGINE": "sqlitefair.django", "NAME": path, "OPTIONS": {"timeout": timeout}}})
django.setup()
from django.db import connection, transaction
connection.ensure_connection()
print("asking", flush=True)
with transaction.atomic():
    with connection.cursor() as c:
        c.execute("insert into served(who) values (%s)", [name])
    print("got", time.monotonic(), flush=True)
    sys.stdin.readline()            # hold the writer until told
print("done", flush=True)
"""


def test_django_processes_and_pools_share_one_line_across_processes(tmp_path: Path) -> None:
    """Django processes on sqlitefair.django and processes with a sqlitefair pool, queued one
    after the other behind a holder, are served in that order: one cross-process queue."""
    queue = pytest.importorskip("test_process_queue")
    db = tmp_path / "app.db"
    import sqlitefair

    with sqlitefair.connect(db) as pool, pool.transaction() as conn:
        conn.execute("create table served(n integer primary key, who text)")
    holder = queue.Writer(db, "holder")
    holder.got()
    waiters = []
    try:
        for i in range(4):
            script = DJANGO_WRITER if i % 2 == 0 else queue.WRITER
            waiters.append(queue.queue_up(db, f"{'django' if i % 2 == 0 else 'pool'}{i}", script=script))
            time.sleep(0.02)
        holder.release()
        for w in waiters:
            w.got()
            w.release()
    finally:
        for w in [holder, *waiters]:
            w.close()
    assert queue.served(db) == ["holder", "django0", "pool1", "django2", "pool3"]
