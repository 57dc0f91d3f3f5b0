"""Transaction control inside a write block is refused before anything is committed.

Every refusal test runs the same story: a row before, the refused statement (which must
raise TransactionControlError), a row after, then the block raises.  An independent
connection must then see none of the block's rows, and the pool must still work.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any, Callable

import pytest
from conftest import open_plain

import sqlitefair
from sqlitefair._backends import get_backend

TCE = sqlitefair.TransactionControlError


class Boom(Exception):
    pass


def via_connection(conn: Any, sql: str) -> Any:
    return conn.execute(sql)


def via_cursor(conn: Any, sql: str) -> Any:
    return conn.cursor().execute(sql)


def via_executemany(conn: Any, sql: str) -> Any:
    return conn.executemany(sql, [()])


RUNNERS = {"connection": via_connection, "cursor": via_cursor, "executemany": via_executemany}


def refused_then_rolled_back(
    pool: sqlitefair.Pool, committed: Callable[..., list[Any]], refuse: Callable[[Any], Any], match: str = "refused"
) -> TCE:
    """The story above; returns the TransactionControlError ``refuse(conn)`` raised."""
    caught: list[TCE] = []
    already = committed()
    with pytest.raises(Boom):
        with pool.transaction() as conn:
            conn.execute("insert into t(v) values ('before')")
            with pytest.raises(TCE, match=match) as info:
                refuse(conn)
            caught.append(info.value)
            conn.execute("insert into t(v) values ('after')")
            raise Boom
    assert committed() == already, "a row of the block was committed"
    assert_pool_still_works(pool, committed)
    return caught[0]


def assert_pool_still_works(pool: sqlitefair.Pool, committed: Callable[..., list[Any]]) -> None:
    before = committed()
    with pool.transaction() as conn:
        conn.execute("insert into t(v) values ('later')")
    assert committed() == [*before, "later"]
    with pool.read() as conn:
        assert conn.execute("select count(*) from t").fetchone()[0] == len(before) + 1


# -- statements that end or restart the pool's transaction ---------------------------------

TRANSACTION_STATEMENTS = [
    "COMMIT",
    "commit",
    "  end transaction",
    "END",
    "/* x */ ROLLBACK",
    "-- a comment\nrollback transaction",
    "BEGIN",
    "begin immediate",
    "COMMIT;",
]


@pytest.mark.parametrize("runner", sorted(RUNNERS))
@pytest.mark.parametrize("sql", TRANSACTION_STATEMENTS)
def test_transaction_statements_are_refused_and_nothing_is_committed(
    pool: sqlitefair.Pool, committed: Callable[..., list[Any]], sql: str, runner: str
) -> None:
    error = refused_then_rolled_back(pool, committed, lambda conn: RUNNERS[runner](conn, sql))
    message = str(error)
    assert "write block" in message and "the writer connection of" in message
    assert "`with pool.transaction():`" in message  # says what to do instead (a nested block)


def test_the_message_says_what_was_refused_and_what_to_do(
    pool: sqlitefair.Pool, committed: Callable[..., list[Any]]
) -> None:
    error = refused_then_rolled_back(pool, committed, lambda conn: conn.execute("end"))
    assert "COMMIT (or END)" in str(error) and "nothing was committed" in str(error)
    error = refused_then_rolled_back(pool, committed, lambda conn: conn.execute("rollback"))
    assert "raise an exception out of it" in str(error)
    assert isinstance(error, sqlite3.ProgrammingError) and isinstance(error, sqlitefair.SqlitefairError)
    assert error.__cause__ is None and error.__context__ is None  # no "not authorized" noise


def test_a_caught_refusal_leaves_the_blocks_transaction_intact(
    pool: sqlitefair.Pool, committed: Callable[..., list[Any]]
) -> None:
    with pool.transaction() as conn:
        conn.execute("insert into t(v) values ('before')")
        with pytest.raises(TCE):
            conn.execute("COMMIT")
        assert committed() == []  # still not committed
        conn.execute("insert into t(v) values ('after')")
    assert committed() == ["before", "after"]  # committed together, by the pool


def test_a_refused_statement_is_refused_every_time(pool: sqlitefair.Pool, committed: Callable[..., list[Any]]) -> None:
    """A refused statement fails to prepare, so it never reaches the statement cache."""

    def twice(conn: Any) -> None:
        for _ in range(2):
            with pytest.raises(TCE):
                conn.execute("COMMIT")
        conn.execute("COMMIT")

    refused_then_rolled_back(pool, committed, twice)


def test_the_pools_own_statements_do_not_open_a_cached_way_around(
    pool: sqlitefair.Pool, committed: Callable[..., list[Any]]
) -> None:
    """The pool's BEGIN IMMEDIATE / COMMIT / SAVEPOINT statements are cached under their own text."""
    for i in range(30):
        with pool.transaction() as conn:
            conn.execute("insert into t(v) values (?)", (i,))
            with pool.transaction() as inner:
                inner.execute("insert into t(v) values (?)", (-i,))
    with pool.transaction() as conn:
        conn.execute("delete from t")
    for sql in ("COMMIT", "BEGIN IMMEDIATE", "RELEASE sqlitefair_1", "SAVEPOINT sqlitefair_1"):
        refused_then_rolled_back(pool, committed, lambda conn, sql=sql: conn.execute(sql))
        with pool.transaction() as conn:
            conn.execute("delete from t")


