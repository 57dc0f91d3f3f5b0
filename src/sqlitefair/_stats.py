"""How long callers waited, and how often: the numbers behind ``Pool.stats()``."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from . import _defaults

__all__ = ("WaitStats", "PoolStats", "StatsRecorder")


@dataclass(frozen=True)
class WaitStats:
    """Wait times of one kind of checkout, in seconds.

    ``count`` and ``max`` cover the pool's whole life; the percentiles cover the
    most recent ``window`` waits (``sqlitefair._defaults.STATS_WINDOW``).
    """

    count: int
    p50: float
    p99: float
    max: float
    total: float

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0


@dataclass(frozen=True)
class PoolStats:
    """A snapshot of one pool.  ``gil_enabled`` is read after the backend was imported."""

    path: str
    backend: str
    sqlite_version: str
    #: The linked SQLite can lose writes when several processes write (https://sqlite.org/wal.html#walresetbug).
    wal_reset_bug: bool
    gil_enabled: bool
    busy_policy: str
    #: "on" while writers of every process line up in the cross-process queue, else "off: <why>".
    process_queue: str
    readers: int
    writes: WaitStats
    reads: WaitStats
    busy_retries: int
    busy_wait: float
    write_timeouts: int
    read_timeouts: int
    #: WAL checkpoints sqlitefair ran because the WAL outgrew ``wal_limit``, and ones it had to skip.
    checkpoints: int
    checkpoints_skipped: int
    #: Times a writer found its connection still inside a transaction that an interrupted
    #: holder had left open, and rolled it back before use (0 unless something went wrong).
    writer_resets: int
    wal_bytes: int
    writer_in_use: bool
    writer_queue: int
    reader_queue: int
    readers_in_use: int
    readers_open: int


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = math.ceil(round(fraction * len(sorted_values), 9))
    return sorted_values[min(max(rank, 1), len(sorted_values)) - 1]


class _WaitSeries:
    __slots__ = ("count", "max", "total", "recent", "window")

    def __init__(self, window: int) -> None:
        self.count = 0
        self.max = 0.0
        self.total = 0.0
        #: The last ``window`` waits, in no particular order: a list that grows to ``window`` and
        #: is then written round (a list, not a deque: copying a deque is pathologically slow on
        #: free-threaded 3.13, and iterating one raises if it is appended to meanwhile).
        self.recent: list[float] = []
        self.window = window

    def add(self, seconds: float) -> None:
        i = self.count % self.window
        self.count += 1
        self.total += seconds
        if seconds > self.max:
            self.max = seconds
        recent = self.recent
        if i == len(recent):
            recent.append(seconds)
        else:
            recent[i] = seconds

    def snapshot(self) -> WaitStats:
        """The series now.  Safe beside a concurrent ``add`` (a list copy is one step on every
        build); taken during one, the snapshot may count that wait in some fields and not yet in others."""
        recent = self.recent[:]
        count, total, longest = self.count, self.total, self.max
        recent.sort()
        return WaitStats(count, percentile(recent, 0.50), percentile(recent, 0.99), longest, total)


class StatsRecorder:
    """Thread-safe counters of one pool: the counters take one short lock; the write waits are
    recorded by the writer permit's holder only, without it (see :meth:`write_served`).

    Read waits are not here: the reader slots record them per slot, so that a
    read takes no process-wide lock (see ``_slots``).
    """

    def __init__(self, window: int = _defaults.STATS_WINDOW) -> None:
        self._lock = threading.Lock()
        self._writes = _WaitSeries(window)
        #: ``write_waited(seconds)``: record a write's wait (the writer permit's holder only).
        self.write_waited = self._writes.add
        self._counts = {
            "busy_retries": 0,
            "busy_wait": 0.0,
            "write_timeouts": 0,
            "read_timeouts": 0,
            "checkpoints": 0,
            "checkpoints_skipped": 0,
            "writer_resets": 0,
        }

    def write_served(self, waited: float, busy_retries: int, busy_wait: float) -> None:
        """Record one write's wait, and the busy retries it took (those counters take the lock).

        Called only by the holder of the pool's writer permit, which so serialises every update of
        the write series: no lock for it.  Without retries, :attr:`write_waited` does the same
        with one call less (it runs on every transaction)."""
        self._writes.add(waited)
        if busy_retries:
            with self._lock:
                self._counts["busy_retries"] += busy_retries
                self._counts["busy_wait"] += busy_wait

    def add(self, name: str, amount: float = 1) -> None:
        """Add to one of the counters (``write_timeouts``, ``checkpoints``, ...)."""
        with self._lock:
            self._counts[name] += amount

    def snapshot(self) -> dict[str, object]:
        """The recorded fields of :class:`PoolStats` except ``reads`` (the counters consistent with each
        other; the write series as :meth:`_WaitSeries.snapshot` says)."""
        with self._lock:
            return {"writes": self._writes.snapshot(), **self._counts}
