"""The Django backend (``"ENGINE": "sqlitefair.django"``) under misuse and corner cases: manual
transactions, SQLite ending a transaction by itself, scripts, VACUUM, two aliases of one file,
in-memory databases, an interrupt at the worst moment.

Each scenario runs in a subprocess of its own (Django's settings can be configured once per
process), on a real database file, with real threads.  A test asserts what a Django user may
expect (Django's own backend behaves so, or docs/django.md says so); some run on Django's
backend too, as a control.  A short ``timeout`` (1 s, or 0.3 s for the "quick" alias) bounds every
wait, so a deadlock shows up as "database is locked: sqlitefair waited ... s".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("django")

SRC = str(Path(__file__).resolve().parent.parent / "src")

PRELUDE = """
import sys, os, threading, time, json, sqlite3
import django
from django.conf import settings
path, engine = sys.argv[1], sys.argv[2]
extra = json.loads(sys.argv[3])

def db(**options):
    return {"ENGINE": engine, "NAME": path, "OPTIONS": {"timeout": 1, **extra, **options}}

settings.configure(
    DATABASES={"default": db(), "other": db(), "quick": db(timeout=0.3)},
    INSTALLED_APPS=[], USE_TZ=True,
)
django.setup()
from django.db import connections, connection, transaction, OperationalError, IntegrityError

def gate_locked(alias="default"):
    from sqlitefair.django import base as backend
    conn = connections[alias]
    conn.ensure_connection()
    return backend._gate(*conn._sf_gate_args).lock.locked()

def in_thread(fn, *args):
    '''Run fn in a new thread (its own Django connections); its result or its error's repr.'''
    out = {}
    def run():
        try:
            out["result"] = fn(*args)
        except BaseException as exc:
            out["error"] = repr(exc)
        finally:
            connections.close_all()
    t = threading.Thread(target=run)
    t.start()
    t.join(30)
    return out

def insert(alias, v):
    with connections[alias].cursor() as c:
        c.execute("insert into t(v) values (%s)", [v])
    return "ok"

def values():
    con = sqlite3.connect(path)
    try:
        return [r[0] for r in con.execute("select v from t order by id")]
    finally:
        con.close()

with connection.cursor() as c:
    c.execute("create table if not exists t(id integer primary key, v)")

