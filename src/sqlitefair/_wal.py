"""Keeping the WAL bounded: a checkpoint with TRUNCATE when it outgrows ``wal_limit``.

SQLite's auto-checkpoint copies pages back but can only restart the WAL when
no reader is using it; with readers always active it never can, and the WAL
grows without bound.  So after a commit, when the WAL is too large, the
writer waits briefly (FIFO) until this pool's readers are all idle, holds
them off, and checkpoints with TRUNCATE.  Readers of other processes can
still keep it from completing; then it is tried again later.
"""

from __future__ import annotations

import logging
import os
from time import monotonic
from typing import Any

from . import _defaults
from ._slots import FairSlots, Slot
from ._waitqueue import LockTimeout

__all__ = ("WalKeeper",)

log = logging.getLogger("sqlitefair")


class WalKeeper:
    """Looks at the WAL's size now and then after commits, and checkpoints past the limit."""

    def __init__(self, wal_path: str | None, limit: int | None, name: str, backend: Any, stats: Any) -> None:
        self._wal_path = wal_path  # None for URI targets: not watched
        self._limit = limit
        self._name = name
        self._backend = backend
        self._stats = stats
        #: When the writer next looks at the WAL's size (never, without a limit).
        self.due = 0.0 if limit is not None and wal_path is not None else float("inf")

    def wal_bytes(self) -> int:
        if self._wal_path is None:
            return 0
        try:
            return os.path.getsize(self._wal_path)
        except OSError:
            return 0

    def after_commit(self, conn: Any, readers: FairSlots) -> None:
        """Called by the writer's holder after a commit once ``due`` passed."""
        now = monotonic()
        self.due = now + _defaults.WAL_CHECK_INTERVAL
        assert self._limit is not None  # due stays infinite without a limit
        if self.wal_bytes() <= self._limit:
            return
        if readers.held_by_current_thread():  # would wait for ourselves
            self._stats.add("checkpoints_skipped")
            return
        permits: list[Slot] = []
        deadline = now + _defaults.CHECKPOINT_READER_WAIT
        try:
            for _ in range(readers.capacity):
                permits.append(readers.acquire(max(0.0, deadline - monotonic()), record=False))
        except LockTimeout:
            self._stats.add("checkpoints_skipped")
            log.debug("skipped a WAL checkpoint of %s: readers busy for %.2f s", self._name, _defaults.CHECKPOINT_READER_WAIT)
        else:
            try:
                row = self._backend.query_one(conn, "PRAGMA wal_checkpoint(TRUNCATE)")
            except self._backend.error:  # the commit stands; the next look tries again
                log.warning("WAL checkpoint of %s failed", self._name, exc_info=True)
                row = None
            self._stats.add("checkpoints" if row and not row[0] else "checkpoints_skipped")
        finally:
            for permit in permits:
                readers.release(permit)
