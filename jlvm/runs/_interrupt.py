"""Ctrl-C and SIGTERM that stop a run between steps, never in the middle of one.

Python raises KeyboardInterrupt wherever the signal lands: inside an import, inside a
callback that XLA runs from C++ (where it is swallowed, or aborts the process), halfway
through writing a file. Within ``deferred()`` the first SIGINT or SIGTERM only records a
request; the training and evaluation loops call ``check()`` between chunks of steps, where
stopping is safe, and it raises ``Interrupted`` there. A second signal raises at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from jlvm.runs._config import RunError

_requested: list[str] = []  # the signal received, while deferred() is active
_active: list[bool] = []


class Interrupted(RunError):
    """The run was stopped by a signal at a safe point; the message says what is kept."""


def _handler(number, frame) -> None:
    if _requested:  # asked twice: now
        raise KeyboardInterrupt
    _requested.append(signal.Signals(number).name)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM request a stop at the next ``check()``.
    Only in the main thread (where Python delivers signals); elsewhere it does nothing."""
    if threading.current_thread() is not threading.main_thread() or _active:
        yield
        return
    previous = {number: signal.signal(number, _handler)
                for number in (signal.SIGINT, signal.SIGTERM)}
    _active.append(True)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        _active.clear()
        _requested.clear()


def requested() -> str | None:
    """The name of the signal that asked to stop, or None."""
    return _requested[0] if _requested else None


def check(what: str = "") -> None:
    """Raises ``Interrupted`` if a stop was requested; ``what`` says what is kept."""
    if _requested:
        raise Interrupted(f"stopped by {_requested[0]}" + (f"; {what}" if what else "."))
