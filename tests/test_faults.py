"""Faults: disk full, file deleted or replaced, corrupt pages, a WAL left by a crash.

Each must give a clear error and leave the file no worse than it was.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import sys
import sqlite3
import time
from pathlib import Path

import pytest
from _helpers import tmpfs_mount
from conftest import require_backend

import sqlitefair
from sqlitefair import _defaults, _files


def integrity(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("pragma integrity_check").fetchone()[0]
    finally:
        conn.close()


def test_disk_full_rolls_back_and_the_pool_recovers(tmp_path: Path) -> None:
    folder = tmp_path / "small"
    with tmpfs_mount(folder, size="1m"):
        path = folder / "full.db"
        ballast = folder / "ballast"
        pool = sqlitefair.connect(path, pragmas={"mmap_size": 0})
        with pool.transaction() as conn:
            conn.execute("create table t(id integer primary key, blob)")
        blob = os.urandom(16 * 1024)
        ballast.write_bytes(b"\0" * 256 * 1024)
        committed = 0
        with pytest.raises(sqlite3.OperationalError, match="disk is full|disk I/O error") as info:
            for _ in range(200):
                with pool.transaction() as conn:
                    for _ in range(4):
                        conn.execute("insert into t(blob) values (?)", (blob,))
                committed += 4
        assert committed > 0
        assert not isinstance(info.value, sqlitefair.PoolTimeout)
        ballast.unlink()  # free some space: the pool carries on
        with pool.transaction() as conn:
            conn.execute("insert into t(blob) values (x'00')")
        with pool.read() as conn:  # the failed transaction left nothing behind
            assert conn.execute("select count(*) from t").fetchone()[0] == committed + 1
        pool.close()
        assert integrity(path) == "ok"


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_database_deleted_or_replaced_while_open_is_a_clear_error(tmp_path: Path, how: str) -> None:
    path = tmp_path / "app.db"
    pool = sqlitefair.connect(path)
    with pool.transaction() as conn:
        conn.execute("create table t(v)")
        conn.execute("insert into t values ('before')")
    if how == "deleted":
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    else:
        other = tmp_path / "other.db"
        sqlite3.connect(other).execute("create table elsewhere(v)").connection.close()
        os.replace(other, path)
    files = sorted(tmp_path.iterdir())
    contents = {f: f.read_bytes() for f in files if not f.name.endswith("-shm")}
    time.sleep(_defaults.FILE_CHECK_INTERVAL * 2)
    with pytest.raises(sqlitefair.OpenError, match=f"was {how}") as info:
        with pool.transaction() as conn:
            conn.execute("insert into t values ('lost?')")
    assert "create a new pool" in str(info.value)
    with pytest.raises(sqlitefair.OpenError, match=f"was {how}"):
        with pool.read():
            pass
    pool.close()
    # Nothing was created, and no file at these paths was written to.
    assert sorted(tmp_path.iterdir()) == files
    assert {f: f.read_bytes() for f in contents} == contents


def test_corrupt_page_is_a_clear_error_and_nothing_is_written(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.db"
    seed = sqlite3.connect(path)
    seed.execute("create table t(id integer primary key, v text)")
    seed.executemany("insert into t(v) values (?)", [("x" * 500,) for _ in range(200)])
    seed.commit()
    seed.close()
    page_size = 4096
    with open(path, "r+b") as f:  # scribble over a b-tree page in the middle of the table
        f.seek(page_size * 5)
        f.write(b"\xff" * page_size)
    before = path.read_bytes()
    pool = sqlitefair.connect(path, pragmas={"journal_mode": None})  # keep the file's own journal mode
    with pytest.raises(sqlite3.DatabaseError, match="malformed"):
        with pool.read() as conn:
            conn.execute("select count(*), sum(length(v)) from t").fetchone()
    with pytest.raises(sqlite3.DatabaseError, match="malformed"):
        with pool.transaction() as conn:
            conn.execute("update t set v = 'y'")
    # The writer is still usable for statements that do not touch the bad page.
    with pool.transaction() as conn:
        conn.execute("select 1").fetchone()
    pool.close()
    assert path.read_bytes() == before


def crash_after_commit(path: str) -> None:
    """Commit through a pool, then die without closing anything (the WAL stays behind)."""
    pool = sqlitefair.connect(path, pragmas={"wal_autocheckpoint": 0})
    with pool.transaction() as conn:
        conn.execute("insert into t values ('from the crashed process')")
    os._exit(0)


def test_wal_left_over_from_a_crash_is_recovered(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with sqlitefair.connect(path) as pool, pool.transaction() as conn:
        conn.execute("create table t(v)")
    process = multiprocessing.get_context("spawn").Process(target=crash_after_commit, args=(str(path),))
    process.start()
    process.join(30)
    assert process.exitcode == 0
    wal = Path(f"{path}-wal")
    assert wal.exists() and wal.stat().st_size > 0, "the crashed process should leave its WAL behind"
    saved = tmp_path / "copy"
    saved.mkdir()
    for suffix in ("", "-wal"):  # like after a power loss: no -shm, only the files on disk
        shutil.copy(f"{path}{suffix}", f"{saved / 'app.db'}{suffix}")
    for target in (path, saved / "app.db"):
        with sqlitefair.connect(target) as pool, pool.read() as conn:
            assert conn.execute("select v from t").fetchall() == [("from the crashed process",)]
        assert integrity(target) == "ok"


def test_read_only_database_file_is_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    with tmpfs_mount(folder) as make_read_only:
        path = folder / "app.db"
        with sqlitefair.connect(path) as pool, pool.transaction() as conn:
            conn.execute("create table t(v)")
        before = path.read_bytes()
        make_read_only()
        with pytest.raises(sqlitefair.OpenError, match="cannot open"):
            sqlitefair.connect(path)
        assert path.read_bytes() == before


# -- injected I/O errors (an apsw VFS shim) ----------------------------------


@pytest.mark.parametrize("fault", ["write", "sync", "read"])
def test_injected_io_error_fails_one_transaction_and_the_pool_recovers(tmp_path: Path, fault: str) -> None:
    """A VFS that fails every xWrite, xSync or xRead on demand: the statement that meets the
    fault raises, its transaction is rolled back, and once the fault is gone the same pool
    works and the file holds exactly the transactions that committed."""
    require_backend("apsw")
    import apsw

    class FaultyFile(apsw.VFSFile):
        def __init__(self, vfs: FaultyVFS, name: object, flags: list[int]) -> None:
            self.vfs = vfs
            super().__init__("", name, flags)  # "": the default VFS does the real work

        def xWrite(self, data: bytes, offset: int) -> None:
            if self.vfs.failing == "write":
                raise apsw.IOError("injected write error")
            super().xWrite(data, offset)

        def xSync(self, flags: int) -> None:
            if self.vfs.failing == "sync":
                raise apsw.IOError("injected fsync error")
            super().xSync(flags)

        def xRead(self, amount: int, offset: int) -> bytes:
            if self.vfs.failing == "read":
                raise apsw.IOError("injected read error")
            return super().xRead(amount, offset)

    class FaultyVFS(apsw.VFS):
        def __init__(self, name: str) -> None:
            self.failing: str | None = None
            super().__init__(name, "")

        def xOpen(self, name: object, flags: list[int]) -> FaultyFile:
            return FaultyFile(self, name, flags)

    vfs_name = f"faulty-{fault}"
    vfs = FaultyVFS(vfs_name)
    path = tmp_path / "io.db"
    # synchronous=FULL: every commit syncs the WAL, so an xSync fault meets the commit;
    # mmap_size=0: reads go through xRead.
    pragmas = {**_defaults.PRAGMAS, "synchronous": "FULL", "mmap_size": 0}
    pool = sqlitefair.connect(f"file:{path}?vfs={vfs_name}", backend="apsw", pragmas=pragmas)
    try:
        with pool.transaction() as conn:
            conn.execute("create table t(v)")
            conn.execute("insert into t values ('before')")
            conn.execute("create table other(v)")
            conn.execute("insert into other values (1)")
        with pool.read() as conn:  # a reader opened while healthy
            assert conn.execute("select count(*) from t").fetchone()[0] == 1
        vfs.failing = fault
        with pytest.raises(apsw.IOError, match="injected"):
            with pool.transaction() as conn:
                conn.execute("insert into t values ('during')")
                if fault == "read":
                    conn.release_memory()  # drop clean cached pages: reading them goes to the file
                    conn.execute("select * from other").fetchall()
        vfs.failing = None
        with pool.transaction() as conn:
            conn.execute("insert into t values ('after')")
        with pool.read() as conn:
            assert [row[0] for row in conn.execute("select v from t")] == ["before", "after"]
    finally:
        vfs.failing = None
        pool.close()
        vfs.unregister()
    assert integrity(path) == "ok"
    conn = sqlite3.connect(path)
    try:
        assert [row[0] for row in conn.execute("select v from t")] == ["before", "after"]
    finally:
        conn.close()


# -- the per-commit file check: inotify where there is one, fstat elsewhere ----------------------


@pytest.fixture(params=["inotify", "fstat"])
def watch(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which per-commit file check the pool uses (``fstat`` is the fallback where inotify is missing)."""
    if request.param == "inotify" and not sys.platform.startswith("linux"):
        pytest.skip("inotify is Linux-only")
    monkeypatch.setattr(_files, "USE_INOTIFY", request.param == "inotify")
    # The periodic look at the path far away: only the per-commit check can catch anything here.
    monkeypatch.setattr(_defaults, "FILE_CHECK_INTERVAL", 3600.0)
    return str(request.param)


