"""KeyboardInterrupt deferral: a SIGINT never lands in the middle of the pool's bookkeeping.

Python raises ``KeyboardInterrupt`` at almost any bytecode of the main
thread, including the entry of a function and right after a call returned.
Between "the lock granted a permit" and "the checkout recorded it", or
between ``COMMIT`` and "the writer is handed on", no ``try``/``finally``
can close that window: the cleanup is itself Python code that the next
bytecode boundary can cut short.

So, as trio does (``trio._core._ki``), the pool's short critical code is
*protected*: its functions are registered with :func:`protected`, and while
Python's default SIGINT handler is installed, sqlitefair puts a wrapper in
front of it.  The wrapper looks at the interrupted frames: if the innermost
marked frame is protected, it does not raise but remembers the signal and
raises it at the caller's first call or return after the outermost
protected frame returned (a one-shot ``sys.setprofile`` hook), so the
``KeyboardInterrupt`` surfaces in the caller's code, where ``with`` blocks
and ``try`` statements handle it: a ``__enter__`` that acquired always has
its ``__exit__`` run.

Waiting is *interruptible* (:func:`interruptible`): a thread queued for the
writer or waiting out another process's lock gets its ``KeyboardInterrupt``
at once, and those wait functions are written to leave no trace (a granted
permit is passed on, the waiter leaves the queue).  A deferred interrupt is
also delivered as soon as protected code calls into an interruptible wait.

The handler is installed by the first pool created in the main thread, and
only when SIGINT still has Python's default handler: an application with its
own handler keeps it untouched (and then protection is off for SIGINT;
``signal_protection_active()`` tells).  Nothing here costs anything on the
hot path: the frames are looked at only when a signal arrives.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import CodeType, FrameType
from typing import Any, Callable, TypeVar

__all__ = ("protected", "interruptible", "install", "signal_protection_active", "raise_if_deferred")

F = TypeVar("F", bound=Callable[..., Any])

#: Code objects whose frames defer SIGINT, and those that take it at once.
_PROTECTED: set[CodeType] = set()
_INTERRUPTIBLE: set[CodeType] = set()

_install_lock = threading.Lock()
_installed: Callable[[int, FrameType | None], Any] | None = None
#: The signal that arrived during protected code, waiting for it to finish (main thread only),
#: and the profile function that the delivery hook replaced.
_deferred: list[int] = []
_replaced_profile: list[Any] = []
_main_ident = threading.main_thread().ident


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
        if current is not signal.default_int_handler:
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
    if _deferred and threading.get_ident() == _main_ident:
        _deferred.pop()
        sys.setprofile(_replaced_profile.pop() if _replaced_profile else None)
        raise KeyboardInterrupt


def _outermost_protected(frame: FrameType | None) -> FrameType | None:
    """The outermost protected frame below the innermost interruptible one, or None.

    Unmarked frames (comprehensions, lambdas, a user's ``on_connect`` hook) are
    transparent: what counts is the marked code they run in."""
    found: FrameType | None = None
    while frame is not None:
        code = frame.f_code
        if code in _INTERRUPTIBLE:
            return found
        if code in _PROTECTED:
            found = frame
        frame = frame.f_back
    return found


def _handler(signum: int, frame: FrameType | None) -> None:
    target = _outermost_protected(frame)
    if target is None:
        signal.default_int_handler(signum, frame)  # raises KeyboardInterrupt
        return
    if _deferred:  # one is already waiting for this protected run to end
        return
    _deferred.append(signum)
    _replaced_profile[:] = [sys.getprofile()]
    returned = False

    def deliver(frame: FrameType, event: str, arg: object) -> None:
        nonlocal returned
        if not _deferred:  # taken by raise_if_deferred()
            return
        if event == "call" and frame.f_code in _INTERRUPTIBLE:
            pass  # a wait inside the protected run: raise at its start, where its caller handles it
        elif not returned:
            returned = event == "return" and frame is target
            return
        # Raised at the first event after the protected run returned (a call or return in the caller),
        # never from the run's own return: a ``__enter__`` that acquired must not seem to have failed,
        # or its ``__exit__`` would never run.  A call event fires before the callee's first instruction.
        sys.setprofile(_replaced_profile.pop() if _replaced_profile else None)
        signal.default_int_handler(_deferred.pop(), frame)

    sys.setprofile(deliver)
