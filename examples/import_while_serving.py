"""Import rows into a SQLite file while a small web app keeps serving reads from it.

Two processes share one file, each through its own sqlitefair pool:

    # terminal 1: the web app (reads through read-only pooled connections)
    python examples/import_while_serving.py serve data.db --port 8000

    # terminal 2: the import, in short BEGIN IMMEDIATE write blocks
    python examples/import_while_serving.py import data.db items rows.ndjson --pk id

    # terminal 3
    curl http://127.0.0.1:8000/items/count
    curl 'http://127.0.0.1:8000/items?limit=5'

The import is idempotent (upsert on --pk), so re-running it after a failure
neither loses nor duplicates rows.  Input: JSON array, newline-delimited JSON
(.ndjson/.jsonl) or CSV, chosen by the file's extension.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterable, Iterator
from urllib.parse import parse_qs, urlsplit

from sqlitefair.integrations import sqlite_utils as sfu


def read_rows(path: Path) -> Iterator[dict[str, Any]]:
    suffix = path.suffix.lower()
    with path.open(newline="", encoding="utf-8-sig") as f:
        if suffix == ".csv":
            yield from csv.DictReader(f)
        elif suffix in (".ndjson", ".jsonl"):
            for line in f:
                if line.strip():
                    yield json.loads(line)
        else:
            yield from json.load(f)


def batches(rows: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    it = iter(rows)
    while batch := list(itertools.islice(it, size)):
        yield batch


def import_rows(path: str, table: str, source: Path, pk: str, batch_size: int) -> None:
    # timeout: how long one batch may wait for the writer, including other processes' locks.
    with sfu.connect(path, readers=1, timeout=30) as dbpool:
        total = 0
        start = time.monotonic()
        for batch in batches(read_rows(source), batch_size):
            # One short transaction per batch: readers never wait, and other writers
            # (the web app, the sqlite-utils CLI) get the lock between batches.
            with dbpool.write() as db:
                db[table].upsert_all(batch, pk=pk, alter=True)
            total += len(batch)
            print(f"\r{total} rows", end="", file=sys.stderr)
        stats = dbpool.pool.stats()
        print(
            f"\nimported {total} rows into {table!r} in {time.monotonic() - start:.1f} s "
            f"({stats.writes.count} write blocks, slowest wait for the writer {stats.writes.max * 1000:.1f} ms, "
            f"{stats.busy_retries} retries while another process held the lock)",
            file=sys.stderr,
        )


def serve(path: str, host: str, port: int) -> None:
    dbpool = sfu.connect(path, readers=4, timeout=5)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            parts = [p for p in url.path.split("/") if p]
            limit = int(parse_qs(url.query).get("limit", ["20"])[0])
            # A read block: a read-only pooled connection, never blocked by the import.
            with dbpool.read() as db:
                if not parts:
                    body: Any = {"tables": db.table_names()}
                elif parts[0] not in db.table_names():
                    return self.reply(404, {"error": f"no table {parts[0]!r}"})
                elif parts[1:] == ["count"]:
                    body = {"table": parts[0], "count": db[parts[0]].count}
                else:
                    body = {"table": parts[0], "rows": list(db[parts[0]].rows_where(limit=limit))}
            self.reply(200, body)

        def reply(self, status: int, body: Any) -> None:
            data = json.dumps(body, default=str).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    print(f"serving {path} on http://{host}:{server.server_port}/", file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        dbpool.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p_serve = commands.add_parser("serve", help="serve a read-only JSON API over HTTP")
    p_serve.add_argument("database")
    p_serve.add_argument("--host", default="127.0.0.1")
    p_serve.add_argument("--port", type=int, default=8000)
    p_import = commands.add_parser("import", help="upsert rows from a file, in batches")
    p_import.add_argument("database")
    p_import.add_argument("table")
    p_import.add_argument("file", type=Path)
    p_import.add_argument("--pk", required=True, help="primary key column (makes re-runs idempotent)")
    p_import.add_argument("--batch-size", type=int, default=1000, help="rows per write block (default 1000)")
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.database, args.host, args.port)
    else:
        import_rows(args.database, args.table, args.file, args.pk, args.batch_size)


if __name__ == "__main__":
    main()
