"""A small Starlette (ASGI) API on SQLite: plain stdlib sqlite3 or sqlitefair.aio, chosen by an environment variable.

    pip install 'sqlitefair[web]'
    EXAMPLE_DB=app.db EXAMPLE_DB_MODE=sqlitefair \\
        uvicorn --app-dir examples/starlette_app --workers 2 --host 127.0.0.1 --port 8000 app:app

Same schema, endpoints and SQL as ``examples/flask_app``:
``GET /items/{id}``, ``GET /items?limit=``, ``POST /items`` (read a counter,
then insert, in one transaction), ``POST /transfer`` (bank-style
read-then-write), ``GET /stats``, ``GET /health``.

EXAMPLE_DB_MODE:

* ``sqlitefair`` (default): ``async def`` endpoints on :mod:`sqlitefair.aio`;
  one pool per worker process, opened in the lifespan. Queueing, waiting for
  locks and every statement run in worker threads, never on the event loop.
* ``sqlitefair-write``: the same, with writes through ``await db.write(fn, ...)``:
  a task queues without a thread, and the thread that holds the writer also
  runs the write calls queued behind it (flat combining).
* ``sqlitefair-noqueue``: as ``sqlitefair``, with ``process_queue=False`` (the worker
  processes' writers ordered by the busy policy alone; a comparison for the load test).
* ``plain``: what most tutorials (FastAPI's included) write: ``def``
  endpoints, which Starlette runs in its thread pool, a new
  ``sqlite3.connect(path)`` per request (default 5 s busy timeout), WAL on,
  and a plain (deferred) ``BEGIN`` around each read-then-write.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
import time
from typing import Any, AsyncIterator, Iterator

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import sqlitefair
import sqlitefair.aio

DB_PATH = os.environ.get("EXAMPLE_DB", "example.db")
MODE = os.environ.get("EXAMPLE_DB_MODE", "sqlitefair")
ACCOUNTS = 100
START_BALANCE = 1_000_000
SEED_ITEMS = 1000

GET_ITEM = "SELECT id, name, seq FROM items WHERE id = ?"
LIST_ITEMS = "SELECT id, name, seq FROM items ORDER BY id DESC LIMIT ?"
READ_COUNTER = "SELECT value FROM counters WHERE name = 'items'"
INSERT_ITEM = "INSERT INTO items (name, seq) VALUES (?, ?)"
UPDATE_COUNTER = "UPDATE counters SET value = ? WHERE name = 'items'"
READ_BALANCE = "SELECT balance FROM accounts WHERE id = ?"
ACCOUNT_EXISTS = "SELECT 1 FROM accounts WHERE id = ?"
DEBIT = "UPDATE accounts SET balance = balance - ? WHERE id = ?"
CREDIT = "UPDATE accounts SET balance = balance + ? WHERE id = ?"
LOG_TRANSFER = "INSERT INTO transfers (src, dst, amount) VALUES (?, ?, ?)"
STATS = (
    "SELECT (SELECT count(*) FROM items), (SELECT max(seq) FROM items), (SELECT count(DISTINCT seq) FROM items), "
    "(SELECT value FROM counters WHERE name = 'items'), (SELECT count(*) FROM accounts), "
    "(SELECT sum(balance) FROM accounts), (SELECT count(*) FROM transfers)"
)


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
            conn.executemany(INSERT_ITEM, ((f"item {i}", i) for i in range(1, SEED_ITEMS + 1)))
            conn.execute("INSERT INTO counters VALUES ('items', ?)", (SEED_ITEMS,))
            conn.executemany("INSERT INTO accounts VALUES (?, ?)", ((i, START_BALANCE) for i in range(1, ACCOUNTS + 1)))
        conn.execute("COMMIT")
    finally:
        conn.close()


def _limit(request: Request) -> int:
    try:
        return min(max(int(request.query_params.get("limit", 20)), 1), 100)
    except ValueError:
        return 20


async def _transfer_args(request: Request) -> tuple[int, int, int] | JSONResponse:
    try:
        body = await request.json()
        src, dst, amount = int(body["from"]), int(body["to"]), int(body["amount"])
    except (KeyError, TypeError, ValueError):
        return JSONResponse({"error": "expected JSON {from, to, amount}"}, 400)
    if amount <= 0 or src == dst:
        return JSONResponse({"error": "amount must be > 0 and from != to"}, 400)
    return src, dst, amount


async def _item_name(request: Request) -> str:
    try:
        body = await request.json()
    except ValueError:
        body = {}
    return str((body if isinstance(body, dict) else {}).get("name", "item"))[:100]


def _stats_body(row: Any) -> dict[str, Any]:
    items, max_seq, distinct_seq, counter, accounts, total, transfers = row
    return {
        "mode": MODE,
        "items": items,
        "max_seq": max_seq,
        "distinct_seq": distinct_seq,
        "counter": counter,
        "accounts": accounts,
        "total_balance": total,
        "start_balance": accounts * START_BALANCE,
        "transfers": transfers,
        "seed_items": SEED_ITEMS,
    }


async def health(request: Request) -> JSONResponse:
    return JSONResponse(
        {"ok": True, "mode": MODE, "python": sys.version.split()[0], "gil": sqlitefair.gil_enabled(), "sqlite": sqlite3.sqlite_version}
    )


async def database_busy(request: Request, exc: Exception) -> JSONResponse:
    # "database is locked" (plain) or sqlitefair.PoolTimeout (a subclass): try again later.
    return JSONResponse({"error": str(exc).split("\n")[0]}, 503)


# -- sqlitefair mode: async endpoints on sqlitefair.aio ----------------------------------


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    app.state.db = sqlitefair.aio.connect(DB_PATH, readers=4, timeout=5.0, process_queue=MODE != "sqlitefair-noqueue")
    try:
        yield
    finally:
        await app.state.db.close()


async def get_item(request: Request) -> JSONResponse:
    async with request.app.state.db.read() as conn:
        row = await conn.fetchone(GET_ITEM, (request.path_params["item_id"],))
    if row is None:
        return JSONResponse({"error": "no such item"}, 404)
    return JSONResponse({"id": row[0], "name": row[1], "seq": row[2]})


async def list_items(request: Request) -> JSONResponse:
    async with request.app.state.db.read() as conn:
        rows = await conn.fetchall(LIST_ITEMS, (_limit(request),))
    return JSONResponse({"items": [{"id": r[0], "name": r[1], "seq": r[2]} for r in rows]})


# The write endpoints hand the whole transaction to one worker thread with
# run_transaction(): queueing, BEGIN IMMEDIATE, the SQL and COMMIT run as one job,
# so the writer is never held while the event loop serves other requests.
# (``async with db.transaction() as conn: await conn.execute(...)`` does the same
# job in steps, each a round trip through the event loop; see docs/web.md.)


def insert_next_item(conn: Any, name: str) -> tuple[int, int]:
    (value,) = conn.execute(READ_COUNTER).fetchone()
    seq = value + 1
    # RETURNING, not cursor.lastrowid: an apsw cursor has none (this runs on either backend).
    (item_id,) = conn.execute(INSERT_ITEM + " RETURNING id", (name, seq)).fetchone()
    conn.execute(UPDATE_COUNTER, (seq,))
    return item_id, seq


def move_money(conn: Any, src: int, dst: int, amount: int) -> tuple[int, dict[str, Any]]:
    row = conn.execute(READ_BALANCE, (src,)).fetchone()
    if row is None or conn.execute(ACCOUNT_EXISTS, (dst,)).fetchone() is None:
        return 404, {"error": "no such account"}
    if row[0] < amount:
        return 409, {"error": "insufficient funds", "balance": row[0]}
    conn.execute(DEBIT, (amount, src))
    conn.execute(CREDIT, (amount, dst))
    conn.execute(LOG_TRANSFER, (src, dst, amount))
    return 200, {"ok": True, "balance": row[0] - amount}


async def run_write(request: Request, fn: Any, *args: Any) -> Any:
    """``fn(conn, *args)`` in one write transaction, on a worker thread (see the mode above)."""
    db = request.app.state.db
    if MODE == "sqlitefair-write":
        return await db.write(fn, *args)
    return await db.run_transaction(fn, *args)


async def create_item(request: Request) -> JSONResponse:
    name = await _item_name(request)  # read the body before queueing for the writer
    item_id, seq = await run_write(request, insert_next_item, name)
    return JSONResponse({"id": item_id, "seq": seq}, 201)


async def transfer(request: Request) -> JSONResponse:
    args = await _transfer_args(request)
    if isinstance(args, JSONResponse):
        return args
    status, body = await run_write(request, move_money, *args)
    return JSONResponse(body, status)


async def stats(request: Request) -> JSONResponse:
    async with request.app.state.db.read() as conn:
        row = await conn.fetchone(STATS)
    return JSONResponse(_stats_body(row))


# -- plain mode: def endpoints in Starlette's thread pool, a sqlite3 connection per request --


@contextlib.contextmanager
def plain_connection() -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(DB_PATH)  # default: 5 s busy timeout, deferred transactions
    try:
        yield conn
    finally:
        conn.close()


def plain_get_item(request: Request) -> JSONResponse:
    with plain_connection() as conn:
        row = conn.execute(GET_ITEM, (request.path_params["item_id"],)).fetchone()
    if row is None:
        return JSONResponse({"error": "no such item"}, 404)
    return JSONResponse({"id": row[0], "name": row[1], "seq": row[2]})


def plain_list_items(request: Request) -> JSONResponse:
    with plain_connection() as conn:
        rows = conn.execute(LIST_ITEMS, (_limit(request),)).fetchall()
    return JSONResponse({"items": [{"id": r[0], "name": r[1], "seq": r[2]} for r in rows]})


def _plain_create_item(name: str) -> JSONResponse:
    with plain_connection() as conn:
        conn.execute("BEGIN")  # DEFERRED, the default: the read below and the writes after it in one transaction
        try:
            (value,) = conn.execute(READ_COUNTER).fetchone()
            seq = value + 1
            item_id = conn.execute(INSERT_ITEM, (name, seq)).lastrowid
            conn.execute(UPDATE_COUNTER, (seq,))
        except BaseException:
            conn.rollback()
            raise
        conn.commit()
    return JSONResponse({"id": item_id, "seq": seq}, 201)


def _plain_transfer(src: int, dst: int, amount: int) -> JSONResponse:
    with plain_connection() as conn:
        conn.execute("BEGIN")
        try:
            row = conn.execute(READ_BALANCE, (src,)).fetchone()
            if row is None or conn.execute(ACCOUNT_EXISTS, (dst,)).fetchone() is None:
                conn.rollback()
                return JSONResponse({"error": "no such account"}, 404)
            if row[0] < amount:
                conn.rollback()
                return JSONResponse({"error": "insufficient funds", "balance": row[0]}, 409)
            conn.execute(DEBIT, (amount, src))
            conn.execute(CREDIT, (amount, dst))
            conn.execute(LOG_TRANSFER, (src, dst, amount))
        except BaseException:
            conn.rollback()
            raise
        conn.commit()
    return JSONResponse({"ok": True, "balance": row[0] - amount})


async def plain_create_item(request: Request) -> JSONResponse:
    return await run_in_threadpool(_plain_create_item, await _item_name(request))


async def plain_transfer(request: Request) -> JSONResponse:
    args = await _transfer_args(request)
    if isinstance(args, JSONResponse):
        return args
    return await run_in_threadpool(_plain_transfer, *args)


def plain_stats(request: Request) -> JSONResponse:
    with plain_connection() as conn:
        row = conn.execute(STATS).fetchone()
    return JSONResponse(_stats_body(row))


# -- the app ------------------------------------------------------------------------------

if MODE not in ("sqlitefair", "sqlitefair-write", "sqlitefair-noqueue", "plain"):
    raise SystemExit(
        f"EXAMPLE_DB_MODE must be 'sqlitefair', 'sqlitefair-write', 'sqlitefair-noqueue' or 'plain', not {MODE!r}"
    )
init_db(DB_PATH)
_plain = MODE == "plain"
app = Starlette(
    routes=[
        Route("/health", health),
        Route("/items/{item_id:int}", plain_get_item if _plain else get_item),
        Route("/items", plain_list_items if _plain else list_items),
        Route("/items", plain_create_item if _plain else create_item, methods=["POST"]),
        Route("/transfer", plain_transfer if _plain else transfer, methods=["POST"]),
        Route("/stats", plain_stats if _plain else stats),
    ],
    exception_handlers={sqlite3.OperationalError: database_busy},
    lifespan=None if _plain else lifespan,
)
