"""Ctrl-C that lands inside a native library's start-up.

Python raises ``KeyboardInterrupt`` at the next bytecode, and during a simulator start that bytecode is often inside
an extension module's import. There it does not stay a ``KeyboardInterrupt``: the import system reports it as the
cause of ``ImportError: initialization failed`` (mujoco, matplotlib's ft2font), ctypes as ``ArgumentError: argument 1:
KeyboardInterrupt`` (PyOpenGL's EGL set-up), a C++ module may abort the process, and a half-imported module fails
every later episode. Seen on 2 cores, sending SIGINT 0-1.5 s into a run. Two rules keep Ctrl-C a Ctrl-C:

* ``interrupts_deferred()``: a simulator start holds a SIGINT back and raises it as ``KeyboardInterrupt`` when the
  start ends (a second or two), so no import ever sees it;
* ``caused_by_interrupt(err)``: an exception whose chain holds a ``KeyboardInterrupt`` is the interrupt, never an
  episode's crash.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


def caused_by_interrupt(err: BaseException) -> bool:
    """Whether ``err`` or an exception it was raised from or while handling is a ``KeyboardInterrupt``."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def reraise_if_interrupt(err: BaseException) -> None:
    """Raise ``KeyboardInterrupt`` (from ``err``) when ``err`` is a Ctrl-C in disguise; otherwise return."""
    if caused_by_interrupt(err):
        raise KeyboardInterrupt from err


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Inside, a SIGINT is noted instead of raised; on leaving (normally or by an exception) it is raised as
    ``KeyboardInterrupt``. Only where Python's own Ctrl-C handler is installed, in the main thread: a spawned worker
    ignores SIGINT (its parent stops it) and other handlers are the caller's business."""
    in_main = threading.current_thread() is threading.main_thread()
    if not in_main or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    pending: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if pending:
            raise KeyboardInterrupt
