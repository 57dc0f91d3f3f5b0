"""A small Flask API on SQLite: plain stdlib sqlite3 or sqlitefair, chosen by an environment variable.

    pip install -e '.[web]'     # in the repository's folder
    EXAMPLE_DB=app.db EXAMPLE_DB_MODE=sqlitefair \\
        gunicorn --chdir examples/flask_app -w 2 -k gthread --threads 8 -b 127.0.0.1:8000 app:app

    curl http://127.0.0.1:8000/items/1
    curl 'http://127.0.0.1:8000/items?limit=5'
    curl -X POST -H 'content-type: application/json' -d '{"name": "pen"}' http://127.0.0.1:8000/items
    curl -X POST -H 'content-type: application/json' -d '{"from": 1, "to": 2, "amount": 5}' \\
        http://127.0.0.1:8000/transfer
    curl http://127.0.0.1:8000/stats

EXAMPLE_DB_MODE:

* ``sqlitefair`` (default): one pool per worker process (created after gunicorn
  forked it; sqlitefair is fork-safe either way). Reads use ``pool.read()``,
  writes ``pool.transaction()`` (FIFO queue, ``BEGIN IMMEDIATE``).
* ``sqlitefair-write``: the same, with writes through ``pool.write(fn, ...)``:
  with the GIL off, the thread that holds the writer also runs the write calls
  queued behind it (flat combining), so short writes go back to back without a
  thread wake-up; with the GIL on, each call runs in its request's thread.
* ``sqlitefair-noqueue``: as ``sqlitefair``, with ``process_queue=False``: the worker
  processes' writers are ordered by the busy policy alone, not by the queue across
  processes (a comparison for the load test).
* ``plain``: what most tutorials write: a new ``sqlite3.connect(path)`` per
  request (default 5 s busy timeout), WAL on, and a plain (deferred) ``BEGIN``
  around each read-then-write. Under concurrent writes SQLite refuses to
  upgrade such a transaction's read lock to a write lock ("database is
  locked", at once: no busy timeout helps), and the request fails.

Both modes run the same SQL; errors from SQLite become ``503`` JSON answers.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
import time
from typing import Any, Callable, ContextManager, Iterator

from flask import Flask, Response, g, jsonify, request

import sqlitefair

DB_PATH = os.environ.get("EXAMPLE_DB", "example.db")
MODE = os.environ.get("EXAMPLE_DB_MODE", "sqlitefair")
ACCOUNTS = 100
START_BALANCE = 1_000_000
SEED_ITEMS = 1000


def init_db(path: str) -> None:
    """Create and seed the schema once (idempotent; safe when several workers start at once)."""
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        # Switching to WAL can fail at once with "database is locked" while another worker
        # creates the schema: SQLite does not call the busy handler there. So retry it.
        deadline = time.monotonic() + 30
        while True:
            try:
                conn.execute("PRAGMA journal_mode = wal")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        conn.execute("BEGIN IMMEDIATE")  # waits (busy timeout) for a worker that is seeding
        conn.execute("CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, seq INTEGER NOT NULL UNIQUE)"
        )
        conn.execute("CREATE TABLE IF NOT EXISTS accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS transfers (id INTEGER PRIMARY KEY, src INTEGER NOT NULL, "
            "dst INTEGER NOT NULL, amount INTEGER NOT NULL)"
        )
        if conn.execute("SELECT count(*) FROM counters").fetchone()[0] == 0:
            conn.executemany("INSERT INTO items (name, seq) VALUES (?, ?)", ((f"item {i}", i) for i in range(1, SEED_ITEMS + 1)))
            conn.execute("INSERT INTO counters VALUES ('items', ?)", (SEED_ITEMS,))
            conn.executemany("INSERT INTO accounts VALUES (?, ?)", ((i, START_BALANCE) for i in range(1, ACCOUNTS + 1)))
        conn.execute("COMMIT")
    finally:
        conn.close()


# -- the two ways to get a connection --------------------------------------------------

reading: Callable[[], ContextManager[Any]]
writing: Callable[[], ContextManager[Any]]

run_write: Callable[..., Any]  # run_write(fn, *args): fn(conn, *args) in one write transaction


def in_transaction(fn: Callable[..., Any], *args: Any) -> Any:
    with writing() as conn:
        return fn(conn, *args)


run_write = in_transaction

if MODE in ("sqlitefair", "sqlitefair-write", "sqlitefair-noqueue"):
    init_db(DB_PATH)
    pool = sqlitefair.connect(DB_PATH, readers=4, timeout=5.0, process_queue=MODE != "sqlitefair-noqueue")

    reading = pool.read  # a read-only connection, in parallel with others
    writing = pool.transaction  # queue FIFO for the writer, BEGIN IMMEDIATE ... COMMIT / ROLLBACK
    if MODE == "sqlitefair-write":
        run_write = pool.write  # the same queue; whoever holds the writer runs the calls behind it

elif MODE == "plain":
    init_db(DB_PATH)

    def get_db() -> sqlite3.Connection:
        """The Flask tutorial's pattern: one connection per request, closed at teardown."""
        if "db" not in g:
            g.db = sqlite3.connect(DB_PATH)
        conn: sqlite3.Connection = g.db
        return conn

    @contextlib.contextmanager
    def reading() -> Iterator[sqlite3.Connection]:
        yield get_db()

    @contextlib.contextmanager
    def writing() -> Iterator[sqlite3.Connection]:
        conn = get_db()
        conn.execute("BEGIN")  # DEFERRED, the default: the read below and the write after it in one transaction
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        conn.commit()