def test_statements_prepared_in_on_connect_are_checked_again(
    make_pool: Callable[..., sqlitefair.Pool], committed: Callable[..., list[Any]]
) -> None:
    """on_connect runs on a plain connection (transaction control allowed); what it left in the
    statement cache is checked again once the pool polices the connection."""
    seen: list[str] = []

    def on_connect(conn: Any, role: str) -> None:
        conn.execute("create table if not exists t(id integer primary key, v)")
        conn.execute("BEGIN")
        conn.execute("COMMIT")
        seen.append(role)

    pool = make_pool(readers=1, on_connect=on_connect)
    assert "writer" in seen
    refused_then_rolled_back(pool, committed, lambda conn: conn.execute("COMMIT"))


def test_on_connect_still_runs_on_a_plain_connection(make_pool: Callable[..., sqlitefair.Pool], backend: str) -> None:
    """Passes on the old code too: the hook may use transactions and scripts of its own."""

    def on_connect(conn: Any, role: str) -> None:
        if role == "writer":
            conn.execute("begin")
            conn.execute("create table if not exists t(id integer primary key, v)")
            conn.execute("commit")
            if backend == "sqlite3":
                conn.executescript("begin; create table if not exists u(x); commit;")
                conn.commit()

    pool = make_pool(readers=1, on_connect=on_connect)
    with pool.transaction() as conn:
        conn.execute("insert into t(v) values (1)")
    with pool.read() as conn:
        assert conn.execute("select count(*) from t").fetchone()[0] == 1


# -- the pool's savepoints ----------------------------------------------------------------

POOL_SAVEPOINT_STATEMENTS = [
    "RELEASE sqlitefair_1",
    "release savepoint sqlitefair_2",
    "ROLLBACK TO sqlitefair_1",
    "rollback transaction to savepoint SQLITEFAIR_2",
    'release "sqlitefair_1"',
]


@pytest.mark.parametrize("runner", ["connection", "cursor"])
@pytest.mark.parametrize("sql", POOL_SAVEPOINT_STATEMENTS)
def test_the_pools_savepoints_cannot_be_released_or_rolled_back_to(
    pool: sqlitefair.Pool, committed: Callable[..., list[Any]], sql: str, runner: str
) -> None:
    def refuse(conn: Any) -> None:
        with pool.transaction() as inner:  # a savepoint named sqlitefair_<n>
            inner.execute("insert into t(v) values ('inner')")
            try:
                RUNNERS[runner](inner, sql)
            finally:
                inner.execute("insert into t(v) values ('inner after')")

    error = refused_then_rolled_back(pool, committed, refuse, match="savepoint names starting with 'sqlitefair'")
    assert "Use savepoint names of your own" in str(error)


