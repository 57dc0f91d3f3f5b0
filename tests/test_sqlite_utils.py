"""The sqlite-utils integration: atomic write blocks, parallel reads, BEGIN IMMEDIATE only, the CLI alongside."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from _helpers import JOIN_TIMEOUT, Worker

import sqlitefair

sqlite_utils = pytest.importorskip("sqlite_utils")
from sqlitefair.integrations import sqlite_utils as sfu  # noqa: E402 - after the importorskip

SUPPORTED = sfu._parse_version(sfu.metadata.version("sqlite-utils")) >= sfu.MIN_SQLITE_UTILS


def any_sqlite_utils(test: Callable[..., None]) -> Callable[..., None]:
    """Run this test whatever sqlite-utils is installed (the others need a supported one)."""
    test.any_sqlite_utils = True  # type: ignore[attr-defined]
    return test


@pytest.fixture(autouse=True)
def _needs_supported_sqlite_utils(request: pytest.FixtureRequest) -> None:
    if not SUPPORTED and not getattr(request.function, "any_sqlite_utils", False):
        pytest.skip("the integration refuses the installed sqlite-utils (see test_refuses_old_sqlite_utils)")


class Boom(Exception):
    pass


@pytest.fixture
def make_dbpool(db_path: Path) -> Iterator[Callable[..., sfu.DatabasePool]]:
    pools: list[sfu.DatabasePool] = []

    def factory(path: Path | str = db_path, **kwargs: Any) -> sfu.DatabasePool:
        kwargs.setdefault("timeout", 30)
        dbpool = sfu.connect(path, **kwargs)
        pools.append(dbpool)
        return dbpool

    yield factory
    for dbpool in pools:
        dbpool.close(timeout=10)


@pytest.fixture
def dbpool(make_dbpool: Callable[..., sfu.DatabasePool]) -> sfu.DatabasePool:
    return make_dbpool(readers=2)


def snapshot(path: Path) -> dict[str, Any]:
    """Schema and every row, read through a new, independent sqlite3 connection."""
    conn = sqlite3.connect(path)
    try:
        schema = conn.execute("select type, name, sql from sqlite_master order by type, name").fetchall()
        tables = [name for kind, name, _ in schema if kind == "table" and not name.startswith("sqlite_")]
        rows = {name: sorted(conn.execute(f'select * from "{name}"').fetchall(), key=repr) for name in tables}
        return {"schema": schema, "rows": rows}
    finally:
        conn.close()


# -- atomicity -----------------------------------------------------------------


def test_exception_after_many_sqlite_utils_writes_leaves_no_trace(dbpool: sfu.DatabasePool, db_path: Path) -> None:
    with dbpool.write() as db:
        db["existing"].insert_all([{"id": 1, "v": "keep"}, {"id": 2, "v": "keep too"}], pk="id")
    before = snapshot(db_path)

    with pytest.raises(Boom):
        with dbpool.write() as db:
            # Each of these opens and ends its own transaction when used on a plain Database.
            db["new_table"].insert_all(({"id": i, "v": str(i)} for i in range(500)), pk="id", batch_size=50)
            db["existing"].insert({"id": 3, "v": "new"})
            db["existing"].upsert({"id": 1, "v": "changed"}, pk="id")
            db["existing"].upsert_all([{"id": 2, "v": "changed"}, {"id": 4, "v": "new"}], pk="id")
            with db.atomic():
                db.execute("update existing set v = v || '!'")
            db.create_table("created", {"id": int, "name": str}, pk="id")
            db.executescript("insert into created(id, name) values (1, 'a'); insert into created(id, name) values (2, 'b');")
            db["existing"].add_column("extra", int)
            db["existing"].create_index(["v"])
            db["existing"].delete_where("id = ?", [2])
            db["lookup"].lookup({"name": "x"})
            assert db["new_table"].count == 500  # the block sees its own writes...
            assert snapshot(db_path) == before  # ...nobody else does yet
            raise Boom

    assert snapshot(db_path) == before


def test_a_write_block_commits_everything_together(dbpool: sfu.DatabasePool, db_path: Path) -> None:
    with dbpool.write() as db:
        db["a"].insert_all([{"id": i} for i in range(300)], pk="id", batch_size=7)
        db["b"].insert({"id": 1, "v": "x"}, pk="id")
        with db.atomic():
            db["b"].upsert({"id": 1, "v": "y"}, pk="id")
    rows = snapshot(db_path)["rows"]
    assert len(rows["a"]) == 300 and rows["b"] == [(1, "y")]


def test_transform_and_create_table_roll_back_on_error(dbpool: sfu.DatabasePool, db_path: Path) -> None:
    with dbpool.write() as db:
        db["items"].insert_all([{"id": i, "name": f"n{i}", "price": "1.5"} for i in range(20)], pk="id")
    before = snapshot(db_path)

    with pytest.raises(Boom):
        with dbpool.write() as db:
            db["items"].transform(rename={"name": "title"}, types={"price": float})
            db.create_table("audit", {"id": int, "what": str}, pk="id")
            db["audit"].insert({"id": 1, "what": "transformed"})
            assert "title" in db["items"].columns_dict
            raise Boom
    assert snapshot(db_path) == before

    # An error raised by sqlite-utils itself, after a transform, rolls the block back too.
    with pytest.raises(sqlite3.IntegrityError):
        with dbpool.write() as db:
            db["items"].transform(rename={"name": "title"})
            db.create_table("audit", {"id": int, "what": str}, pk="id", not_null={"what"})
            db["audit"].insert({"id": 1, "what": None})
    assert snapshot(db_path) == before


def test_transform_refuses_to_fire_on_delete_actions_inside_the_block(dbpool: sfu.DatabasePool, db_path: Path) -> None:
    """foreign_keys is on in every pooled connection and cannot change inside a transaction:
    sqlite-utils (4.1.1+) refuses a transform whose DROP TABLE would cascade, and nothing is lost."""
    with dbpool.write() as db:
        db.execute("create table parent (id integer primary key, name text)")
        db.execute("create table child (id integer primary key, parent_id integer references parent(id) on delete cascade)")
        db.execute("insert into parent values (1, 'p')")
        db.execute("insert into child values (10, 1)")
    with pytest.raises(sqlite_utils.db.TransactionError, match="ON DELETE"):
        with dbpool.write() as db:
            db["parent"].transform(rename={"name": "title"})
    assert snapshot(db_path)["rows"]["child"] == [(10, 1)]


def test_transform_of_a_referenced_table_through_a_pool_without_foreign_keys(
    make_dbpool: Callable[..., sfu.DatabasePool], db_path: Path
) -> None:
    """The documented way to run such a transform: a pool whose connections have foreign_keys off."""
    app = make_dbpool(readers=1)
    with app.write() as db:
        db.execute("create table parent (id integer primary key, name text)")
        db.execute("create table child (id integer primary key, parent_id integer references parent(id) on delete cascade)")
        db.execute("insert into parent values (1, 'p')")
        db.execute("insert into child values (10, 1)")
    with sfu.connect(db_path, readers=1, timeout=30, pragmas={"foreign_keys": False}) as migrate:
        with migrate.write() as db:
            db["parent"].transform(rename={"name": "title"})
            assert db.execute("pragma foreign_key_check").fetchall() == []
    assert migrate.closed
    with app.read() as db:
        assert list(db["child"].rows) == [{"id": 10, "parent_id": 1}]
        assert list(db["parent"].columns_dict) == ["id", "title"]


# -- many threads ----------------------------------------------------------------


def test_sixteen_threads_inserting_lose_nothing(dbpool: sfu.DatabasePool) -> None:
    with dbpool.write() as db:
        db.create_table("log", {"tag": str, "seen": int}, pk="tag")
    per_thread = 40

    def work(n: int) -> None:
        for i in range(per_thread):
            with dbpool.write() as db:
                table = db["log"]
                table.insert({"tag": f"{n}-{i}", "seen": table.count})
            if i % 8 == 0:
                with dbpool.read() as db:
                    assert db["log"].count >= 1

    workers = [Worker(work, n, name=f"writer-{n}") for n in range(16)]
    for w in workers:
        w.start()
    for w in workers:
        w.finish()  # re-raises anything a thread raised (a "database is locked" included)

    with dbpool.read() as db:
        rows = list(db["log"].rows)
    assert {r["tag"] for r in rows} == {f"{n}-{i}" for n in range(16) for i in range(per_thread)}
    # Every block saw a different count: the blocks ran one at a time, none lost an update.
    assert sorted(r["seen"] for r in rows) == list(range(16 * per_thread))
    stats = dbpool.pool.stats()
    assert stats.write_timeouts == 0


def test_reads_run_while_a_write_block_is_open(dbpool: sfu.DatabasePool) -> None:
    with dbpool.write() as db:
        db["t"].insert_all([{"id": i} for i in range(3)], pk="id")
    in_write = threading.Event()
    both_inside = threading.Barrier(2, timeout=JOIN_TIMEOUT)
    reads_done = threading.Event()

    def write() -> None:
        with dbpool.write() as db:
            db["t"].insert({"id": 100})
            in_write.set()
            assert reads_done.wait(JOIN_TIMEOUT), "the reads did not finish while the write block was open"
            assert db.conn.in_transaction  # still the same, uncommitted transaction

    def read() -> tuple[int, int]:
        assert in_write.wait(JOIN_TIMEOUT)
        with dbpool.read() as db:
            both_inside.wait()  # both readers inside at once, while the writer holds its block
            return db["t"].count, db.execute("pragma query_only").fetchone()[0]

    writer = Worker(write, name="writer")
    writer.start()
    readers = [Worker(read, name=f"reader-{i}") for i in range(2)]
    for r in readers:
        r.start()
    results = [r.finish() for r in readers]
    reads_done.set()
    writer.finish()
    assert results == [(3, 1), (3, 1)]  # no dirty reads, and on read-only connections
    with dbpool.read() as db:
        assert db["t"].count == 4


def test_read_database_is_read_only_and_stays_usable(dbpool: sfu.DatabasePool) -> None:
    with dbpool.write() as db:
        db["t"].insert({"id": 1}, pk="id")
    for _ in range(3):
        with dbpool.read() as db:
            with pytest.raises(sqlite3.OperationalError, match="readonly"):
                db["t"].insert({"id": 2})
            assert not db.conn.in_transaction
            assert db["t"].count == 1


# -- only BEGIN IMMEDIATE ----------------------------------------------------------


def test_write_databases_send_no_begin_but_begin_immediate(make_dbpool: Callable[..., sfu.DatabasePool]) -> None:
    lock = threading.Lock()
    statements: list[tuple[str, str]] = []

    opened: list[str] = []

    def trace(conn: sqlite3.Connection, role: str) -> None:
        def record(sql: str) -> None:
            with lock:
                statements.append((role, sql.strip()))

        with lock:
            opened.append(role)
        conn.set_trace_callback(record)

    dbpool = make_dbpool(readers=2, on_connect=trace)
    with contextlib.closing(sqlite3.connect(":memory:")) as probe:
        fts5 = "ENABLE_FTS5" in {row[0] for row in probe.execute("pragma compile_options")}
    blocks = 0

    with dbpool.write() as db:
        db.create_table("docs", {"id": int, "body": str}, pk="id")
        db["docs"].insert_all([{"id": i, "body": f"text {i}"} for i in range(100)], batch_size=9)
        if fts5:
            db["docs"].enable_fts(["body"], fts_version="FTS5", create_triggers=True)
    blocks += 1

    def work(n: int) -> int:
        done = 0
        for i in range(10):
            try:
                with dbpool.write() as db:
                    docs = db["docs"]
                    docs.insert({"id": 1000 + n * 100 + i, "body": "inserted"})
                    docs.upsert({"id": i, "body": f"upserted by {n}"}, pk="id")
                    docs.upsert_all([{"id": 2000 + n, "body": "x"}], pk="id")
                    docs.update(i, {"body": "updated"})
                    with db.atomic():
                        db.execute("update docs set body = body where id = ?", [i])
                        with db.atomic():
                            list(db.query("select count(*) from docs"))
                    db["tags"].lookup({"name": f"tag{i % 3}"})
                    if i == 3:
                        docs.add_column(f"extra_{n}", int)
                        docs.create_index([f"extra_{n}"])
                    if i == 5:
                        docs.transform(types={"body": str})
                    if i == 7:
                        raise Boom
                    with dbpool.read() as same:
                        assert same is db
            except Boom:
                pass
            done += 1
        return done

    workers = [Worker(work, n, name=f"w{n}") for n in range(4)]
    for w in workers:
        w.start()
    blocks += sum(w.finish() for w in workers)

    writer = [sql for role, sql in statements if role == "writer"]

    def control(sql: str) -> str | None:
        upper = " ".join(sql.upper().split())
        if upper.startswith(("ROLLBACK TO", "ROLLBACK TRANSACTION TO")):
            return None
        for word in ("BEGIN", "COMMIT", "END", "ROLLBACK"):
            if upper.startswith(word):
                return upper
        return None

    controls = [c for c in map(control, writer) if c is not None]
    assert {c for c in controls if c.startswith("BEGIN")} == {"BEGIN IMMEDIATE"}
    # One BEGIN IMMEDIATE per block, each ended by exactly one COMMIT or ROLLBACK: sqlite-utils'
    # own transactions all became savepoints inside the pool's.
    assert controls[0::2] == ["BEGIN IMMEDIATE"] * blocks
    assert set(controls[1::2]) == {"COMMIT", "ROLLBACK"} and len(controls) == 2 * blocks
    assert any(sql.upper().startswith("SAVEPOINT") for sql in writer)
    # The Database of each connection was built once, not per checkout.
    recursive = [sql for _, sql in statements if sql.lower().startswith("pragma recursive_triggers")]
    assert len(recursive) == len(opened)


def test_one_database_object_per_connection(dbpool: sfu.DatabasePool) -> None:
    with dbpool.write() as first:
        pass
    with dbpool.write() as second:
        pass
    assert first is second
    with dbpool.read() as a, dbpool.read() as b:
        assert a is not b and a is not first


# -- guards ----------------------------------------------------------------------


def test_transaction_control_inside_a_write_block_is_refused(dbpool: sfu.DatabasePool, db_path: Path) -> None:
    with dbpool.write() as db:
        db["t"].insert({"id": 0}, pk="id")
    attempts: list[Callable[[Any], Any]] = [
        lambda db: db.commit(),
        lambda db: db.rollback(),
        lambda db: db.begin(),
        lambda db: db.execute("COMMIT"),
        lambda db: db.execute("  -- done\n end transaction"),
        lambda db: db.execute("/* undo */ ROLLBACK"),
        lambda db: db.execute("begin immediate"),
    ]
    for attempt in attempts:
        with pytest.raises(sfu.TransactionControlError):
            with dbpool.write() as db:
                db["t"].insert({"id": 1})
                attempt(db)
        assert snapshot(db_path)["rows"]["t"] == [(0,)]
    assert issubclass(sfu.TransactionControlError, sqlite_utils.db.TransactionError)

    # Savepoints stay available.
    with dbpool.write() as db:
        db.execute("savepoint sp")
        db["t"].insert({"id": 2})
        db.execute("rollback to savepoint sp")
        db.execute("release sp")
        db["t"].insert({"id": 3})
    assert snapshot(db_path)["rows"]["t"] == [(0,), (3,)]


def test_ending_the_transaction_through_the_raw_connection_is_refused(dbpool: sfu.DatabasePool, db_path: Path) -> None:
    with dbpool.write() as db:
        db["t"].insert({"id": 0}, pk="id")
    # Refused by the pooled connection before anything is rolled back or committed (the core
    # sqlitefair.TransactionControlError, which sfu's is a subclass of); the block rolls back whole.
    with pytest.raises(sqlitefair.TransactionControlError, match="refused"):
        with dbpool.write() as db:
            db["t"].insert({"id": 1})
            db.conn.rollback()
    with pytest.raises(sqlitefair.TransactionControlError, match="refused"):
        with dbpool.write() as db:
            db.conn.execute("insert into t(id) values (2)")
            db.conn.commit()
    assert snapshot(db_path)["rows"]["t"] == [(0,)]  # nothing of either block was committed
    with dbpool.write() as db:  # the writer is fine afterwards
        db["t"].insert({"id": 3})
    assert snapshot(db_path)["rows"]["t"] == [(0,), (3,)]


def test_database_is_unusable_outside_its_block_and_from_other_threads(dbpool: sfu.DatabasePool) -> None:
    with dbpool.write() as db:
        table = db["t"]
        table.insert({"id": 1}, pk="id")
        other = Worker(lambda: db["t"].count, name="intruder")
        other.start()
        with pytest.raises(sfu.NotCheckedOut, match="thread"):
            other.finish()
    with pytest.raises(sfu.NotCheckedOut, match="outside its `with` block"):
        table.insert({"id": 2})
    with pytest.raises(sfu.NotCheckedOut):
        db.execute("select 1")
    assert "writer" in repr(db)  # repr never raises
    with dbpool.read() as reader:
        with pytest.raises(sfu.PooledDatabaseError, match="dbpool.close"):
            reader.close()
    with pytest.raises(sfu.NotCheckedOut):
        list(reader["t"].rows)


def test_nested_blocks(dbpool: sfu.DatabasePool, db_path: Path) -> None:
    with dbpool.write() as db:
        db["t"].insert({"id": 1}, pk="id")
        with dbpool.read() as same:
            assert same is db and same["t"].count == 1  # reads its own writes
        with pytest.raises(Boom):
            with dbpool.write() as inner:  # a savepoint
                assert inner is db
                inner["t"].insert({"id": 2})
                raise Boom
        assert db["t"].count == 1 and db.conn.in_transaction
        db["t"].insert({"id": 3})
    assert snapshot(db_path)["rows"]["t"] == [(1,), (3,)]


# -- wrap() and options ------------------------------------------------------------


def test_wrap_an_existing_database(db_path: Path) -> None:
    plain = sqlite_utils.Database(db_path, strict=True)
    plain["t"].insert({"id": 1, "v": "plain"}, pk="id")
    dbpool = sfu.wrap(plain, readers=1, timeout=10)
    try:
        assert Path(dbpool.path).resolve() == db_path.resolve()
        with dbpool.write() as db:
            assert db.strict is True
            db["t"].insert({"id": 2, "v": "pooled"})
            db["s"].insert({"id": 1}, pk="id")
        assert plain["s"].strict  # created by the pool with the wrapped Database's options
        assert [r["v"] for r in plain["t"].rows] == ["plain", "pooled"]
    finally:
        dbpool.close()
        plain.close()


@pytest.mark.parametrize(
    "make",
    [
        lambda tmp: sqlite_utils.Database(memory=True),
        lambda tmp: sqlite_utils.Database(":memory:"),
        lambda tmp: sqlite_utils.Database(memory_name="shared_test"),
        lambda tmp: sqlite_utils.Database(sqlite3.connect("")),  # a temporary database
    ],
)
def test_wrap_refuses_in_memory_databases(make: Callable[[Path], Any], tmp_path: Path) -> None:
    db = make(tmp_path)
    try:
        with pytest.raises(sqlitefair.ConfigurationError, match="in-memory"):
            sfu.wrap(db)
    finally:
        db.close()


def test_wrap_refuses_an_open_transaction_and_pooled_databases(db_path: Path, dbpool: sfu.DatabasePool) -> None:
    plain = sqlite_utils.Database(db_path)
    try:
        plain.begin()
        with pytest.raises(sqlitefair.ConfigurationError, match="open transaction"):
            sfu.wrap(plain)
        plain.rollback()
    finally:
        plain.close()
    with dbpool.write() as db:
        with pytest.raises(sqlitefair.ConfigurationError, match="already belongs"):
            sfu.wrap(db)


def test_arguments_are_checked(db_path: Path) -> None:
    with pytest.raises(sqlitefair.ConfigurationError, match="unknown argument 'reader'"):
        sfu.connect(db_path, reader=2)
    with pytest.raises(sqlitefair.ConfigurationError, match="backend='sqlite3'"):
        sfu.connect(db_path, backend="apsw")
    with pytest.raises(sqlitefair.ConfigurationError, match="in-memory"):
        sfu.connect(":memory:")


def test_database_options_reach_every_database(make_dbpool: Callable[..., sfu.DatabasePool]) -> None:
    traced: list[str] = []
    lock = threading.Lock()

    def tracer(sql: str, params: Any) -> None:
        with lock:
            traced.append(sql)

    dbpool = make_dbpool(readers=1, recursive_triggers=False, tracer=tracer, strict=True)
    with dbpool.write() as db:
        db["t"].insert({"id": 1}, pk="id")
        assert db.conn.execute("pragma recursive_triggers").fetchone()[0] == 0
        assert db["t"].strict
    with dbpool.read() as db:
        assert db.strict and db["t"].count == 1
    assert any("INSERT" in sql.upper() for sql in traced)


def test_plugins_cannot_loosen_the_pools_connection_settings(
    make_dbpool: Callable[..., sfu.DatabasePool], tmp_path: Path
) -> None:
    from sqlite_utils.plugins import pm

    baseline = sqlitefair.connect(tmp_path / "baseline.db")
    try:
        with baseline.transaction() as conn:
            writer_busy = conn.execute("pragma busy_timeout").fetchone()[0]
    finally:
        baseline.close()

    class Loosen:
        @sqlite_utils.hookimpl
        def prepare_connection(self, conn: sqlite3.Connection) -> None:
            conn.execute("pragma query_only = 0")
            conn.execute("pragma busy_timeout = 98765")
            conn.create_function("from_plugin", 0, lambda: 42)

    plugin = Loosen()
    pm.register(plugin, name="sqlitefair-test-loosen")
    try:
        dbpool = make_dbpool(readers=1)
        with dbpool.read() as db:
            assert db.execute("pragma query_only").fetchone()[0] == 1
            assert db.execute("select from_plugin()").fetchone()[0] == 42  # the plugin did run
        with dbpool.write() as db:
            assert db.execute("pragma busy_timeout").fetchone()[0] == writer_busy
    finally:
        pm.unregister(plugin)


# -- sqlite-utils versions ------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "message"),
    [("3.39", "with conn"), ("3.38.0", "COMMITs whatever transaction"), ("4.0", "ON DELETE"), ("4.1", "fixed in 4.1.1")],
)
@any_sqlite_utils
def test_refuses_old_sqlite_utils(version: str, message: str, monkeypatch: pytest.MonkeyPatch, db_path: Path) -> None:
    with pytest.raises(sfu.UnsupportedSqliteUtils, match=message) as info:
        sfu.check_sqlite_utils_version(version)
    assert version in str(info.value) and "pip install 'sqlite-utils>=4.1.1'" in str(info.value)
    monkeypatch.setattr(sfu.metadata, "version", lambda name: version)
    with pytest.raises(sfu.UnsupportedSqliteUtils):
        sfu.connect(db_path)
    assert not db_path.exists()  # refused before anything was opened


@pytest.mark.parametrize("version", ["4.1.1", "4.2", "4.2.1", "5.0a1"])
@any_sqlite_utils
def test_accepts_current_sqlite_utils(version: str) -> None:
    sfu.check_sqlite_utils_version(version)


def test_without_package_metadata_the_version_is_judged_by_behaviour(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> str:
        raise sfu.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(sfu.metadata, "version", missing)
    sfu.check_sqlite_utils_version()  # the installed (supported) sqlite-utils has the 4.1.1 behaviour


# -- the sqlite-utils CLI writing the same file ------------------------------------------


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*WAL-reset bug")  # expected: another process writes this file
def test_cli_inserting_in_a_loop_while_the_pool_writes(
    make_dbpool: Callable[..., sfu.DatabasePool], db_path: Path, tmp_path: Path
) -> None:
    dbpool = make_dbpool(readers=2)
    with dbpool.write() as db:
        db.create_table("t", {"id": str, "src": str}, pk="id")
    stop = threading.Event()
    writing = [threading.Event() for _ in range(4)]

    def pool_writer(n: int) -> list[str]:
        written = []
        while not stop.is_set():
            tag = f"pool-{n}-{len(written)}"
            with dbpool.write() as db:
                db["t"].insert({"id": tag, "src": "pool"})
                db["t"].count  # noqa: B018 - a read inside the transaction, as real code does
            written.append(tag)
            writing[n].set()
        return written

    workers = [Worker(pool_writer, n, name=f"pool-{n}") for n in range(4)]
    for w in workers:
        w.start()
    runs: list[tuple[int, subprocess.CompletedProcess[str]]] = []
    try:
        for event in writing:
            assert event.wait(JOIN_TIMEOUT)  # every pool thread is writing before the CLI starts
        for run in range(8):
            rows = [{"id": f"cli-{run}-{k}", "src": "cli"} for k in range(5)]
            file = tmp_path / f"rows-{run}.json"
            file.write_text(json.dumps(rows))
            done = subprocess.run(
                [sys.executable, "-m", "sqlite_utils", "insert", str(db_path), "t", str(file), "--pk", "id"],
                capture_output=True,
                text=True,
                timeout=120,
            )
            runs.append((run, done))
    finally:
        stop.set()
    written = [tag for w in workers for tag in w.finish()]  # the pool raised nothing

    with dbpool.read() as db:
        present = {row["id"] for row in db["t"].rows}
    assert set(written) <= present and len(written) >= 4
    for run, done in runs:
        mine = {f"cli-{run}-{k}" for k in range(5)}
        if done.returncode == 0:
            assert mine <= present, f"CLI run {run} reported success but its rows are missing"
        else:
            # Its only excuse: SQLite's busy timeout (Python's default, 5 s) ran out. One batch: all or nothing.
            assert "database is locked" in done.stderr, done.stderr
            assert not (mine & present) or mine <= present


@pytest.mark.parametrize("group_commit", [False, True], ids=["combining", "group-commit"])
def test_run_write_gives_fn_the_pooled_database_in_fifo_order(db_path: Path, group_commit: bool) -> None:
    """dbpool.run_write(fn): each call gets the writer's Database, its own result, in arrival order;
    a call that raises leaves nothing behind."""
    from _helpers import Worker, held_by_another_thread, wait_until

    dbpool = sfu.connect(db_path, group_commit=group_commit)
    try:
        dbpool.run_write(lambda db: db["items"].insert({"id": 0, "tag": "first"}, pk="id"))

        def add(db: Any, tag: str) -> str:
            db["items"].insert({"tag": tag})
            if tag == "bad":
                raise ValueError(tag)
            return tag

        lock = dbpool.pool._state.writer.lock
        tags = ["a", "bad", "b", "c"]
        workers = []
        with held_by_another_thread(dbpool.write()) as (_, leave):
            for position, tag in enumerate(tags):
                w = Worker(dbpool.run_write, add, tag, name=f"w-{tag}")
                w.start()
                workers.append(w)
                wait_until(lambda n=position + 1: lock.statistics().waiting == n, what=f"{tag} to queue")
            leave()
        results = []
        for w in workers:
            try:
                results.append(w.finish())
            except ValueError as exc:
                results.append(f"raised {exc}")
        assert results == ["a", "raised bad", "b", "c"]
        with dbpool.read() as db:
            assert [r["tag"] for r in db["items"].rows_where(order_by="id")] == ["first", "a", "b", "c"]
        with pytest.raises(sqlitefair.TransactionControlError):
            dbpool.run_write(lambda db: db.conn.execute("COMMIT"))
    finally:
        dbpool.close()