RESULT = {}
"""

EPILOGUE = """
print("RESULT " + json.dumps(RESULT), flush=True)
"""


def run_scenario(tmp_path: Path, body: str, engine: str = "sqlitefair.django", **options: Any) -> dict[str, Any]:
    """Run ``body`` after PRELUDE in a fresh interpreter; return the RESULT dict it fills."""
    script = tmp_path / "scenario.py"
    script.write_text(PRELUDE + textwrap.dedent(body) + EPILOGUE)
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "app.db"), engine, json.dumps(options)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"scenario failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(lines[-1][len("RESULT ") :])


# -- set_autocommit(True) with a write pending gives the turn back --------------------------------


def test_set_autocommit_true_with_a_pending_write_gives_the_turn_back(tmp_path: Path) -> None:
    """The common manual-transaction pattern

        transaction.set_autocommit(False)
        try:
            ...write...; (an exception, or a forgotten commit)
        finally:
            transaction.set_autocommit(True)

    ends the SQLite transaction inside sqlite3 (setting ``isolation_level = None`` COMMITs), not
    through ``_commit``/``_rollback``.  The turn must go with it: kept, the gate would stay locked
    for as long as the connection lives (forever with CONN_MAX_AGE=None), and every other
    thread's and process's write would time out."""
    result = run_scenario(
        tmp_path,
        """
        transaction.set_autocommit(False)
        try:
            insert("default", "manual")
            raise ValueError("something failed before commit()")
        except ValueError:
            pass
        finally:
            transaction.set_autocommit(True)      # sqlite3 COMMITs the pending transaction here
        RESULT["in_transaction"] = connection.connection.in_transaction
        RESULT["gate_locked"] = gate_locked()
        RESULT["other_thread"] = in_thread(insert, "quick", "other thread")
        try:
            RESULT["same_thread"] = insert("quick", "same thread")
        except OperationalError as exc:
            RESULT["same_thread"] = repr(exc)
        """,
    )
    assert result["in_transaction"] is False
    assert result["gate_locked"] is False, "the turn is held with no transaction open"
    assert result["other_thread"] == {"result": "ok"}, result["other_thread"]
    assert result["same_thread"] == "ok", result["same_thread"]


# -- atomic() in manual mode takes the turn before its SAVEPOINT ------------------------------------


def test_atomic_inside_manual_mode_takes_the_turn_before_writing(tmp_path: Path) -> None:
    """docs/django.md: in manual mode (``set_autocommit(False)``) the transaction takes its place in
    the writer line before it writes.  ``atomic()`` there runs ``SAVEPOINT`` first, which would
    start a *deferred* transaction: a read-then-write could then fail with "database is locked"
    when another connection committed in between.  The savepoint must come after the turn and
    BEGIN IMMEDIATE: another thread's write waits for the turn and goes in after the commit."""
    result = run_scenario(
        tmp_path,
        """
        insert("default", "seed")
        other = {}
        def write_other():
            other.update(in_thread(insert, "other", "other"))
        transaction.set_autocommit(False)
        try:
            with transaction.atomic():
                with connection.cursor() as c:
                    c.execute("select count(*) from t")
                    c.fetchone()
                    RESULT["gate_locked_after_read"] = gate_locked()
                    waiter = threading.Thread(target=write_other)
                    waiter.start()
                    time.sleep(0.1)  # the other thread waits for its turn now
                    try:
                        c.execute("insert into t(v) values ('mine')")
                        RESULT["write"] = "ok"
                    except OperationalError as exc:
                        RESULT["write"] = repr(exc)
            transaction.commit()
        except Exception as exc:
            RESULT.setdefault("write", repr(exc))
            transaction.rollback()
        finally:
            transaction.set_autocommit(True)
        waiter.join(30)
        RESULT["other"] = other
        RESULT["values"] = values()
        RESULT["gate_locked_at_end"] = gate_locked()
        """,
    )
    assert result["gate_locked_after_read"] is True, "the savepoint began a transaction without the turn"
    assert result["write"] == "ok", result["write"]
    assert result["other"] == {"result": "ok"}
    assert result["values"] == ["seed", "mine", "other"]
    assert result["gate_locked_at_end"] is False


# -- a transaction ended by SQLite itself inside atomic(): the next write does not wait for itself --


def test_a_write_after_sqlite_rolled_back_inside_atomic_does_not_wait_for_its_own_turn(tmp_path: Path) -> None:
    """``INSERT OR ROLLBACK`` (or a trigger's ``RAISE(ROLLBACK, ...)``, or SQLITE_FULL/IOERR/...)
    ends the SQLite transaction inside an atomic block.  ``in_transaction`` is then false while
    this connection still holds the turn; the next write in the block must run (as on Django's
    backend), not wait for the turn its own connection holds until ``timeout``."""
    result = run_scenario(
        tmp_path,
        """
        with connection.cursor() as c:
            c.execute("create unique index t_v on t(v)")
        insert("default", "dup")
        t0 = time.monotonic()
        try:
            with transaction.atomic():
                with connection.cursor() as c:
                    try:
                        c.execute("insert or rollback into t(v) values ('dup')")
                    except IntegrityError:
                        pass
                    c.execute("insert into t(v) values ('after')")
            RESULT["block"] = "ok"
        except OperationalError as exc:
            RESULT["block"] = repr(exc)
        RESULT["seconds"] = time.monotonic() - t0
        RESULT["values"] = values()
        """,
    )
    assert result["block"] == "ok", f"{result['block']} after {result['seconds']:.2f} s"
    assert result["values"] == ["dup", "after"]


@pytest.mark.parametrize("engine", ["sqlitefair.django", "django.db.backends.sqlite3"])
def test_executescript_inside_atomic_then_a_write(tmp_path: Path, engine: str) -> None:
    """``cursor.executescript()`` (Django's cursor passes it through) COMMITs the open transaction
    first (sqlite3), then runs its script in autocommit.  Inside atomic() the next write must
    run, as on Django's backend, not wait for the connection's own turn."""
    result = run_scenario(
        tmp_path,
        """
        try:
            with transaction.atomic():
                with connection.cursor() as c:
                    c.execute("insert into t(v) values ('a')")
                    c.executescript("update t set v = v;")
                    c.execute("insert into t(v) values ('b')")
            RESULT["block"] = "ok"
        except OperationalError as exc:
            RESULT["block"] = repr(exc)
        """,
        engine=engine,
    )
    assert result["block"] == "ok", result["block"]


