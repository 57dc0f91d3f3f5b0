"""Every default of sqlitefair, in one place.

The pragmas are the ones Rails 8 ships for SQLite in production; each line
says why.  Override any of them with ``connect(..., pragmas={...})`` (a value
of ``None`` drops a default).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

#: Seconds one checkout may wait in total: queueing in this process plus
#: waiting for another process's write lock.
TIMEOUT: float = 5.0

#: Read-only connections per pool.
READERS: int = 4

#: Seconds between checks that the database path still names the file the pool opened
#: (SQLite keeps writing to a deleted or replaced file in WAL mode; those writes would be lost).
FILE_CHECK_INTERVAL: float = 0.05

#: When the WAL file outgrows this many bytes, the writer briefly pauses this pool's
#: readers and checkpoints with TRUNCATE: under constant readers SQLite's own
#: auto-checkpoint can never restart the WAL, and it grows without bound.
WAL_LIMIT: int = 64 * 1024 * 1024

#: Seconds between looks at the WAL's size (a stat() call) after commits.
WAL_CHECK_INTERVAL: float = 0.5

#: Seconds the writer waits for in-flight reads to finish before such a checkpoint;
#: if they take longer it skips this one and tries again later.
CHECKPOINT_READER_WAIT: float = 0.25

#: How the writer passes from one thread to the next (``connect(handoff=...)``): "strict" hands it
#: to the oldest waiter on every release (a thread wake-up per transaction); "bounded" lets a
#: running thread take a freed writer first unless the oldest waiter has waited BARGING_WINDOW.
HANDOFF: str = "bounded"
BARGING_WINDOW: float = 0.001
#: ... or, for a waiter that queued behind others, BARGING_DEPTH x its strict-FIFO wait (the
#: waiters ahead of it and the holder, x the mean turn), if longer: a fixed 1 ms stops all
#: barging once more than 1 ms of turns queue (a few dozen threads on short transactions), and
#: a wake-up per transaction costs a quarter of the throughput at 256 threads.  Measured side by
#: side (write, 2 cores, 256 threads, 3 rounds): 21.6k against 19.2k transactions per second on
#: 3.11, 21.0k against 19.9k on 3.13, with slowest waits 1.8x to 2.6x the ideal (256 x the mean
#: transaction) against 1.4x to 1.8x; 16 threads unchanged.
#: Off (0) for now: with 1.5, tests/test_reliability.py's exceptions-and-SIGINT test left a writer
#: process hanging on 3.13t in 2 of 5 runs (0 of 8 with 0, 0 of 6 with the code before the
#: rule), not yet explained.  The figures above and the published run had it at 1.5.
BARGING_DEPTH: float = 0.0

#: Seconds a process keeps the writer's turn in the cross-process queue (``process_queue``) while
#: its own threads go on writing, before it goes to the back of the queue: a hand-off to another
#: process costs a thread wake-up there, so turns run a few transactions back to back.  Bounds
#: the wait of a process behind N others to about N turns.  Measured (8 processes x 2 threads,
#: 3.13t): 1 ms gave 0.92x the throughput of processes without the queue, 2 ms 1.15x, with
#: alike slowest waits (35-50 ms against 67-85 ms for 1 ms polling).
PROCESS_TURN: float = 0.002

#: Alone on its database file (no other pool has the queue open), a process keeps its turn past
#: a commit for the next transaction only when that commit came within this many seconds of the
#: one before: writes back to back.  A kept turn spares the next transaction four system calls
#: (about 3 us) but costs the turn keeper's thread two wake-ups; measured with a Django loop
#: writing every 2 ms in one process, that was 4 context switches and about 75 us of CPU per
#: write.  So keeping pays only when a turn serves a few dozen transactions.
KEEP_ALONE_GAP: float = 0.0001

#: Percentiles in :meth:`Pool.stats` are over this many most recent waits.
STATS_WINDOW: int = 65536

#: Applied to every connection, in this order (``journal_mode`` by the writer only:
#: it is a property of the database file).
PRAGMAS: Mapping[str, object] = MappingProxyType(
    {
        # Readers and the writer no longer block each other.
        # https://www.sqlite.org/wal.html
        "journal_mode": "wal",
        # In WAL mode NORMAL is corruption-safe and skips an fsync per commit;
        # a power loss may roll back the last transactions, never corrupt.
        # https://www.sqlite.org/pragma.html#pragma_synchronous
        "synchronous": "normal",
        # SQLite ships with foreign keys off for backwards compatibility.
        # https://www.sqlite.org/foreignkeys.html
        "foreign_keys": True,
        # Truncate the WAL back to 64 MiB after checkpoints instead of letting it keep its peak size.
        # https://www.sqlite.org/pragma.html#pragma_journal_size_limit
        "journal_size_limit": 64 * 1024 * 1024,
        # Read through a 128 MiB memory map: fewer read() system calls.
        # https://www.sqlite.org/mmap.html
        "mmap_size": 128 * 1024 * 1024,
        # 2000 pages (8 MiB at 4 KiB pages) of page cache per connection.
        # https://www.sqlite.org/pragma.html#pragma_cache_size
        "cache_size": 2000,
    }
)

#: Pragmas that apply to the database file, so only the writer sets them.
DATABASE_PRAGMAS: frozenset[str] = frozenset({"journal_mode", "auto_vacuum", "page_size"})
