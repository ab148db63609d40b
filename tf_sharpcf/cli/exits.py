"""The one place a command-line tool turns an error into its exit status.

`TfSharpCFError` (bad input, a failed run) prints `error: <message>` and exits
with the error's `exit_code` (2 for bad input, 3 for a training failure); an
`OSError` from a write outside the atomic writers (disk full, permissions)
prints the same way and exits 3. Anything else is a bug and keeps its stack
trace.

A run that SIGTERM or SIGINT stopped after saving its state (`Stopped`,
`training/signals.py`) prints `stopped: <message>` (where it stopped, how to
continue) and exits with 128 + the signal's number: 143 for SIGTERM, 130 for
SIGINT.

While the command runs, our warnings print as one line `warning: <message>`
(`console.one_line_warnings`), and the two signals are caught
(`signals.caught`).
"""
from __future__ import annotations

import sys
from typing import Callable, Optional

from tf_sharpcf.cli import console
from tf_sharpcf.errors import Stopped, TfSharpCFError, TrainingError
from tf_sharpcf.training import signals

WRITE_FAILED = TrainingError.exit_code


def run(command: Callable[[], Optional[int]]) -> int:
    """Runs a command's body; -> its exit status (None counts as 0)."""
    try:
        with console.one_line_warnings(), signals.caught():
            status = command()
    except Stopped as e:
        print(f"stopped: {e}", file=sys.stderr)
        return e.exit_code
    except TfSharpCFError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return WRITE_FAILED
    return 0 if status is None else status
