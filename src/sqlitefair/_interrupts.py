"""KeyboardInterrupt deferral: a SIGINT never lands in the middle of the pool's bookkeeping.

Python raises ``KeyboardInterrupt`` at almost any bytecode of the main
thread, including the entry of a function and right after a call returned.
Between "the lock granted a permit" and "the checkout recorded it", or
between ``COMMIT`` and "the writer is handed on", no ``try``/``finally``
can close that window: the cleanup is itself Python code that the next
bytecode boundary can cut short.

So, as trio does (``trio._core._ki``), the pool's short critical code is
*protected*: its functions are registered with :func:`protected`, and while
Python's default SIGINT handler is installed, sqlitefair puts a handler in
front of it.  The handler looks at the interrupted frames: if the innermost
marked frame is protected, it does not raise but remembers the signal, and a
resender thread sends it to the main thread again about a millisecond later
(``signal.pthread_kill``).  That second arrival is handled like any real
signal, at the main thread's next natural check: deferred again if it is
still in protected code, raised otherwise.  Nothing is raised from a hook,
so a deferred interrupt can never skip a call that a real signal could not
skip either (the next ``__exit__``, a lock's release).

Waiting is *interruptible* (:func:`interruptible`): a thread queued for the
writer, waiting out another process's lock, or running the user's
``on_connect`` hook gets its ``KeyboardInterrupt`` at once, and those
functions are written to leave no trace (a granted permit is passed on, the
waiter leaves the queue).  :func:`raise_if_deferred` delivers a waiting
interrupt at a point of the pool's choosing (just before ``COMMIT``, so the
block rolls back).

The handler is installed by the first pool created in the main thread, and
only when SIGINT still has Python's default handler: an application with its
own handler keeps it untouched (and then protection is off for SIGINT;
``signal_protection_active()`` tells).  Nothing here costs anything on the
hot path: the frames are looked at only when a signal arrives.
"""

from __future__ import annotations

import _thread
import atexit
import os
import signal
import threading
import time
from types import CodeType, FrameType
from typing import Any, Callable, TypeVar

__all__ = ("protected", "interruptible", "install", "signal_protection_active", "raise_if_deferred")

F = TypeVar("F", bound=Callable[..., Any])

#: Code objects whose frames defer SIGINT, and those that take it at once.
_PROTECTED: set[CodeType] = set()
_INTERRUPTIBLE: set[CodeType] = set()

#: Seconds before a deferred signal is sent to the main thread again.
RESEND_DELAY = 0.001
#: A resend not seen by the handler within this many seconds is forgotten (a new SIGINT is then real).
RESEND_WINDOW = 0.05

_install_lock = threading.Lock()
_installed: Callable[[int, FrameType | None], Any] | None = None
_main_ident = threading.main_thread().ident or 0
# The state below is written by the main thread (the handler, raise_if_deferred) and read by the
# resender thread; each access is a single atomic store or load.
#: The signal deferred until protected code finishes ([] when none).
_deferred: list[int] = []
#: Bumped whenever a deferred signal is delivered or dropped: a resend armed before it is stale.
_generation = 0
#: Until when (time.monotonic()) an arriving SIGINT is the resender's, not a new one from outside.
_resend_until = 0.0
#: The resender thread waits on this lock; the handler releases it (a C call: it never blocks).
_wake = _thread.allocate_lock()
_wake.acquire()
_resender_pid = 0


def protected(fn: F) -> F:
    """Mark ``fn``: a SIGINT arriving while it runs (and nothing interruptible runs inside it) is deferred."""
    _PROTECTED.add(fn.__code__)
    return fn


def interruptible(fn: F) -> F:
    """Mark ``fn`` (a wait): a SIGINT arriving while it runs raises at once, even inside protected code."""
    _INTERRUPTIBLE.add(fn.__code__)
    return fn


def signal_protection_active() -> bool:
    """Whether sqlitefair's deferring handler is the current SIGINT handler."""
    return _installed is not None and signal.getsignal(signal.SIGINT) is _installed