def test_user_savepoints_work_inside_a_block(pool: sqlitefair.Pool, committed: Callable[..., list[Any]]) -> None:
    """Passes on the old code too."""
    with pool.transaction() as conn:
        conn.execute("savepoint mine")
        conn.execute("insert into t(v) values ('undone')")
        conn.execute("rollback to mine")
        conn.execute("insert into t(v) values ('kept')")
        conn.execute("release mine")
        conn.cursor().execute("SAVEPOINT other")
        conn.execute("insert into t(v) values ('kept too')")
        conn.cursor().execute("RELEASE SAVEPOINT other")
        with pool.transaction() as inner:
            inner.execute("savepoint deeper")
            inner.execute("insert into t(v) values ('deep')")
            inner.execute("release deeper")
    assert committed() == ["kept", "kept too", "deep"]


# -- pragmas ---------------------------------------------------------------------------------

WRITER_PRAGMAS = [
    "PRAGMA query_only=1",
    "pragma query_only = 'on'",
    "PRAGMA journal_mode=delete",
    "pragma main.journal_mode = truncate",
    "PRAGMA locking_mode=EXCLUSIVE",
]


@pytest.mark.parametrize("runner", ["connection", "cursor"])
@pytest.mark.parametrize("sql", WRITER_PRAGMAS)
def test_pragmas_the_pool_relies_on_are_refused_on_the_writer(
    pool: sqlitefair.Pool, committed: Callable[..., list[Any]], sql: str, runner: str
) -> None:
    refused_then_rolled_back(pool, committed, lambda conn: RUNNERS[runner](conn, sql), match="PRAGMA")
    with pool.transaction() as conn:
        assert conn.execute("pragma query_only").fetchone()[0] == 0
        assert str(conn.execute("pragma journal_mode").fetchone()[0]).lower() == "wal"
        assert str(conn.execute("pragma locking_mode").fetchone()[0]).lower() == "normal"


def test_harmless_pragmas_are_allowed(pool: sqlitefair.Pool, committed: Callable[..., list[Any]]) -> None:
    """Reading those pragmas, journal_mode=wal (a no-op in WAL mode) and other pragmas: allowed
    (passes on the old code too)."""
    with pool.transaction() as conn:
        conn.execute("insert into t(v) values (1)")
        assert conn.execute("pragma query_only").fetchone()[0] == 0
        assert str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower() == "wal"
        conn.execute("pragma foreign_keys = on")
        conn.execute("pragma recursive_triggers = 1")
    with pool.read() as conn:
        assert str(conn.execute("pragma journal_mode = wal").fetchone()[0]).lower() == "wal"
        assert conn.execute("pragma query_only").fetchone()[0] == 1
    assert committed() == [1]


READER_PRAGMAS = ["PRAGMA query_only=0", "pragma QUERY_ONLY = off", "PRAGMA locking_mode=exclusive", "pragma journal_mode=delete"]


@pytest.mark.parametrize("runner", ["connection", "cursor"])
@pytest.mark.parametrize("sql", READER_PRAGMAS)
def test_readers_refuse_leaving_read_only(
    pool: sqlitefair.Pool, committed: Callable[..., list[Any]], sql: str, runner: str
) -> None:
    with pool.read() as conn:
        with pytest.raises(TCE, match="Readers stay read-only"):
            RUNNERS[runner](conn, sql)
        assert conn.execute("pragma query_only").fetchone()[0] == 1
        with pytest.raises(Exception, match="readonly"):  # still query_only
            conn.execute("insert into t(v) values ('through a reader')")
    assert committed() == []
    assert_pool_still_works(pool, committed)


def test_readers_may_run_read_transactions_of_their_own(
    pool: sqlitefair.Pool, committed: Callable[..., list[Any]]
) -> None:
    """A deferred read transaction for a consistent snapshot (passes on the old code too)."""
    with pool.transaction() as conn:
        conn.execute("insert into t(v) values (1)")
    with pool.read() as conn:
        conn.execute("BEGIN")
        assert conn.execute("select count(*) from t").fetchone()[0] == 1
        with pool.transaction() as writer:  # another connection commits meanwhile
            writer.execute("insert into t(v) values (2)")
        assert conn.execute("select count(*) from t").fetchone()[0] == 1  # the snapshot
        conn.execute("COMMIT")
        assert conn.execute("select count(*) from t").fetchone()[0] == 2
        conn.cursor().execute("begin deferred")
        conn.cursor().execute("rollback")
    assert committed() == [1, 2]


