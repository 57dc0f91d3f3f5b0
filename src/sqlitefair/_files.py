"""Watching the database file: a commit must never be acknowledged into a deleted or replaced file.

In WAL mode SQLite keeps writing to a database file that was deleted or
replaced (renamed over) under it, and new connections open whatever the path
names now: commits would be lost or split between two files.  So the pool
keeps a descriptor of the file it opened and, before every ``COMMIT``, asks
the kernel whether that file still has a name: ``os.fstat(fd).st_nlink`` is 0
once it was deleted or renamed over (measured here: 0.7 us a call; a
``readlink`` of ``/proc/self/fd/N``, which would also see a move, took 3 us,
most of it in the kernel).  A file moved away (still linked, elsewhere) is
caught by comparing the path's identity with a ``stat`` of the path, at most
every ``FILE_CHECK_INTERVAL`` seconds and on every new connection.

Once lost, always lost: every later check raises the same error, so no
commit after it can succeed by luck.
"""

from __future__ import annotations

import os
import threading
from time import monotonic

from . import _defaults
from ._errors import OpenError

__all__ = ("FileWatch", "file_identity")


def file_identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of ``path``, or None if it does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


class FileWatch:
    """The database file a pool opened, and whether its path still names it.

    Invariant: ``_lost`` goes from None to a message once and never back.
    """

    def __init__(self, path: str | None, name: str) -> None:
        self._path = path  # None: a URI target, not watched
        self._name = name
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None
        self._due = 0.0
        self._lost: str | None = None
        self._lock = threading.Lock()  # open and close of the descriptor
        if path is not None:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            st = os.fstat(fd)
            self._fd, self._identity = fd, (st.st_dev, st.st_ino)
            self._due = monotonic() + _defaults.FILE_CHECK_INTERVAL

    def check_before_commit(self) -> None:
        """Raise :class:`OpenError` if the file was deleted or replaced (cheap: one ``fstat``)."""
        fd = self._fd
        if fd is None or self._lost is not None:
            if self._lost is not None:
                raise OpenError(self._lost)
            return
        try:
            linked = os.fstat(fd).st_nlink > 0
        except OSError:  # closed by close(): nothing to compare any more
            return
        if linked and monotonic() < self._due:
            return  # the common case
        self.check_path()  # says which: deleted, or replaced (and catches a move)
        if not linked:
            self._mark_lost("deleted")

    def check_path(self) -> None:
        """Raise :class:`OpenError` unless the path names the opened file (a ``stat`` of the path)."""
        if self._lost is not None:
            raise OpenError(self._lost)
        if self._path is None:
            return
        self._due = monotonic() + _defaults.FILE_CHECK_INTERVAL
        current = file_identity(self._path)
        if current != self._identity:
            self._mark_lost("deleted" if current is None else "replaced by another file")

    def _mark_lost(self, what: str) -> None:
        self._lost = (
            f"{self._name!r} was {what} while this pool had it open; sqlitefair stopped using it so that "
            "no write goes to a file nobody will read, and every transaction of this pool now raises this "
            "error (nothing was committed by the transaction that raised it). Restore the file and create "
            "a new pool with sqlitefair.connect()."
        )
        raise OpenError(self._lost)

    def close(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
