"""Opening pooled connections: what to open, how to set it up, and what to say when it fails.

Everything here is about one connection at a time and holds no pool state:
:class:`Opener` is built once per pool from the validated arguments of
:func:`sqlitefair.connect` and opens the writer and the readers alike.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import threading
import time
import urllib.parse
from threading import get_ident
from typing import Any, Callable, Mapping

from . import _defaults
from ._backends import Backend, Connection
from ._busy import BusyPolicy, BusyTimeout, retry_while_busy
from ._errors import ConfigurationError, OpenError, SqlitefairError, busy_timeout_error
from ._interrupts import interruptible

__all__ = ("Opener", "OnConnect", "check_timeout", "database_target", "merge_pragmas")

_PRAGMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PRAGMA_WORD = re.compile(r"^[A-Za-z0-9_\-]+$")

#: ``on_connect(conn, role)`` runs after sqlitefair set a new connection up; role is "writer" or "reader".
OnConnect = Callable[[Connection, str], None]


def check_timeout(value: object, name: str = "timeout") -> float | None:
    """A validated timeout in seconds; ``None`` and ``float("inf")`` both mean "wait forever"."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{name} must be a number of seconds or None, got {value!r}")
    if not value >= 0:  # also rejects NaN
        raise ConfigurationError(f"{name} must be >= 0 seconds, got {value!r}")
    if math.isinf(value):
        return None
    if value > threading.TIMEOUT_MAX:
        raise ConfigurationError(
            f"{name}={value!r} s is longer than this platform can wait in one call "
            f"({threading.TIMEOUT_MAX:.0f} s); pass None (or float('inf')) to wait without a limit"
        )
    return float(value)


def pragma_sql(name: str, value: object) -> str:
    """``PRAGMA name = value`` for a validated name and value."""
    if isinstance(value, bool):
        text = "ON" if value else "OFF"
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, str) and _PRAGMA_WORD.match(value):
        text = value
    elif isinstance(value, str):
        text = "'" + value.replace("'", "''") + "'"
    else:
        raise ConfigurationError(f"pragma {name}: value must be a bool, int or str, got {value!r}")
    return f"PRAGMA {name} = {text}"


def merge_pragmas(overrides: Mapping[str, object] | None) -> dict[str, object]:
    """The default pragmas with ``overrides`` applied (``None`` removes one), validated."""
    if overrides is not None and not isinstance(overrides, Mapping):
        raise ConfigurationError(f"pragmas must be a mapping of name to value, got {overrides!r}")
    merged = dict(_defaults.PRAGMAS)
    for name, value in (overrides or {}).items():
        if not isinstance(name, str) or not _PRAGMA_NAME.match(name):
            raise ConfigurationError(f"invalid pragma name {name!r}")
        name = name.lower()
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    for name, value in merged.items():
        pragma_sql(name, value)  # type check
        if name in ("mmap_size", "cache_spill", "wal_autocheckpoint") and isinstance(value, int) and value < 0:
            raise ConfigurationError(f"pragma {name} must be >= 0, got {value}")
        if name == "journal_size_limit" and isinstance(value, int) and value < -1:
            raise ConfigurationError(f"pragma journal_size_limit must be >= -1 (no limit), got {value}")
        if name == "query_only":
            raise ConfigurationError("pragma query_only is set by sqlitefair itself (on for readers, off for the writer)")
    if str(merged.get("journal_mode", "")).lower() == "memory":
        raise ConfigurationError("journal_mode=memory is not crash-safe; sqlitefair refuses it (use wal)")
    return merged


