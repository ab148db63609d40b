"""The errors the project raises for bad input and failed training.

Entry points catch `TfSharpCFError`, print its message and exit with its
`exit_code`: 2 for bad input, 3 for a training failure (`TrainingError`);
anything else is a bug and keeps its stack trace.
"""


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