# -- the stdlib's own ways to commit ---------------------------------------------------------


@pytest.fixture
def sqlite3_pool(pool: sqlitefair.Pool, backend: str) -> sqlitefair.Pool:
    if backend != "sqlite3":
        pytest.skip("sqlite3 module API")
    return pool


def test_commit_and_rollback_methods_are_refused(
    sqlite3_pool: sqlitefair.Pool, committed: Callable[..., list[Any]]
) -> None:
    error = refused_then_rolled_back(sqlite3_pool, committed, lambda conn: conn.commit())
    assert "conn.commit()" in str(error)
    error = refused_then_rolled_back(sqlite3_pool, committed, lambda conn: conn.rollback())
    assert "conn.rollback()" in str(error)


def test_readers_keep_commit_and_rollback(sqlite3_pool: sqlitefair.Pool) -> None:
    """Passes on the old code too."""
    with sqlite3_pool.read() as conn:
        conn.execute("begin")
        conn.commit()
        conn.execute("begin")
        conn.rollback()
        assert not conn.in_transaction


def test_with_conn_is_refused_on_the_writer(sqlite3_pool: sqlitefair.Pool, committed: Callable[..., list[Any]]) -> None:
    def enter(conn: Any) -> None:
        with conn:
            conn.execute("insert into t(v) values ('inside with conn')")

    error = refused_then_rolled_back(sqlite3_pool, committed, enter)
    assert "`with conn:`" in str(error)


def test_setting_isolation_level_is_refused_on_the_writer(
    sqlite3_pool: sqlitefair.Pool, committed: Callable[..., list[Any]]
) -> None:
    def assign(conn: Any) -> None:
        conn.isolation_level = None  # the sqlite3 module COMMITs here

    refused_then_rolled_back(sqlite3_pool, committed, assign, match="isolation_level")
    with sqlite3_pool.transaction() as conn:
        assert conn.isolation_level is None


@pytest.mark.parametrize("on", ["connection", "cursor"])
def test_executescript_runs_inside_the_blocks_transaction(
    sqlite3_pool: sqlitefair.Pool, committed: Callable[..., list[Any]], on: str
) -> None:
    script = """
        insert into t(v) values ('script 1');
        create trigger log_t after insert on t when new.v = 'trigger me' begin
            insert into t(v) values ('from; the trigger');
        end;
        insert into t(v) values ('a;b'); -- a comment; with a semicolon
        insert into t(v) values ('trigger me')
    """
    with pytest.raises(Boom):
        with sqlite3_pool.transaction() as conn:
            conn.execute("insert into t(v) values ('before')")
            (conn if on == "connection" else conn.cursor()).executescript(script)
            assert committed() == []  # the sqlite3 module's executescript would have committed 'before'
            raise Boom
    assert committed() == []
    with sqlite3_pool.transaction() as conn:
        (conn if on == "connection" else conn.cursor()).executescript(script)
    assert committed() == ["script 1", "a;b", "trigger me", "from; the trigger"]


@pytest.mark.parametrize("on", ["connection", "cursor"])
def test_a_script_containing_commit_is_refused(
    sqlite3_pool: sqlitefair.Pool, committed: Callable[..., list[Any]], on: str
) -> None:
    def script(conn: Any) -> None:
        target = conn if on == "connection" else conn.cursor()
        target.executescript("insert into t(v) values ('script'); COMMIT; insert into t(v) values ('script after');")

    refused_then_rolled_back(sqlite3_pool, committed, script, match="COMMIT")


# -- apsw -------------------------------------------------------------------------------------