def test_executescript_outside_a_transaction_waits_in_the_writer_line(tmp_path: Path) -> None:
    """A write by ``executescript`` in autocommit waits in line like any write, not in SQLite's
    busy handler (which would end in a plain "database is locked" after the timeout)."""
    result = run_scenario(
        tmp_path,
        """
        from sqlitefair.django import base as backend
        holding, release = threading.Event(), threading.Event()
        def holder():
            with transaction.atomic(using="other"):
                insert("other", "holder")
                holding.set()
                release.wait(10)
        h = threading.Thread(target=lambda: (holder(), connections.close_all()))
        h.start()
        holding.wait(10)
        connection.ensure_connection()
        lock = backend._gate(*connection._sf_gate_args).lock
        seen = []
        def script():
            with connections["default"].cursor() as c:
                c.executescript("insert into t(v) values ('script');")
        w = threading.Thread(target=lambda: in_thread(script))
        w.start()
        for _ in range(300):
            seen.append(lock.statistics().waiting)
            time.sleep(0.001)
        release.set()
        h.join()
        w.join()
        RESULT["queued_in_line"] = max(seen)
        """,
    )
    assert result["queued_in_line"] == 1, "executescript's write bypassed the writer line"


# -- VACUUM (which cannot run in a transaction) ------------------------------------------------------


@pytest.mark.parametrize("engine", ["sqlitefair.django", "django.db.backends.sqlite3"])
def test_vacuum_through_a_django_cursor(tmp_path: Path, engine: str) -> None:
    """``connection.cursor().execute("VACUUM")`` works on Django's backend, and must here: run in a
    BEGIN IMMEDIATE ... COMMIT it would fail ("cannot VACUUM from within a transaction").  Same
    for ``VACUUM INTO 'backup.db'`` (a common backup recipe)."""
    result = run_scenario(
        tmp_path,
        """
        out = {}
        for sql in ["VACUUM", "VACUUM INTO '%s'" % (path + ".backup")]:
            try:
                with connection.cursor() as c:
                    c.execute(sql)
                out[sql.split()[1] if " " in sql else sql] = "ok"
            except OperationalError as exc:
                out[sql.split()[1] if " " in sql else sql] = repr(exc)
        RESULT.update(out)
        """,
        engine=engine,
    )
    assert result == {"VACUUM": "ok", "INTO": "ok"}, result


# -- OPTIONS["init_command"] has the last word -------------------------------------------------------


@pytest.mark.parametrize("engine", ["sqlitefair.django", "django.db.backends.sqlite3"])
def test_init_command_pragmas_are_not_overridden(tmp_path: Path, engine: str) -> None:
    """Django's documented way to set pragmas is ``OPTIONS["init_command"]``: it must have the last
    word over this backend's pragmas, or ``PRAGMA synchronous=FULL`` (durability) would silently
    become NORMAL."""
    result = run_scenario(
        tmp_path,
        """
        with connection.cursor() as c:
            RESULT["synchronous"] = c.execute("pragma synchronous").fetchone()[0]
            RESULT["cache_size"] = c.execute("pragma cache_size").fetchone()[0]
        """,
        engine=engine,
        init_command="PRAGMA synchronous=FULL; PRAGMA cache_size=-20000",
    )
    assert result == {"synchronous": 2, "cache_size": -20000}, result


# -- two aliases of one file in one thread -------------------------------------------------------------