def database_target(path: object) -> tuple[str, bool, str]:
    """Validate ``path``; return (what to pass to SQLite, whether it is a URI, a name for messages)."""
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise ConfigurationError(f"path must be a str or os.PathLike, got {path!r}")
    text = os.fspath(path)
    if not isinstance(text, str):
        raise ConfigurationError(f"path must be a text path, got {path!r}")
    memory = text in ("", ":memory:") or (
        text.startswith("file:") and ("mode=memory" in text or text[5:].split("?")[0] in ("", ":memory:"))
    )
    if memory:
        raise ConfigurationError(
            f"{text!r} is an in-memory or temporary database: every pooled connection would see a "
            "different, empty database. Use a file path (e.g. in tempfile.mkdtemp()), or plain "
            "sqlite3.connect(':memory:') where one connection is enough."
        )
    if text.startswith("file:"):
        refuse_read_only_uri(text)
        return text, True, text
    absolute = os.path.abspath(text)  # resolved once: a later os.chdir() must not move the pool
    return absolute, False, absolute


def uri_file_path(uri: str) -> str:
    """The file a ``file:`` URI names, as an absolute path (https://www.sqlite.org/uri.html)."""
    rest = uri[5:].partition("?")[0].partition("#")[0]
    if rest.startswith("//"):  # file://authority/path: the authority is empty or "localhost"
        rest = "/" + rest[2:].partition("/")[2]
    return os.path.abspath(urllib.parse.unquote(rest))


def refuse_read_only_uri(uri: str) -> None:
    """A ``mode=ro`` or ``immutable=1`` URI opens fine and fails at the first write: refuse it here."""
    query = uri.partition("?")[2].partition("#")[0]
    params = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
    if params.get("mode") == "ro":
        what = "mode=ro"
    elif params.get("immutable", "").lower() in ("1", "yes", "true", "on"):
        what = "immutable=" + params["immutable"]
    else:
        return
    raise ConfigurationError(
        f"{uri!r} opens the database read-only ({what}), but a pool writes: it has a writer connection, "
        "keeps the file in WAL mode and checkpoints it, so it would fail at the first write. Drop "
        f"{what} from the URI: reads through pool.read() are read-only anyway (PRAGMA query_only). To "
        "read a file that must not be written (read-only media, another program's database), use "
        f"sqlite3.connect({uri!r}, uri=True) without a pool."
    )


def explain_open_error(exc: BaseException, name: str, role: str) -> str:
    """A message saying why ``name`` could not be opened, and what to do."""
    text = str(exc)
    if os.path.isdir(name):
        return (
            f"cannot open {name!r} for the {role} connection: it is a directory, not a database file. "
            f"Pass the path of the database file, e.g. {os.path.join(name, 'app.db')!r} ({text})."
        )
    if "not a database" in text:
        return (
            f"{name!r} is not an SQLite database (or it is encrypted or its header is corrupt): {text}. "
            "sqlitefair did not write to it."
        )
    if "unable to open" in text or "readonly" in text or "read-only" in text:
        folder = os.path.dirname(name) or "."
        if not os.path.isdir(folder):
            return f"cannot open {name!r}: the folder {folder!r} does not exist ({text})."
        hint = ""
        if not os.access(folder, os.W_OK):
            hint = f" The folder {folder!r} is not writable, and in WAL mode SQLite must create -wal and -shm files beside the database."
        elif os.path.exists(name) and not os.access(name, os.W_OK):
            hint = " The file is not writable."
        return f"cannot open {name!r} for the {role} connection: {text}.{hint}"
    return f"could not set up the {role} connection to {name!r}: {text}"


@interruptible
def _run_hook(hook: OnConnect, conn: Connection, role: str) -> None:
    """The user's ``on_connect``: a Ctrl-C there lands at once (the connection is then closed)."""
    hook(conn, role)