@pytest.fixture
def apsw_pool(pool: sqlitefair.Pool, backend: str) -> sqlitefair.Pool:
    if backend != "apsw":
        pytest.skip("apsw API")
    return pool


def test_apsw_multi_statement_strings_are_refused_at_the_commit(
    apsw_pool: sqlitefair.Pool, committed: Callable[..., list[Any]]
) -> None:
    sql = "insert into t(v) values ('first'); COMMIT; insert into t(v) values ('third')"
    refused_then_rolled_back(apsw_pool, committed, lambda conn: conn.execute(sql))
    refused_then_rolled_back(apsw_pool, committed, lambda conn: conn.cursor().execute(sql))
    refused_then_rolled_back(apsw_pool, committed, lambda conn: conn.execute("select 1; commit").fetchall())
    refused_then_rolled_back(apsw_pool, committed, lambda conn: conn.pragma("query_only", 1), match="PRAGMA")


def test_apsw_with_conn_is_a_savepoint_that_undoes_only_its_part(
    apsw_pool: sqlitefair.Pool, committed: Callable[..., list[Any]]
) -> None:
    """apsw's `with conn:` is a SAVEPOINT, so it is allowed (passes on the old code too)."""
    with apsw_pool.transaction() as conn:
        conn.execute("insert into t(v) values ('kept')")
        with pytest.raises(Boom):
            with conn:
                conn.execute("insert into t(v) values ('undone')")
                raise Boom
        with conn:
            conn.execute("insert into t(v) values ('kept too')")
        assert committed() == []
    assert committed() == ["kept", "kept too"]


# -- user authorizers ---------------------------------------------------------------------------


def install_authorizer(conn: Any, backend: str, fn: Any) -> None:
    if backend == "apsw":
        conn.authorizer = fn
        assert conn.authorizer is fn
    else:
        conn.set_authorizer(fn)


def test_a_user_authorizer_is_composed_with_the_pools(
    pool: sqlitefair.Pool, committed: Callable[..., list[Any]], backend: str
) -> None:
    actions: list[tuple[Any, ...]] = []

    def mine(action: int, arg1: Any, arg2: Any, db: Any, trigger: Any) -> int:
        actions.append((action, arg1, arg2))
        if action == sqlite3.SQLITE_READ and arg1 == "secret":
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK

    with pool.transaction() as conn:
        conn.execute("create table secret(x)")
        install_authorizer(conn, backend, mine)
    # The user's authorizer stays installed, decides what the pool's allows ...
    with pool.transaction() as conn:
        conn.execute("insert into t(v) values ('visible')")
        with pytest.raises(Exception, match="prohibited") as info:  # the user's authorizer said no
            conn.execute("select x from secret")
        assert not isinstance(info.value, TCE)
        assert any(a[0] == sqlite3.SQLITE_INSERT for a in actions)
    assert committed() == ["visible"]
    # ... is not asked about the pool's own statements ...
    assert not [a for a in actions if a[0] in (sqlite3.SQLITE_TRANSACTION, sqlite3.SQLITE_SAVEPOINT)]
    # ... and cannot let transaction control through.
    with pool.transaction() as conn:
        conn.execute("delete from t")
    refused_then_rolled_back(pool, committed, lambda conn: conn.execute("COMMIT"))
    # Removing it keeps the pool's.
    with pool.transaction() as conn:
        install_authorizer(conn, backend, None)
        assert conn.execute("select count(*) from secret").fetchone()[0] == 0
    with pool.transaction() as conn:
        conn.execute("delete from t")
    refused_then_rolled_back(pool, committed, lambda conn: conn.execute("COMMIT"))


# -- the integrations ---------------------------------------------------------------------------