def _watched_pool(path: Path, watch: str) -> sqlitefair.Pool:
    pool = sqlitefair.connect(path)
    assert (pool._files._inotify_fd is not None) == (watch == "inotify"), "the pool did not pick the expected check"
    with pool.transaction() as conn:
        conn.execute("create table t(v)")
        conn.execute("insert into t values ('before')")
    return pool


@pytest.mark.parametrize("how", ["deleted", "replaced", "moved"])
def test_no_commit_is_acknowledged_after_the_file_changed(tmp_path: Path, watch: str, how: str) -> None:
    """Every transaction after the change is refused at once: none lands in a file nobody reads."""
    if watch == "fstat" and how == "moved":
        pytest.skip("the fstat fallback sees a move (the file still has a name) only at the periodic path check")
    path = tmp_path / "app.db"
    pool = _watched_pool(path, watch)
    if how == "deleted":
        path.unlink()
    elif how == "replaced":
        other = tmp_path / "other.db"
        sqlite3.connect(other).execute("create table elsewhere(v)").connection.close()
        os.replace(other, path)
    else:
        path.rename(tmp_path / "moved.db")
    outcomes = []
    for i in range(50):  # as fast as possible: no grace period in which a write may still go through
        try:
            with pool.transaction() as conn:
                conn.execute("insert into t values (?)", (i,))
        except sqlitefair.OpenError:
            outcomes.append("refused")
        else:
            outcomes.append("committed")
    pool.close()
    assert outcomes == ["refused"] * 50, f"{outcomes.count('committed')} of 50 commits acknowledged after the file was {how}"