def install() -> bool:
    """Put the deferring handler in front of Python's default SIGINT handler (main thread only).

    Returns whether protection is active.  Leaves any other handler alone.
    """
    global _installed
    if threading.current_thread() is not threading.main_thread():
        return signal_protection_active()
    with _install_lock:
        current = signal.getsignal(signal.SIGINT)
        if _installed is not None and current is _installed:
            return True
        if current is not signal.default_int_handler or not _start_resender():
            return False
        _installed = _handler
        signal.signal(signal.SIGINT, _handler)
        return True


def raise_if_deferred() -> None:
    """Raise the deferred KeyboardInterrupt now, if one waits (main thread only).

    Called just before the point of no return (``COMMIT``): a Ctrl-C that
    arrived while the pool was ending a block rolls the block back instead
    of surfacing after it committed.
    """
    global _generation
    if _deferred and _thread.get_ident() == _main_ident:
        _deferred.clear()
        _generation += 1
        raise KeyboardInterrupt


#: Where a KeyboardInterrupt would be swallowed ("Exception ignored in ..."): weakref callbacks,
#: which the garbage collector runs at any bytecode (a thread object freed, a WeakSet entry
#: removed).  A signal landing there is deferred too, so that it is raised where it counts.
_SWALLOWING_FILES = ("weakref.py", "_weakrefset.py")


def _is_protected(frame: FrameType | None) -> bool:
    """Whether the innermost marked frame is protected (unmarked frames are transparent), or the
    interrupted frame is one whose exceptions the interpreter would swallow."""
    if frame is not None and frame.f_code.co_filename.endswith(_SWALLOWING_FILES):
        return True
    while frame is not None:
        code = frame.f_code
        if code in _INTERRUPTIBLE:
            return False
        if code in _PROTECTED:
            return True
        frame = frame.f_back
    return False


def _handler(signum: int, frame: FrameType | None) -> None:
    global _generation, _resend_until
    resend = time.monotonic() < _resend_until
    _resend_until = 0.0
    if resend and not _deferred:
        return  # a stale resend: the deferred interrupt was delivered meanwhile
    if not _is_protected(frame):
        _deferred.clear()
        _generation += 1
        signal.default_int_handler(signum, frame)  # raises KeyboardInterrupt
        return
    if not _deferred:
        _deferred.append(signum)
    try:
        _wake.release()  # the resender sends it again shortly (already awake: it will see this one too)
    except RuntimeError:
        pass


def _start_resender() -> bool:
    """Start the resender thread of this process (once); False if no thread can be started."""
    global _resender_pid
    if _resender_pid == os.getpid():
        return True
    try:
        threading.Thread(target=_resender, name="sqlitefair-sigint-resender", daemon=True).start()
    except RuntimeError:  # out of threads: no deferral, Python's own handling stays
        return False
    _resender_pid = os.getpid()
    return True


def _resender() -> None:
    """Send a deferred SIGINT to the main thread again until the handler takes it (or it is dropped)."""
    global _resend_until, _generation
    while True:
        _wake.acquire()
        while _deferred:
            generation = _generation
            time.sleep(RESEND_DELAY)
            if generation != _generation or not _deferred:
                break
            if signal.getsignal(signal.SIGINT) is not _installed:  # the application replaced the handler
                _deferred.clear()
                _generation += 1
                break
            _resend_until = time.monotonic() + RESEND_WINDOW
            try:
                signal.pthread_kill(_main_ident, _deferred[0] if _deferred else signal.SIGINT)
            except (AttributeError, OSError, IndexError):  # no pthread_kill (Windows), or the main thread is gone
                _thread.interrupt_main()


def _after_fork_in_child() -> None:
    """A fork child has none of the parent's threads, and its own main thread: start afresh."""
    global _generation, _resend_until, _main_ident, _wake, _resender_pid
    _deferred.clear()
    _generation += 1
    _resend_until = 0.0
    _main_ident = threading.main_thread().ident or 0
    _wake = _thread.allocate_lock()
    _wake.acquire()
    _resender_pid = 0
    if _installed is not None and signal.getsignal(signal.SIGINT) is _installed:
        if not _start_resender():
            signal.signal(signal.SIGINT, signal.default_int_handler)


def _at_exit() -> None:
    """An interrupt deferred in the program's last moments is not lost: exit as Ctrl-C would."""
    if _deferred and signal.getsignal(signal.SIGINT) is _installed:
        _deferred.clear()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.raise_signal(signal.SIGINT)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_at_exit)