def test_sqlite_utils_write_blocks_refuse_commit_through_the_raw_connection(db_path: Path) -> None:
    pytest.importorskip("sqlite_utils")
    from sqlitefair.integrations import sqlite_utils as sfu

    try:
        dbpool = sfu.connect(db_path, readers=1, timeout=30)
    except sfu.UnsupportedSqliteUtils:
        pytest.skip("the installed sqlite-utils is refused by the integration")

    def rows() -> list[Any]:
        conn = sqlite3.connect(db_path)
        try:
            return conn.execute("select id from t order by id").fetchall()
        finally:
            conn.close()

    try:
        with dbpool.write() as db:
            db["t"].insert({"id": 0}, pk="id")
        attempts: list[tuple[type[Exception], Callable[[Any], Any]]] = [
            (sfu.TransactionControlError, lambda db: db.execute("COMMIT")),  # refused by the integration already
            (TCE, lambda db: db.conn.commit()),
            (TCE, lambda db: db.conn.execute("COMMIT")),
            (TCE, lambda db: db.conn.cursor().execute("end")),
            (TCE, lambda db: db.executescript("insert into t(id) values (5); COMMIT;")),
        ]
        for error, attempt in attempts:
            with pytest.raises(Boom):
                with dbpool.write() as db:
                    db["t"].insert({"id": 1})
                    with pytest.raises(error):
                        attempt(db)
                    db["t"].insert({"id": 2})
                    raise Boom
            assert rows() == [(0,)]
        with dbpool.write() as db:  # the writer is fine afterwards
            db["t"].insert({"id": 3})
        assert rows() == [(0,), (3,)]
    finally:
        dbpool.close(timeout=10)


def test_aio_refuses_commit(db_path: Path, backend: str) -> None:
    import sqlitefair.aio

    apool = sqlitefair.aio.connect(db_path, readers=1, timeout=10, backend=backend)

    async def main() -> None:
        async with apool.transaction() as conn:
            await conn.execute("create table t(id integer primary key, v)")
        with pytest.raises(Boom):
            async with apool.transaction() as conn:
                await conn.execute("insert into t(v) values ('before')")
                with pytest.raises(TCE, match="COMMIT"):
                    await conn.execute("COMMIT")
                await conn.execute("insert into t(v) values ('after')")
                raise Boom
        async with apool.transaction() as conn:
            await conn.execute("insert into t(v) values ('later')")
        await apool.close(timeout=10)

    asyncio.run(main())
    plain = open_plain(db_path, backend)
    try:
        assert [row[0] for row in plain.execute("select v from t order by id").fetchall()] == ["later"]
    finally:
        plain.close()


# -- the backend API the pool uses ----------------------------------------------------------------


@pytest.mark.parametrize("role", ["writer", "reader", None])
def test_backend_is_closed(db_path: Path, backend: str, role: str | None) -> None:
    b = get_backend(backend)
    conn = b.connect(str(db_path), uri=False, busy_timeout=1.0, label="a test connection", role=role)
    assert not b.is_closed(conn)
    b.close(conn)
    assert b.is_closed(conn)


def test_backend_roles(db_path: Path, backend: str) -> None:
    b = get_backend(backend)
    with pytest.raises(ValueError, match="role"):
        b.connect(str(db_path), uri=False, busy_timeout=1.0, role="owner")
    # role=None: a plain connection, nothing policed.
    conn = b.connect(str(db_path), uri=False, busy_timeout=1.0, role=None)
    try:
        b.set_holder(conn, threading.get_ident())
        conn.execute("begin")
        conn.execute("commit")
    finally:
        b.close(conn)
    # role="writer": policed from start_policing() (or its first begin()); the pool's own
    # statements through the backend pass.
    conn = b.connect(str(db_path), uri=False, busy_timeout=1.0, label="the test writer", role="writer")
    try:
        b.set_holder(conn, threading.get_ident())
        conn.execute("begin")  # not policed yet: an on_connect hook may do this
        conn.execute("commit")
        b.start_policing(conn)
        b.execute(conn, "BEGIN IMMEDIATE")
        b.execute(conn, "SAVEPOINT sqlitefair_1")
        b.execute(conn, "RELEASE sqlitefair_1")
        assert b.query_one(conn, "PRAGMA query_only") == (0,)
        with pytest.raises(TCE, match="the test writer"):
            conn.execute("commit")
        assert b.in_transaction(conn)
        b.execute(conn, "COMMIT")
        assert not b.in_transaction(conn)
    finally:
        b.close(conn)
