"""SIGINT, SIGTERM and SIGHUP as one exception, raised only where unwinding is safe.

Python runs a signal handler between any two bytecodes of the main thread, so an exception
raised from it can land anywhere: inside pyroute2's asyncio loop (a traceback from a task
nobody awaits), inside a weakref callback or ``__del__`` (printed as "Exception ignored"
and swallowed: the Ctrl-C is lost), or between creating a network namespace and recording
it (a leaked namespace). While ``handled()`` is active the handler records the first
signal and raises ``Interrupted`` at once only outside ``critical()`` sections; inside
one it raises when the outermost section ends, and ``check()`` raises at points a long
section chooses. A recorded signal stays pending until the outermost ``handled()`` ends,
which raises it if nothing did: a signal is never lost. Later signals add nothing (the
first is already unwinding the stack towards the cleanup), unless the first one's
exception was swallowed: raised inside a weakref callback or ``__del__`` (code the garbage
collector runs at any moment), Python reports it through ``sys.unraisablehook``, which
drops it silently here; the signal stays pending for the next ``check()``, section end or
the end of ``handled()``, and the next signal raises again.

Only the main thread takes part (Python delivers signals there); elsewhere these are
no-ops. A forked child that inherited the handler (pyroute2 forks helpers) exits at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """A signal asked the run to stop. ``exit_code``: the shell's convention, 128 + signal
    number (130 for SIGINT, 143 for SIGTERM)."""

    def __init__(self, signum: int, during: str | None = None):
        self.signum = signum
        self.during = during
        name = signal.Signals(signum).name
        super().__init__(f"{name} during {during}" if during else name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class _State:
    def __init__(self) -> None:
        self.owner = os.getpid()
        self.users = 0  # nested handled() blocks
        self.saved: dict[int, Any] = {}
        self.depth = 0  # open critical sections
        self.section: str | None = None  # the outermost open section's name
        self.pending: int | None = None
        self.during: str | None = None  # the section the signal arrived in
        self.swallowed = False  # the pending signal's exception died in a callback
        self.unraisable: Any = None  # sys.unraisablehook before handled()


_S = _State()


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _handler(signum: int, frame: object) -> None:
    if os.getpid() != _S.owner:  # a forked helper that inherited the handler: just die
        os._exit(128 + signum)
    if _S.pending is not None and not _S.swallowed:
        return  # the first signal is already unwinding the stack
    if _S.pending is None:
        _S.pending = signum
        _S.during = _S.section
    _S.swallowed = False
    if _S.depth == 0:
        raise Interrupted(_S.pending)


def _unraisable(info: Any) -> None:
    """A signal's exception raised where Python cannot propagate it (a weakref callback,
    ``__del__``): keep the signal pending, print nothing."""
    if isinstance(info.exc_value, Interrupted) and _S.pending is not None:
        _S.swallowed = True
        return
    (_S.unraisable or sys.__unraisablehook__)(info)


def pending() -> int | None:
    """The signal received and not yet acted on by the outermost ``handled()``."""
    return _S.pending


@contextlib.contextmanager
def handled(*, then: Any = None) -> Iterator[None]:
    """Route SIGINT, SIGTERM and SIGHUP through the recording handler while the block
    runs (nested blocks share one installation; the outermost restores what was there,
    or installs ``then`` for all three, and raises a signal still pending).

    A command about to exit passes ``then=signal.SIG_DFL``: a signal after the block kills
    the process the default way (status 128 + its number) instead of arriving while
    Python finalizes, where its handler never runs and the exit status would be 0."""
    if not _main_thread():
        yield
        return
    if _S.users == 0:
        _S.owner = os.getpid()
        _S.unraisable = sys.unraisablehook
        sys.unraisablehook = _unraisable
        for sig in SIGNALS:
            with contextlib.suppress(ValueError, OSError):
                _S.saved[sig] = signal.signal(sig, _handler)
    _S.users += 1
    propagating: BaseException | None = None
    try:
        yield
    except BaseException as exc:
        propagating = exc
        raise
    finally:
        _S.users -= 1
        if _S.users == 0:
            # first the handlers after the block, then the look at what is pending: a
            # signal in between is either recorded or meets the new handler
            for which, old in _S.saved.items():
                signal.signal(which, old if then is None else then)
            _S.saved.clear()
            sys.unraisablehook = _S.unraisable or sys.__unraisablehook__
            signum, during = _S.pending, _S.during
            _S.pending = _S.during = None
            _S.swallowed = False
            if signum is not None and not isinstance(propagating, Interrupted):
                raise Interrupted(signum, during)


def acquire() -> bool:
    """``handled()`` entered by hand (an object whose lifetime is not one block); False,
    and nothing to release, outside the main thread."""
    if not _main_thread():
        return False
    cm = handled()
    cm.__enter__()
    _STACK.append(cm)
    return True


def release() -> None:
    """Leave an ``acquire()`` that returned True (raises a pending signal when it is the
    last). The entries are interchangeable: each only counts one user."""
    if _STACK and _main_thread():
        _STACK.pop().__exit__(None, None, None)


_STACK: list[contextlib.AbstractContextManager[None]] = []


@contextlib.contextmanager
def critical(name: str) -> Iterator[None]:
    """A section a signal must not cut short: the signal waits for its end (or a
    ``check()`` inside it)."""
    if not _main_thread():
        yield
        return
    _S.depth += 1
    if _S.depth == 1:
        _S.section = name
    try:
        yield
    except Exception as exc:
        # a failure while a signal was pending is most likely its doing (a helper process
        # killed by the same Ctrl-C): report the signal
        _leave()
        if _S.depth == 0 and _S.pending is not None:
            raise Interrupted(_S.pending, _S.during) from exc
        raise
    except BaseException:
        _leave()
        raise
    _leave()
    if _S.depth == 0 and _S.pending is not None:
        raise Interrupted(_S.pending, _S.during)


def _leave() -> None:
    _S.depth -= 1
    if _S.depth == 0:
        _S.section = None


def check() -> None:
    """Raise a pending signal here (a safe point inside a critical section)."""
    if _S.pending is not None and _main_thread():
        raise Interrupted(_S.pending, _S.during)


__all__ = ["Interrupted", "acquire", "check", "critical", "handled", "pending", "release"]
