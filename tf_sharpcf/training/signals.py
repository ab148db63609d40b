"""SIGTERM and SIGINT as a request to stop at the next safe point.

Preemptible VMs, Kubernetes and Slurm send SIGTERM and kill the process a
grace period later (30 s by default on Kubernetes); Ctrl-C sends SIGINT.
While a command runs, `exits.run` holds `caught()`; then, inside a
`deferring()` block (`train_and_evaluate`, a search, an experiment), both
signals come here instead of ending the process, and only record a request
(`requested()`): training looks at it after every chunk of batches
and stops there with a checkpoint (`preemption.StopOnSignal`), the tuner and
the experiment runner look at it between trials and runs
(`stop_if_requested`); each raises `errors.Stopped` (exit status 143 for
SIGTERM, 130 for SIGINT).

Outside such a block the handlers are the process's own, so a signal acts
as it would without us: SIGTERM ends the process (even one blocked in
TensorFlow, a cluster task serving), SIGINT raises KeyboardInterrupt. So does
a second SIGINT while a stop is pending (Ctrl-C twice stops at once). A repeated SIGTERM is ignored: a
launcher may forward the one it got to the whole process group.

TensorFlow-free (the command lines load it before TensorFlow). Only the main
thread can install handlers; in any other `caught()` changes nothing, and
`request()` stands in for a signal anywhere (tests, embedding applications).
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Dict, Iterator, Optional

from tf_sharpcf.errors import Stopped

SIGNALS = (signal.SIGTERM, signal.SIGINT)

_caught = False                       # inside `caught()`
_previous: Dict[int, object] = {}     # signal -> its handler before the outermost `deferring()`
_deferring = 0                        # open `deferring()` blocks
_requested: Optional[int] = None


def name(signum: int) -> str:
    """'SIGTERM', 'SIGINT', ..."""
    return signal.Signals(signum).name


def requested() -> Optional[int]:
    """The signal that asked the process to stop (its number), or None."""
    return _requested


def request(signum: int = signal.SIGTERM) -> None:
    """Asks the work in the current `deferring()` block to stop at its next
    safe point, exactly as the signal `signum` does under `caught()`."""
    global _requested
    if _requested is None:
        _requested = int(signum)


def stop_if_requested(where: str, hint: str = "") -> None:
    """Raises `Stopped(signal, where, hint)` when a stop was requested."""
    if _requested is not None:
        raise Stopped(_requested, where, hint)


def _handle(signum, frame) -> None:
    if _requested is None:
        request(signum)
    elif signum == signal.SIGINT:                       # Ctrl-C again: stop at once
        previous = _previous.get(signum)
        if callable(previous):
            previous(signum, frame)                     # Python's: KeyboardInterrupt
        elif previous != signal.SIG_IGN:
            signal.signal(signum, signal.SIG_DFL)       # end the process as the signal does
            os.kill(os.getpid(), signum)
    # a repeated SIGTERM: already stopping


def _install() -> None:
    for signum in SIGNALS:
        _previous[signum] = signal.signal(signum, _handle)


def _restore() -> None:
    for signum, handler in _previous.items():
        signal.signal(signum, signal.SIG_DFL if handler is None else handler)
    _previous.clear()


@contextlib.contextmanager
def caught() -> Iterator[None]:
    """While the block runs, SIGTERM and SIGINT inside a `deferring()` block
    request a stop (module docstring); outside one they keep their handlers
    (SIGTERM's default still ends a process blocked in TensorFlow, e.g. a
    cluster task serving). Nested or off the main thread: no change."""
    global _caught, _requested
    if _caught or threading.current_thread() is not threading.main_thread():
        yield
        return
    _caught = True
    try:
        yield
    finally:
        _caught, _requested = False, None


@contextlib.contextmanager
def deferring(what: str = "the run") -> Iterator[None]:
    """While the block runs, a signal under `caught()` only requests a stop;
    the code inside looks at `requested()` at its safe points.

    When the outermost block ends, the signals' handlers come back and the
    request is dropped; if the block finished its work with a request still
    pending (a signal during its last file writes), `Stopped` is raised
    there: nothing was lost, and the process still ends as asked. `what`
    names the work in that message.
    """
    global _deferring, _requested
    if not _deferring and _caught and threading.current_thread() is threading.main_thread():
        _install()
    _deferring += 1
    try:
        yield
    except BaseException:
        if _deferring == 1:
            _requested = None
        raise
    finally:
        _deferring -= 1
        if not _deferring:
            _restore()
    if not _deferring and _requested is not None:
        pending, _requested = _requested, None
        raise Stopped(pending, f"came as {what} finished; nothing was lost")