class Opener:
    """Opens and sets up the connections of one pool (writer and readers alike)."""

    def __init__(
        self,
        *,
        target: str,
        uri: bool,
        name: str,
        backend: Backend,
        policy: BusyPolicy,
        timeout: float | None,
        pragmas: Mapping[str, object],
        on_connect: OnConnect | None,
    ) -> None:
        self._target = target
        self._uri = uri
        self._name = name
        self._backend = backend
        self._policy = policy
        self._timeout = timeout
        self._pragmas = pragmas
        self._on_connect = on_connect

    def open(self, role: str, deadline: float | None, *, check_pragma_names: bool = False) -> Connection:
        """Open and set up one connection; errors say what is wrong with the file.

        The caller registers it (for ``close()`` and fork) and checks the file's identity first."""
        backend = self._backend
        if role == "writer":
            busy_timeout = self._policy.sqlite_busy_timeout(self._timeout)
        else:
            # Readers rarely see SQLITE_BUSY in WAL mode (only around recovery);
            # SQLite's own handler covers that.
            busy_timeout = 1e6 if self._timeout is None else min(self._timeout, 1e6)
        try:
            conn = backend.connect(
                self._target, uri=self._uri, busy_timeout=busy_timeout, label=f"the {role} connection of {self._name!r}", role=role
            )
        except Exception as exc:
            raise OpenError(explain_open_error(exc, self._name, role)) from exc
        try:
            # A read of page 1 first: a file that is not a database fails here, before any write.
            self._setup_query(conn, "PRAGMA schema_version", deadline)
            if check_pragma_names:
                self._check_pragma_names(conn)
            for name, value in self._pragmas.items():
                if role != "writer" and name in _defaults.DATABASE_PRAGMAS:
                    continue
                self._set_pragma(conn, name, value, deadline)
            self._setup_query(conn, f"PRAGMA query_only = {'ON' if role == 'reader' else 'OFF'}", deadline)
        except SqlitefairError:  # already says what happened (a timeout, an unknown pragma)
            backend.close(conn)
            raise
        except backend.error as exc:
            backend.close(conn)
            raise OpenError(explain_open_error(exc, self._name, role)) from exc
        except BaseException:
            backend.close(conn)
            raise
        if self._on_connect is not None:
            backend.set_holder(conn, get_ident())  # the hook may run statements
            try:
                _run_hook(self._on_connect, conn, role)
            except BaseException:
                backend.close(conn)
                raise
            finally:
                backend.set_holder(conn, None)
        # From here on the connection refuses transaction control (writer) and leaving read-only
        # (readers); after the hook, which may set things up with COMMIT, executescript or pragmas.
        try:
            backend.start_policing(conn)
        except BaseException:
            backend.close(conn)
            raise
        return conn

    def _check_pragma_names(self, conn: Connection) -> None:
        try:
            known = {row[0] for row in self._backend.query_all(conn, "PRAGMA pragma_list")}
        except Exception:  # built without introspection pragmas: SQLite will ignore typos silently
            return
        for name in self._pragmas:
            if known and name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigurationError(f"unknown pragma {name!r}{hint}: SQLite would silently ignore it")

    def _setup_query(self, conn: Connection, sql: str, deadline: float | None) -> tuple[Any, ...] | None:
        """One set-up statement, waiting out other connections' locks like a write does
        (another process may be checkpointing, or switching the file to WAL)."""
        result: list[tuple[Any, ...] | None] = []
        start = time.monotonic()
        try:
            retry_while_busy(
                lambda: result.append(self._backend.query_one(conn, sql)), self._backend.is_busy, self._policy, deadline
            )
        except BusyTimeout as exc:
            raise busy_timeout_error(
                self._backend, self._name, self._policy, "write lock", exc, start, deadline
            ) from exc.__cause__
        return result[-1]

    def _set_pragma(self, conn: Connection, name: str, value: object, deadline: float | None) -> None:
        row = self._setup_query(conn, pragma_sql(name, value), deadline)
        if name == "journal_mode":
            mode = str(row[0]).lower() if row else ""
            if mode != str(value).lower():
                raise OpenError(
                    f"{self._name!r} stayed in journal_mode={mode!r} instead of {value!r} "
                    "(is it on a file system without shared memory, or opened read-only?)"
                )
