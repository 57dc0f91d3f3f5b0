"""Helpers for tests: real threads with time limits, polling with a deadline, small file systems."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator

import pytest

JOIN_TIMEOUT = 30.0


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``predicate`` until true; fail the test (AssertionError) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.001)


def queued(lock: Any) -> int:
    """Waiters in ``lock``'s FIFO queue.  (``statistics().waiting`` also counts threads that wait at
    a barging FairLock's baton on a free-threaded build, whose place is fixed only when they queue.)"""
    queue = getattr(lock, "_queue", None)
    return len(queue) if queue is not None else int(lock.statistics().waiting)


def run_in_fork(child: Callable[[], str]) -> str:
    """Run ``child`` in a forked process and return the text it returned.

    The child leaves with ``os._exit``, running none of the parent's clean-up;
    if it raises, this raises AssertionError with the child's error.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.write(write_fd, child().encode())
            status = 0
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            os.write(write_fd, f"error {exc!r}".encode())
        finally:
            os._exit(status)
    os.close(write_fd)
    _, status = os.waitpid(pid, 0)
    report = os.read(read_fd, 4096).decode()
    os.close(read_fd)
    if status != 0:
        raise AssertionError(f"the fork child failed: {report}")
    return report


class Worker(threading.Thread):
    """A thread that records its result or exception, for assertions after join()."""

    def __init__(self, target: Callable[..., Any], *args: Any, name: str | None = None) -> None:
        super().__init__(name=name, daemon=True)
        self._target_fn = target
        self._args = args
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self._target_fn(*self._args)
        except BaseException as exc:  # noqa: BLE001 - reported by finish()
            self.error = exc

    def finish(self, timeout: float = JOIN_TIMEOUT) -> Any:
        self.join(timeout)
        if self.is_alive():
            raise AssertionError(f"thread {self.name} still running after {timeout} s")
        if self.error is not None:
            raise self.error
        return self.result


@contextlib.contextmanager
def held_by_another_thread(block: ContextManager[Any]) -> Iterator[tuple[Any, Callable[[], None]]]:
    """Enter ``block`` (``pool.read()``, ``pool.transaction()``) in a new thread and stay inside it.

    Yields what the block returned and a function that makes the thread leave the block; it
    leaves at the end of the ``with`` anyway, and is joined.
    """
    entered, leave = threading.Event(), threading.Event()
    returned: list[Any] = []

    def hold() -> None:
        with block as value:
            returned.append(value)
            entered.set()
            leave.wait(JOIN_TIMEOUT)

    thread = Worker(hold, name="holder")
    thread.start()
    try:
        if not entered.wait(JOIN_TIMEOUT):
            thread.finish(0)  # raises what the thread raised
            raise AssertionError("the other thread did not enter the block")
        yield returned[0], leave.set
    finally:
        leave.set()
        thread.finish()


@contextlib.contextmanager
def tmpfs_mount(folder: Path, size: str = "4m") -> Iterator[Callable[[], None]]:
    """Mount a small tmpfs on ``folder``; yields a function that remounts it read-only.

    Needs root and a kernel that allows mounts here; skips the test otherwise.
    Unmounted at exit.  Used where permissions alone cannot stop root.
    """
    folder.mkdir(exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small file system")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")

    def make_read_only() -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)

    try:
        yield make_read_only
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
