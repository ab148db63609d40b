"""The errors the project raises for bad input.

Entry points catch `TfSharpCFError`, print its message and exit with code 2;
anything else is a bug and keeps its stack trace.
"""


class TfSharpCFError(Exception):
    """Base class: an error caused by the user's input, with a clear message."""


class ConfigError(TfSharpCFError, ValueError):
    """An invalid setting; the message names the flag or field."""


class DataError(TfSharpCFError, ValueError):
    """A missing or malformed data file; the message names the file and line."""
