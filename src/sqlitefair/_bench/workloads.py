"""The database the benchmark runs on and the transactions it runs.

Every strategy runs exactly these functions on its own connections; the
bodies use only ``conn.execute(sql, params)`` and ``fetchone``/``fetchall``,
which the stdlib ``sqlite3`` and ``apsw`` connections both have, so a new
binding needs no new workload code.
"""

from __future__ import annotations

import os
import random
import sqlite3
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable

import sqlitefair

__all__ = ("Workload", "WORKLOADS", "get_workload", "create_database", "committed_count", "pragma_statements")

#: Rows in the ``docs`` table that reads scan ranges of.
DOCS = 20_000
#: Rows in the ``counters`` table that short transactions update.
COUNTERS = 64
#: Rows a write transaction reads before it inserts ("reads something").
WRITE_READS = 10
#: Rows one read of the ``read`` workload materialises.
READ_ROWS = 300
#: Rows one read of the ``mixed`` workload materialises (a web-like request).
MIXED_READ_ROWS = 50
#: Share of the ``mixed`` workload's operations that are write transactions.
MIXED_WRITE_SHARE = 0.1
#: About 100 bytes of text per inserted row, like a small web form.
PAYLOAD = "x" * 100
#: Marks a file as made by this benchmark, so ``--db PATH`` never overwrites anything else.
MARKER_TABLE = "sqlitefair_bench"

Body = Callable[..., None]


def write_item(conn: Any, rng: random.Random, worker: int) -> None:
    """Write contention: read 10 rows, insert one row computed from them (the commit is the strategy's)."""
    start = rng.randrange(1, DOCS - WRITE_READS + 2)
    got = conn.execute("SELECT id, score FROM docs WHERE id >= ? ORDER BY id LIMIT ?", (start, WRITE_READS)).fetchall()
    conn.execute(
        "INSERT INTO items(worker, doc, score, payload) VALUES (?, ?, ?, ?)",
        (worker, got[0][0], sum(r[1] for r in got), PAYLOAD),
    )


def insert_one(conn: Any, rng: random.Random, worker: int) -> None:
    """Single-thread overhead: one one-row insert and nothing else."""
    conn.execute("INSERT INTO items(worker, doc, score, payload) VALUES (?, 0, 0.0, ?)", (worker, PAYLOAD))


def bump_counter(conn: Any, rng: random.Random, worker: int) -> None:
    """A very short transaction (~10 us of work): one indexed update."""
    conn.execute("UPDATE counters SET n = n + 1 WHERE id = ?", (worker % COUNTERS + 1,))


def _read_range(conn: Any, rng: random.Random, rows: int) -> None:
    start = rng.randrange(1, DOCS - rows + 2)
    result = conn.execute(
        "SELECT id, category, title, body, score FROM docs WHERE id >= ? ORDER BY id LIMIT ?", (start, rows)
    ).fetchall()
    # Touch every row in Python, as a web view rendering them would.
    total = 0.0
    for row in result:
        total += row[4]
    if len(result) != rows:  # pragma: no cover - the seed guarantees the rows exist
        raise RuntimeError(f"read {len(result)} rows, expected {rows}")


def read_page(conn: Any, rng: random.Random, worker: int) -> None:
    """Read scaling: a range query materialising READ_ROWS rows (Python objects: where the GIL bites)."""
    _read_range(conn, rng, READ_ROWS)


def read_small(conn: Any, rng: random.Random, worker: int) -> None:
    """The read of a web-like request: MIXED_READ_ROWS rows."""
    _read_range(conn, rng, MIXED_READ_ROWS)