def test_changes_that_keep_the_file_do_not_stop_the_pool(tmp_path: Path, watch: str) -> None:
    """chmod, touch, a second hard link made and removed: the file is still the one the path names."""
    path = tmp_path / "app.db"
    pool = _watched_pool(path, watch)
    try:
        changes = [
            lambda: os.chmod(path, 0o640),
            lambda: os.utime(path, (1, 1)),
            lambda: os.link(path, tmp_path / "second-name.db"),
            lambda: os.unlink(tmp_path / "second-name.db"),
        ]
        for i, change in enumerate(changes):
            change()
            with pool.transaction() as conn:
                conn.execute("insert into t values (?)", (i,))
        assert not pool._files.changed(0), "the events of harmless changes were not forgotten"
        with pool.read() as conn:
            assert conn.execute("select count(*) from t").fetchone()[0] == 1 + len(changes)
    finally:
        pool.close()


def test_a_renamed_parent_folder_is_caught_by_the_periodic_look(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither inotify on the file nor its link count sees the folder renamed; the path look does."""
    monkeypatch.setattr(_defaults, "FILE_CHECK_INTERVAL", 0.05)
    folder = tmp_path / "data"
    folder.mkdir()
    pool = sqlitefair.connect(folder / "app.db")
    with pool.transaction() as conn:
        conn.execute("create table t(v)")
    folder.rename(tmp_path / "data-moved")
    time.sleep(0.1)
    with pytest.raises(sqlitefair.OpenError, match="deleted or moved away"):
        with pool.transaction() as conn:
            conn.execute("insert into t values (1)")
    pool.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the inotify watch is Linux-only")
def test_a_pool_dropped_unclosed_gives_its_file_descriptors_back(tmp_path: Path) -> None:
    """Found by review: the inotify descriptor (a per-user resource) stayed open for good."""
    import gc
    import warnings

    pool = sqlitefair.connect(tmp_path / "app.db")
    fds = [pool._files._fd, pool._files._inotify_fd]
    assert None not in fds
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # the pool says it was not closed
        del pool
        gc.collect()
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)  # type: ignore[arg-type]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the inotify watch is Linux-only")
def test_close_does_not_close_the_descriptors_under_a_running_file_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by review: a close() that timed out waiting for the writer closed the inotify descriptor
    while the writer's commit was checking the file; its number, reused by another open, was then
    read (and its data swallowed). close() must wait for the check."""
    import threading
    from time import monotonic

    pool = sqlitefair.connect(tmp_path / "app.db")
    files = pool._files
    file_fd, inotify_fd = files._fd, files._inotify_fd
    seen: list[bool] = []
    closer = threading.Thread(target=files.close)
    real_fstat = os.fstat

    def is_open(fd: int) -> bool:
        try:
            real_fstat(fd)
        except OSError:
            return False
        return True

    def fstat_during_close(fd: int, *args: object, **kwargs: object) -> os.stat_result:
        if fd == file_fd and not closer.is_alive() and not seen:
            closer.start()  # close() now, while the check is running
            closer.join(0.3)
            seen.append(is_open(inotify_fd))  # type: ignore[arg-type]
        return real_fstat(fd, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "fstat", fstat_during_close)
    files.check(monotonic())
    monkeypatch.setattr(os, "fstat", real_fstat)
    closer.join(5)
    pool.close()
    assert seen == [True], "close() closed the descriptors while the check was using them"