@pytest.mark.parametrize("engine", ["sqlitefair.django", "django.db.backends.sqlite3"])
def test_write_through_a_second_alias_inside_an_atomic_block(tmp_path: Path, engine: str) -> None:
    """Two aliases of one file: inside an atomic block on one, a write through the other.  Django's
    backend in its default (deferred) mode runs it on a WAL database; with this backend (as with
    Django's IMMEDIATE mode) the block holds the write lock from its start, so the write cannot
    run: it must fail at once, saying why, not wait for its own thread until the timeout."""
    result = run_scenario(
        tmp_path,
        """
        t0 = time.monotonic()
        try:
            with transaction.atomic(using="default"):
                with connections["default"].cursor() as c:
                    c.execute("select count(*) from t")
                insert("other", "via the other alias")
            RESULT["block"] = "ok"
        except OperationalError as exc:
            RESULT["block"] = str(exc)
        RESULT["seconds"] = round(time.monotonic() - t0, 2)
        RESULT["after"] = in_thread(insert, "other", "after")
        """,
        engine=engine,
        init_command="PRAGMA journal_mode=WAL",
    )
    if engine == "sqlitefair.django":
        assert "this thread already holds the turn" in result["block"] and result["seconds"] < 0.5, result
    else:
        assert result["block"] == "ok", result
    assert result["after"] == {"result": "ok"}


# -- an interrupt right after BEGIN IMMEDIATE ----------------------------------------------------------


def test_an_interrupt_after_begin_does_not_release_the_turn_with_the_transaction_open(tmp_path: Path) -> None:
    """A KeyboardInterrupt landing after a BEGIN IMMEDIATE that succeeded, before the turn is
    recorded (injected here with a trace function at ``self._sf_held = ...``), must roll that
    transaction back before the turn is given on.  Else the connection would keep SQLite's write
    lock while the gate is free: the next writer would get the turn and fail, and this
    connection's later writes (Django thinks it is in autocommit) would join the stray
    transaction and never be committed."""
    result = run_scenario(
        tmp_path,
        """
        import inspect
        from sqlitefair import _interrupts
        from sqlitefair.django import base as backend
        src, first = inspect.getsourcelines(backend.DatabaseWrapper._sf_begin)
        line = first + next(i for i, s in enumerate(src) if "self._sf_held = (gate, turn)" in s)
        code = backend.DatabaseWrapper._sf_begin.__code__
        def tracer(frame, event, arg):
            if frame.f_code is not code:
                return None
            def local(frame, event, arg):
                if event == "line" and frame.f_lineno == line:
                    sys.settrace(None)
                    frame.f_trace = None
                    raise KeyboardInterrupt
                return local
            return local
        RESULT["protection_active"] = _interrupts.signal_protection_active()
        sys.settrace(tracer)
        try:
            with transaction.atomic():
                insert("default", "in block")
        except KeyboardInterrupt:
            RESULT["interrupted"] = True
        sys.settrace(None)
        RESULT["in_transaction"] = connection.connection.in_transaction
        RESULT["gate_locked"] = gate_locked()
        RESULT["other_thread"] = in_thread(insert, "quick", "other thread")
        """,
    )
    assert result["interrupted"] is True
    assert not (result["in_transaction"] and not result["gate_locked"]), (
        f"the gate is free while this connection's BEGIN IMMEDIATE is open; next writer: {result['other_thread']}"
    )
    assert result["other_thread"] == {"result": "ok"}, result["other_thread"]


# -- distinct in-memory databases have lines of their own --------------------------------------------


IN_MEMORY = """
import sys, time, json, django
from django.conf import settings
db = lambda: {"ENGINE": sys.argv[1], "NAME": ":memory:", "OPTIONS": {"timeout": 0.5}}
settings.configure(DATABASES={"default": db(), "cache": db()}, INSTALLED_APPS=[])
django.setup()
from django.db import connections, transaction, OperationalError
for alias in ("default", "cache"):
    connections[alias].cursor().execute("create table t(v)")
try:
    with transaction.atomic("default"):
        connections["default"].cursor().execute("insert into t values (1)")
        connections["cache"].cursor().execute("insert into t values (2)")
    out = "ok"
except OperationalError as exc:
    out = repr(exc)
print("RESULT " + json.dumps(out))
"""


@pytest.mark.parametrize("engine", ["sqlitefair.django", "django.db.backends.sqlite3"])
def test_two_in_memory_databases_do_not_share_a_writer_line(tmp_path: Path, engine: str) -> None:
    """``NAME: ":memory:"`` names a new, private database per connection: keyed by the name, every
    in-memory database of the process would share one line, so a write to one inside an atomic
    block on another would wait for its own thread's turn and time out."""
    script = tmp_path / "mem.py"
    script.write_text(IN_MEMORY)
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, str(script), engine], capture_output=True, text=True, timeout=60, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr
    assert json.loads(lines[-1][len("RESULT ") :]) == "ok"