@dataclass(frozen=True)
class Workload:
    """One kind of work: what a write and a read do, and how often each happens."""

    name: str
    description: str
    #: Share of operations that are write transactions (the rest are reads).
    write_share: float
    write_body: Body | None
    read_body: Body | None
    #: Runs in several processes (``--processes``) instead of one.
    cross_process: bool = False
    #: sqlitefair gets one reader connection per thread (read scaling) instead of its default.
    readers_follow_threads: bool = False
    #: How committed writes are counted in the file afterwards: "items" rows or the "counters" sum.
    verify: str = "items"
    #: Thread counts it runs at unless ``--threads`` says otherwise.
    default_threads: tuple[int, ...] = (16,)

    @property
    def kinds(self) -> tuple[str, ...]:
        """Operation kinds this workload produces, writes first."""
        out = []
        if self.write_share > 0:
            out.append("write")
        if self.write_share < 1:
            out.append("read")
        return tuple(out)

    @property
    def primary_kind(self) -> str:
        return "write" if self.write_share >= 0.5 else "read"


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload(
            "write",
            f"write contention: each transaction reads {WRITE_READS} rows, inserts a row, commits",
            1.0,
            write_item,
            None,
        ),
        Workload(
            "read",
            f"read scaling: range queries materialising {READ_ROWS} rows each",
            0.0,
            None,
            read_page,
            readers_follow_threads=True,
        ),
        Workload(
            "mixed",
            f"web-like: {1 - MIXED_WRITE_SHARE:.0%} reads of {MIXED_READ_ROWS} rows, "
            f"{MIXED_WRITE_SHARE:.0%} write transactions",
            MIXED_WRITE_SHARE,
            write_item,
            read_small,
            readers_follow_threads=True,
        ),
        Workload(
            "procs",
            "cross-process write contention: the write workload in several processes at once",
            1.0,
            write_item,
            None,
            cross_process=True,
        ),
        Workload(
            "insert",
            "single-thread overhead: a one-row insert per transaction",
            1.0,
            insert_one,
            None,
            default_threads=(1,),
        ),
        Workload(
            "short",
            "very short transactions: one indexed UPDATE (~10 us of work)",
            1.0,
            bump_counter,
            None,
            verify="counters",
        ),
    )
}


def get_workload(name: str) -> Workload:
    try:
        return WORKLOADS[name]
    except KeyError:
        raise ValueError(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}") from None


def pragma_statements(pragmas: Any = None) -> list[str]:
    """``PRAGMA`` statements for sqlitefair's default pragmas, for raw connections.

    The raw strategies get exactly the pragmas the pool applies, so that the
    comparison is about locking and queueing, not about journal modes.
    """
    out = []
    for name, value in dict(sqlitefair.DEFAULT_PRAGMAS if pragmas is None else pragmas).items():
        if isinstance(value, bool):
            text = "ON" if value else "OFF"
        else:
            text = str(value)
        out.append(f"PRAGMA {name} = {text}")
    return out


def create_database(path: str) -> None:
    """Create a fresh benchmark database at ``path`` (removing an earlier one and its WAL)."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            os.remove(path + suffix)
        except FileNotFoundError:
            pass
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for statement in pragma_statements():
            conn.execute(statement).fetchall()
        rng = random.Random(42)
        conn.execute("BEGIN")
        conn.execute(f"CREATE TABLE {MARKER_TABLE}(key TEXT PRIMARY KEY, value TEXT)")
        conn.execute(f"INSERT INTO {MARKER_TABLE} VALUES ('made_by', 'sqlitefair bench')")
        conn.execute(
            "CREATE TABLE docs(id INTEGER PRIMARY KEY, category INTEGER NOT NULL, title TEXT NOT NULL, "
            "body TEXT NOT NULL, score REAL NOT NULL)"
        )
        conn.executemany(
            "INSERT INTO docs VALUES (?, ?, ?, ?, ?)",
            (
                (i, i % 17, f"document number {i}", f"body of document {i} " * 5, rng.random())
                for i in range(1, DOCS + 1)
            ),
        )
        conn.execute(
            "CREATE TABLE items(id INTEGER PRIMARY KEY, worker INTEGER NOT NULL, doc INTEGER NOT NULL, "
            "score REAL NOT NULL, payload TEXT NOT NULL)"
        )
        conn.execute("CREATE TABLE counters(id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
        conn.executemany("INSERT INTO counters VALUES (?, 0)", ((i,) for i in range(1, COUNTERS + 1)))
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        conn.close()


def is_benchmark_database(path: str) -> bool:
    """Whether ``path`` is a database this benchmark made (safe to recreate)."""
    try:
        conn = sqlite3.connect("file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro", uri=True)
    except sqlite3.Error:
        return False
    try:
        row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (MARKER_TABLE,)).fetchone()
        return row is not None
    except sqlite3.Error:
        return False
    finally:
        conn.close()


def committed_count(path: str, workload: Workload) -> int:
    """Write transactions that really committed, counted in the file itself."""
    conn = sqlite3.connect(path)
    try:
        if workload.verify == "counters":
            row = conn.execute("SELECT coalesce(sum(n), 0) FROM counters").fetchone()
        else:
            row = conn.execute("SELECT count(*) FROM items").fetchone()
        return int(row[0])
    finally:
        conn.close()
