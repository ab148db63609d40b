"""The one place a command-line tool turns an error into its exit status.

`TfSharpCFError` (bad input, a failed run) prints `error: <message>` and exits
with the error's `exit_code` (2 for bad input, 3 for a training failure); an
`OSError` from a write outside the atomic writers (disk full, permissions)
prints the same way and exits 3. Anything else is a bug and keeps its stack
trace.

While the command runs, our warnings print as one line `warning: <message>`
(`console.one_line_warnings`).
"""
from __future__ import annotations

import sys
from typing import Callable, Optional

from tf_sharpcf.cli import console
from tf_sharpcf.errors import TfSharpCFError, TrainingError

WRITE_FAILED = TrainingError.exit_code


def run(command: Callable[[], Optional[int]]) -> int:
    """Runs a command's body; -> its exit status (None counts as 0)."""
    try:
        with console.one_line_warnings():
            status = command()
    except TfSharpCFError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return WRITE_FAILED
    return 0 if status is None else status
