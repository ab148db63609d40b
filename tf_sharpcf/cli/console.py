"""What the command-line tools print besides their results: our warnings as
one line, whether a stream is a person's terminal, and the line that says a
run stopped early.

Library code keeps Python's defaults: the warning format is changed only
while a command runs (`exits.run`), and only for warnings raised from
tf_sharpcf's own modules. Filters are untouched, so `-W error`,
`-W ignore` and `PYTHONWARNINGS` work as usual.
"""
from __future__ import annotations

import contextlib
import os
import sys
import warnings
from pathlib import Path
from typing import Iterator, List, Mapping

PACKAGE = Path(__file__).resolve().parents[1]


def is_ours(filename: str) -> bool:
    """True for a file inside the tf_sharpcf package (where a warning was raised)."""
    try:
        path = Path(os.path.realpath(filename))
    except (TypeError, ValueError, OSError):
        return False
    return PACKAGE == path or PACKAGE in path.parents


def one_line(formatwarning):
    """A `warnings.formatwarning` that writes our warnings as `warning: <message>`
    (no file, line number, category or source line: to a user those read like
    a crash) and leaves everyone else's to `formatwarning`."""
    def format_warning(message, category, filename, lineno, line=None):
        if is_ours(filename):
            return f"warning: {message}\n"
        return formatwarning(message, category, filename, lineno, line)
    return format_warning


@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """While a command runs: our warnings as one line on stderr (see `one_line`)."""
    previous = warnings.formatwarning
    warnings.formatwarning = one_line(previous)
    try:
        yield
    finally:
        warnings.formatwarning = previous


def is_terminal(stream) -> bool:
    """Whether `stream` is an interactive terminal (False for files, pipes,
    captured streams and closed ones)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def stdout_is_terminal() -> bool:
    return is_terminal(sys.stdout)


def early_stop_lines(metrics: Mapping) -> List[str]:
    """["stopped early at epoch N (no gain in P evaluations)"] for a run that
    early stopping ended before its last epoch (metrics.json's
    `stopped_epoch`, `patience`), else []."""
    epoch, patience = metrics.get("stopped_epoch"), metrics.get("patience")
    if not epoch:
        return []
    return [f"stopped early at epoch {epoch} (no gain in {patience} evaluation{'' if patience == 1 else 's'})"]
