"""A pool dropped without close() warns, like an unclosed file or sqlite3 connection; nothing else does."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest

import sqlitefair
import sqlitefair.aio

SRC = Path(__file__).resolve().parent.parent / "src"


def _pool_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, ResourceWarning) and "sqlitefair pool" in str(w.message)]


def _collect(caught: list[warnings.WarningMessage]) -> None:
    """gc.collect() until a pool's warning shows (for up to a second): a pool's turn keeper thread
    (the cross-process queue) may be looking at it this instant, and frees it a moment later."""
    gc.collect()
    deadline = time.monotonic() + 1.0
    while not _pool_warnings(caught) and time.monotonic() < deadline:
        time.sleep(0.01)
        gc.collect()


def test_a_pool_collected_unclosed_warns_with_its_path(db_path: Path, backend: str) -> None:
    pool = sqlitefair.connect(db_path, backend=backend)
    with pool.transaction() as conn:
        conn.execute("create table t(v)")
    with pool.read() as conn:
        conn.execute("select * from t").fetchall()
    with warnings.catch_warnings(record=True) as caught:  # on 3.13+ its sqlite3 connections warn too
        warnings.simplefilter("always")
        del pool, conn
        _collect(caught)
    (message,) = _pool_warnings(caught)
    assert message.startswith(f"unclosed sqlitefair pool for '{db_path}': call close()"), message


def test_an_unclosed_async_pool_warns(db_path: Path) -> None:
    async def use() -> None:
        apool = sqlitefair.aio.connect(db_path)
        async with apool.read() as conn:
            await conn.fetchall("select 1")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(use())
        _collect(caught)
    assert len(_pool_warnings(caught)) == 1


def test_closed_pools_do_not_warn(db_path: Path, tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pool = sqlitefair.connect(db_path)
        with pool.read():
            pass
        pool.close()
        with sqlitefair.connect(tmp_path / "other.db"):
            pass

        async def use() -> None:
            async with sqlitefair.aio.connect(tmp_path / "async.db") as apool:
                async with apool.read() as conn:
                    await conn.fetchall("select 1")

        asyncio.run(use())
        del pool
        gc.collect()
    assert _pool_warnings(caught) == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_no_warning_at_interpreter_exit_or_in_a_fork_child(tmp_path: Path) -> None:
    """A pool left open until the program ends, or dropped in a fork child (the parent's to close), is no leak."""
    script = textwrap.dedent(
        """
        import gc, os, sys, warnings
        import sqlitefair

        kept = sqlitefair.connect("kept.db")          # open until the interpreter exits
        with kept.transaction() as conn:
            conn.execute("create table t(v)")
        pid = os.fork()
        if pid == 0:                                  # the child drops its copy and exits normally
            del kept, conn
            gc.collect()
            sys.exit(0)
        _, status = os.waitpid(pid, 0)
        with warnings.catch_warnings(record=True) as caught:   # the warning itself is on
            warnings.simplefilter("always")
            dropped = sqlitefair.connect("dropped.db")
            del dropped
            gc.collect()
        print(status, sum("unclosed sqlitefair pool" in str(w.message) for w in caught))
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-W", "always::ResourceWarning", "-c", script],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0 1", result.stdout  # the child exited 0; dropping a pool warned
    assert "sqlitefair pool" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr
