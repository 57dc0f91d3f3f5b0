"""Busy policies: what a connection does when another one holds SQLite's write lock.

SQLite's own busy handler (``sqlite3.connect(timeout=...)``) sleeps with a
backoff that reaches 100 ms between tries, so a thread that has waited long
sleeps through the moments the lock is free while a newcomer, still polling
every millisecond, takes it.  sqlitefair instead sets SQLite's busy timeout to
zero and retries ``BEGIN IMMEDIATE`` itself, sleeping with the GIL released,
at an interval the policy chooses, until the caller's deadline.

A policy is a small immutable object with a pure formula, so benchmarks can
compare them side by side:

* :class:`SQLiteBusyTimeout`: SQLite's built-in handler (the baseline).
* :class:`ConstantRetry`: a fixed interval (sqlite3-ruby and Rails 8 use 1 ms).
* :class:`FairRetry` (the default): age-aware; the longer a caller has waited,
  the more often it polls, so old waiters win the race for a freed lock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from ._interrupts import interruptible

__all__ = ("BusyPolicy", "SQLiteBusyTimeout", "ConstantRetry", "FairRetry", "BusyTimeout", "retry_while_busy")


class BusyPolicy:
    """Base class: decides how long to sleep after SQLite answers SQLITE_BUSY."""

    #: Short name used in statistics and benchmark tables.
    name: str = "policy"

    def sqlite_busy_timeout(self, timeout: float | None) -> float:
        """Seconds of SQLite's own busy timeout to configure on the writer (0: none)."""
        return 0.0

    def delay(self, attempt: int, waited: float) -> float | None:
        """Seconds to sleep before retry number ``attempt`` (1-based), after ``waited``
        seconds since the first BUSY; ``None`` gives up at once."""
        raise NotImplementedError


@dataclass(frozen=True)
class SQLiteBusyTimeout(BusyPolicy):
    """Let SQLite's built-in busy handler wait (its backoff is unfair to old waiters)."""

    name = "sqlite-busy-timeout"

    def sqlite_busy_timeout(self, timeout: float | None) -> float:
        # SQLite's handler takes an int of milliseconds; "forever" is a very long time.
        return 1e6 if timeout is None else timeout

    def delay(self, attempt: int, waited: float) -> float | None:
        return None


@dataclass(frozen=True)
class ConstantRetry(BusyPolicy):
    """Retry every ``interval`` seconds (sqlite3-ruby's ``busy_handler_timeout`` uses 1 ms)."""

    interval: float = 0.001
    name = "constant-retry"

    def __post_init__(self) -> None:
        if not self.interval > 0:
            raise ValueError(f"interval must be > 0 seconds, got {self.interval!r}")

    def delay(self, attempt: int, waited: float) -> float | None:
        return self.interval


@dataclass(frozen=True)
class FairRetry(BusyPolicy):
    """Age-aware retry: ``max(minimum, initial / (1 + waited / age_scale))``.

    A newcomer polls every ``initial`` seconds; one that has waited
    ``age_scale`` seconds polls twice as often, and so on down to ``minimum``.
    Only the head of each process's writer queue polls, so the extra polls
    cost little.
    """

    initial: float = 0.002
    minimum: float = 0.0002
    age_scale: float = 0.010
    name = "fair-retry"

    def __post_init__(self) -> None:
        if not (self.initial > 0 and self.minimum > 0 and self.age_scale > 0):
            raise ValueError(f"FairRetry intervals must be > 0, got {self!r}")
        if self.minimum > self.initial:
            raise ValueError(f"minimum {self.minimum} is larger than initial {self.initial}")

    def delay(self, attempt: int, waited: float) -> float | None:
        return max(self.minimum, self.initial / (1.0 + waited / self.age_scale))


class BusyTimeout(Exception):
    """Internal: the deadline passed while SQLite kept answering BUSY."""

    def __init__(self, retries: int, busy_for: float) -> None:
        super().__init__(f"still busy after {retries} retries over {busy_for:.3f} s")
        self.retries = retries
        self.busy_for = busy_for


@interruptible
def busy_sleep(seconds: float) -> None:
    """Sleep between retries (GIL released); a Ctrl-C lands here at once, even inside the pool's code."""
    time.sleep(seconds)


def retry_while_busy(
    operation: Callable[[], object],
    is_busy: Callable[[BaseException], bool],
    policy: BusyPolicy,
    deadline: float | None,
) -> int:
    """Run ``operation`` until it does not fail with BUSY; return how many retries it took.

    Raises :class:`BusyTimeout` once ``deadline`` (``time.monotonic()``) has
    passed; the last try happens at the deadline.  Other errors propagate.
    """
    attempt = 0
    first_busy = 0.0
    while True:
        try:
            operation()
            return attempt
        except Exception as exc:
            if not is_busy(exc):
                raise
            now = time.monotonic()
            if attempt == 0:
                first_busy = now
            attempt += 1
            pause = policy.delay(attempt, now - first_busy)
            if pause is None or (deadline is not None and now >= deadline):
                raise BusyTimeout(attempt - 1, now - first_busy) from exc
            if deadline is not None:
                pause = min(pause, deadline - now)
        busy_sleep(pause)  # outside the except block: the traceback is not kept alive
