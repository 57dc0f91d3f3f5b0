"""os.fork() with the pool in use: the child gets a clear error or a working pool, never lost or phantom commits.

SQLite keeps its lock bookkeeping per process, keyed by the file: connections
copied into a fork child count as the parent's holdings there.  These tests
fork for real (the child reports through its exit code and a pipe) and check
the database from the parent afterwards.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
import warnings
from pathlib import Path
from typing import Callable

import pytest

import sqlitefair
from sqlitefair import _defaults

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _fork(child: Callable[[], str]) -> str:
    """Run ``child()`` in a fork; return what it returned (or the error it raised), as text."""
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork() of a multi-threaded process
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 0
        try:
            text = child()
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            text, code = f"{type(exc).__name__}: {exc}", 1
        os.write(write_end, text.encode()[:60000])
        os._exit(code)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    return f"exit {os.waitstatus_to_exitcode(status)}: " + b"".join(chunks).decode()


def _rows(path: Path) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("pragma integrity_check").fetchone() == ("ok",)
        return conn.execute("select v from t order by rowid").fetchall()
    finally:
        conn.close()


def _pool(path: Path) -> sqlitefair.Pool:
    pool = sqlitefair.connect(path, timeout=2)
    with pool.transaction() as conn:
        conn.execute("create table t(v)")
    return pool


def test_fork_while_another_thread_writes_gives_the_child_a_clear_error(db_path: Path) -> None:
    """Old: the child's transaction() waited its timeout out on a lock it could never get."""
    pool = _pool(db_path)
    inside, release = threading.Event(), threading.Event()

    def writer() -> None:
        with pool.transaction() as conn:
            conn.execute("insert into t values ('parent')")
            inside.set()
            release.wait(10)

    t = threading.Thread(target=writer)
    t.start()
    assert inside.wait(10)

    def child() -> str:
        outcomes = []
        for make in (pool.transaction, pool.read):
            try:
                with make(timeout=0.5):
                    outcomes.append(f"{make.__name__}: entered")
            except sqlitefair.SqlitefairError as exc:
                outcomes.append(f"{make.__name__}: {type(exc).__name__}: {exc}")
        return "\n".join(outcomes)

    try:
        report = _fork(child)
    finally:
        release.set()
        t.join(10)
    assert report.startswith("exit 0"), report
    assert "transaction: SqlitefairError: this process was forked while a thread of its parent" in report, report
    assert "read: SqlitefairError: this process was forked" in report, report
    assert "PoolTimeout" not in report
    with pool.transaction() as conn:  # the parent goes on as if nothing happened
        conn.execute("insert into t values ('after')")
    pool.close()
    assert _rows(db_path) == [("parent",), ("after",)]


class _LeaveBlock(Exception):
    pass


def test_the_child_leaving_a_block_begun_before_the_fork_commits_nothing(db_path: Path) -> None:
    """The child runs the end of a block that began in the parent: nothing may be committed there."""
    pool = _pool(db_path)
    outcome: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            with pool.transaction() as conn:
                conn.executemany("insert into t values (?)", [(f"row {i}",) for i in range(50)])
                pid = os.fork()
                if pid == 0:  # pragma: no cover - the child leaves the block normally
                    outcome.append("child")
                else:
                    outcome.append("parent")
                    raise _LeaveBlock  # the parent rolls back
        except _LeaveBlock:
            pass
        except sqlitefair.SqlitefairError as exc:
            if pid == 0:  # pragma: no cover
                os._exit(0 if "began before os.fork()" in str(exc) else 3)
            raise
    if pid == 0:  # pragma: no cover - reaching here means the child's exit reported success
        os._exit(2)
    _, status = os.waitpid(pid, 0)
    pool.close()
    assert _rows(db_path) == [], "the child's exit of the block committed the parent's transaction"
    assert os.waitstatus_to_exitcode(status) == 0, f"child exit code {os.waitstatus_to_exitcode(status)} (2: its block exit reported success)"


def test_idle_fork_then_parent_close_loses_no_commit_of_the_child(db_path: Path) -> None:
    """Old: the child's connections took no real locks (the parent's copies hid them), so the parent's
    close() checkpointed and deleted the WAL under the child, and the child's next commit was lost."""
    pool = _pool(db_path)
    with pool.transaction() as conn:
        conn.execute("insert into t values ('parent')")
    with pool.read() as conn:  # the parent has a reader open too
        conn.execute("select count(*) from t").fetchone()
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()

    def child() -> str:
        with pool.transaction() as conn:
            conn.execute("insert into t values ('child 1')")
        os.write(ready_w, b"1")
        os.read(go_r, 1)  # wait until the parent closed its pool
        with pool.transaction() as conn:
            conn.execute("insert into t values ('child 2')")
        return "ok"

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover
        code = 0
        try:
            child()
        except BaseException:  # noqa: BLE001
            code = 1
        os._exit(code)
    assert os.read(ready_r, 1) == b"1"
    pool.close()  # checkpoints and may delete the WAL if nobody else holds the file
    os.write(go_w, b"1")
    _, status = os.waitpid(pid, 0)
    for fd in (ready_r, ready_w, go_r, go_w):
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0
    assert _rows(db_path) == [("parent",), ("child 1",), ("child 2",)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the inotify watch is Linux-only")
def test_a_fork_child_watches_the_file_with_a_queue_of_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A child sharing its parent's inotify queue would miss a deletion the parent's check drained."""
    monkeypatch.setattr(_defaults, "FILE_CHECK_INTERVAL", 3600.0)  # only the per-commit check can catch it
    path = tmp_path / "app.db"
    pool = _pool(path)
    assert pool._files._inotify_fd is not None
    child_ready_r, child_ready_w = os.pipe()
    go_r, go_w = os.pipe()
    result_r, result_w = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            with pool.transaction() as conn:  # the child's first commit (it looks at the path once)
                conn.execute("insert into t values ('child-1')")
            os.write(child_ready_w, b"x")
            os.read(go_r, 1)  # meanwhile the parent deleted the file and its own check saw it
            try:
                with pool.transaction() as conn:
                    conn.execute("insert into t values ('child-2')")
                text = "committed"
            except sqlitefair.OpenError:
                text = "refused"
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            text = f"{type(exc).__name__}: {exc}"
        os.write(result_w, text.encode())
        os._exit(0)
    try:
        assert os.read(child_ready_r, 1) == b"x"
        path.unlink()
        with pytest.raises(sqlitefair.OpenError):
            with pool.transaction() as conn:
                conn.execute("insert into t values ('parent')")
        os.write(go_w, b"x")
        result = os.read(result_r, 65536).decode()
    finally:
        os.waitpid(pid, 0)
        pool.close()
    assert result == "refused", f"the child's commit after the deletion: {result}"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the inotify watch is Linux-only")
def test_a_fork_child_takes_an_inotify_instance_only_when_it_writes(tmp_path: Path) -> None:
    """Found by review: every fork child took one in the at-fork handler, idle or not (a per-user limit)."""
    pool = _pool(tmp_path / "app.db")
    try:

        def child() -> str:
            before = pool._files._inotify_fd
            with pool.transaction() as conn:
                conn.execute("insert into t values ('child')")
            return f"{before} {pool._files._inotify_fd is not None}"

        assert _fork(child) == "exit 0: None True"
    finally:
        pool.close()
