"""How long callers waited, and how often: the numbers behind ``Pool.stats()``."""

from __future__ import annotations

import math
import threading
from collections import deque
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
    readers: int
    writes: WaitStats
    reads: WaitStats
    busy_retries: int
    busy_wait: float
    write_timeouts: int
    read_timeouts: int
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
    __slots__ = ("count", "max", "total", "recent")

    def __init__(self, window: int) -> None:
        self.count = 0
        self.max = 0.0
        self.total = 0.0
        self.recent: deque[float] = deque(maxlen=window)

    def add(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        if seconds > self.max:
            self.max = seconds
        self.recent.append(seconds)

    def snapshot(self) -> WaitStats:
        ordered = sorted(self.recent)
        return WaitStats(self.count, percentile(ordered, 0.50), percentile(ordered, 0.99), self.max, self.total)


class StatsRecorder:
    """Thread-safe counters of one pool; every update takes one short lock."""

    def __init__(self, window: int = _defaults.STATS_WINDOW) -> None:
        self._lock = threading.Lock()
        self._writes = _WaitSeries(window)
        self._reads = _WaitSeries(window)
        self.busy_retries = 0
        self.busy_wait = 0.0
        self.write_timeouts = 0
        self.read_timeouts = 0

    def write_served(self, waited: float, busy_retries: int, busy_wait: float) -> None:
        with self._lock:
            self._writes.add(waited)
            self.busy_retries += busy_retries
            self.busy_wait += busy_wait

    def read_served(self, waited: float) -> None:
        with self._lock:
            self._reads.add(waited)

    def timed_out(self, kind: str, busy_retries: int = 0) -> None:
        with self._lock:
            if kind == "write":
                self.write_timeouts += 1
            else:
                self.read_timeouts += 1
            self.busy_retries += busy_retries

    def snapshot(self) -> tuple[WaitStats, WaitStats, int, float, int, int]:
        with self._lock:
            return (
                self._writes.snapshot(),
                self._reads.snapshot(),
                self.busy_retries,
                self.busy_wait,
                self.write_timeouts,
                self.read_timeouts,
            )
