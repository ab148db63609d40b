"""The errors the project raises for bad input and failed training.

Entry points catch `TfSharpCFError`, print its message and exit with its
`exit_code`: 2 for bad input, 3 for a training failure (`TrainingError`),
128 + the signal's number for a run stopped by SIGTERM (143) or SIGINT (130)
after saving its state (`Stopped`); anything else is a bug and keeps its
stack trace.
"""
import signal


class TfSharpCFError(Exception):
    """Base class: an error caused by the user's input, with a clear message."""

    exit_code = 2


class ConfigError(TfSharpCFError, ValueError):
    """An invalid setting; the message names the flag or field."""


class DataError(TfSharpCFError, ValueError):
    """A missing or malformed data file; the message names the file and line."""


class TrainingError(TfSharpCFError, RuntimeError):
    """Training could not go on (a non-finite loss, a failed write); the message
    says which epoch or file, and where the last good checkpoint is."""

    exit_code = 3


class Stopped(TfSharpCFError):
    """SIGTERM or SIGINT stopped the run at a safe point, after its state was
    saved (`training/signals.py`). Not a `TrainingError`: the run did not fail.

    The message is '<signal> <where>; <hint>': `where` says where it stopped
    and what was saved, `hint` how to continue (a caller that knows better,
    the tuner or the experiment runner, raises its own with the same `where`).
    exit_code: 128 + the signal's number (143 for SIGTERM, 130 for SIGINT),
    the status a shell reports for a process that signal ended, so a job
    scheduler that requeues preempted jobs treats the run like any other.
    """

    def __init__(self, signum: int, where: str, hint: str = ""):
        self.signum, self.where, self.hint = int(signum), where, hint
        self.exit_code = 128 + self.signum
        super().__init__(f"{signal.Signals(self.signum).name} {where}" + (f"; {hint}" if hint else ""))