else:
    raise SystemExit(
        f"EXAMPLE_DB_MODE must be 'sqlitefair', 'sqlitefair-write', 'sqlitefair-noqueue' or 'plain', not {MODE!r}"
    )


# -- the app: the same SQL in both modes -------------------------------------------------

app = Flask(__name__)


@app.teardown_appcontext
def close_db(exc: BaseException | None) -> None:
    conn = g.pop("db", None)
    if conn is not None:
        conn.close()


@app.errorhandler(sqlite3.OperationalError)
def database_busy(exc: sqlite3.OperationalError) -> tuple[Response, int]:
    # "database is locked" (plain) or sqlitefair.PoolTimeout (a subclass): try again later.
    return jsonify(error=str(exc).split("\n")[0]), 503


@app.get("/health")
def health() -> Response:
    return jsonify(ok=True, mode=MODE, python=sys.version.split()[0], gil=sqlitefair.gil_enabled(), sqlite=sqlite3.sqlite_version)


@app.get("/items/<int:item_id>")
def get_item(item_id: int) -> Any:
    with reading() as conn:
        row = conn.execute("SELECT id, name, seq FROM items WHERE id = ?", (item_id,)).fetchone()
    if row is None:
        return jsonify(error="no such item"), 404
    return jsonify(id=row[0], name=row[1], seq=row[2])


@app.get("/items")
def list_items() -> Response:
    limit = min(max(request.args.get("limit", 20, type=int), 1), 100)
    with reading() as conn:
        rows = conn.execute("SELECT id, name, seq FROM items ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
    return jsonify(items=[{"id": r[0], "name": r[1], "seq": r[2]} for r in rows])


def insert_next_item(conn: Any, name: str) -> tuple[int, int]:
    """Read the counter, then insert and update: one transaction (the case deferred transactions get wrong)."""
    (value,) = conn.execute("SELECT value FROM counters WHERE name = 'items'").fetchone()
    seq = value + 1
    # RETURNING rather than cursor.lastrowid, which apsw's cursors do not have.
    (item_id,) = conn.execute("INSERT INTO items (name, seq) VALUES (?, ?) RETURNING id", (name, seq)).fetchone()
    conn.execute("UPDATE counters SET value = ? WHERE name = 'items'", (seq,))
    return item_id, seq


def move_money(conn: Any, src: int, dst: int, amount: int) -> tuple[int, dict[str, Any]]:
    """Bank-style: read the balance, refuse an overdraft, move the money, log it."""
    row = conn.execute("SELECT balance FROM accounts WHERE id = ?", (src,)).fetchone()
    if row is None or conn.execute("SELECT 1 FROM accounts WHERE id = ?", (dst,)).fetchone() is None:
        return 404, {"error": "no such account"}
    if row[0] < amount:
        return 409, {"error": "insufficient funds", "balance": row[0]}
    conn.execute("UPDATE accounts SET balance = balance - ? WHERE id = ?", (amount, src))
    conn.execute("UPDATE accounts SET balance = balance + ? WHERE id = ?", (amount, dst))
    conn.execute("INSERT INTO transfers (src, dst, amount) VALUES (?, ?, ?)", (src, dst, amount))
    return 200, {"ok": True, "balance": row[0] - amount}


@app.post("/items")
def create_item() -> Any:
    name = str((request.get_json(silent=True) or {}).get("name", "item"))[:100]
    item_id, seq = run_write(insert_next_item, name)
    return jsonify(id=item_id, seq=seq), 201


@app.post("/transfer")
def transfer() -> Any:
    body = request.get_json(silent=True) or {}
    try:
        src, dst, amount = int(body["from"]), int(body["to"]), int(body["amount"])
    except (KeyError, TypeError, ValueError):
        return jsonify(error="expected JSON {from, to, amount}"), 400
    if amount <= 0 or src == dst:
        return jsonify(error="amount must be > 0 and from != to"), 400
    status, answer = run_write(move_money, src, dst, amount)
    return jsonify(answer), status


@app.get("/stats")
def stats() -> Response:
    with reading() as conn:  # one statement: one snapshot, even while writes commit
        items, max_seq, distinct_seq, counter, accounts, total, transfers = conn.execute(
            "SELECT (SELECT count(*) FROM items), (SELECT max(seq) FROM items), (SELECT count(DISTINCT seq) FROM items), "
            "(SELECT value FROM counters WHERE name = 'items'), (SELECT count(*) FROM accounts), "
            "(SELECT sum(balance) FROM accounts), (SELECT count(*) FROM transfers)"
        ).fetchone()
    return jsonify(
        mode=MODE,
        items=items,
        max_seq=max_seq,
        distinct_seq=distinct_seq,
        counter=counter,
        accounts=accounts,
        total_balance=total,
        start_balance=accounts * START_BALANCE,
        transfers=transfers,
        seed_items=SEED_ITEMS,
    )
