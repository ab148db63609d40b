"""`python -m tf_sharpcf.cli.docs > docs/cli.md`: the command-line reference,
written from the commands' own argparse parsers.

`tests/test_cli_docs.py` renders it again and compares it with docs/cli.md,
so a flag added, removed or reworded without regenerating the file fails
the tests. The help is laid out at a fixed width (`WIDTH` columns), whatever
the terminal, so the output is the same everywhere.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Iterator, List, Tuple

import tf_sharpcf

WIDTH = 80
REGENERATE = "python -m tf_sharpcf.cli.docs > docs/cli.md"


@contextlib.contextmanager
def fixed_width(columns: int = WIDTH) -> Iterator[None]:
    """argparse wraps its help at $COLUMNS (else the terminal's width) - 2."""
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(columns)
    try:
        yield
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous


def subcommands(parser: argparse.ArgumentParser) -> dict:
    """{name: parser} of a parser's subcommands ({} when it has none)."""
    found = [a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(found[0]) if found else {}


def parsers() -> List[Tuple[str, argparse.ArgumentParser]]:
    """(title, parser) of every command and subcommand, in the reference's order."""
    from tf_sharpcf.cli import analyze, export, fit, parameter_server, pipeline, tune
    return [
        ("fit", fit.build_parser()),
        ("tune", tune.build_parser()),
        ("pipeline", pipeline.build_parser()),
        ("export", export.build_parser()),
        ("export models-config", export.build_config_parser()),
        ("analyze", analyze.build_parser()),
        *[(f"analyze {name}", sub) for name, sub in subcommands(analyze.build_parser()).items()],
        ("parameter_server", parameter_server.build_parser()),
    ]


def render() -> str:
    """docs/cli.md's text."""
    from tf_sharpcf.cli import usage
    out = ["# Command-line reference", "",
           "<!-- Generated from the commands' argparse parsers; do not edit by hand. -->",
           "Written from the commands' own parsers. After changing a flag, regenerate it",
           "(`tests/test_cli_docs.py` fails until you do):", "",
           "```bash", REGENERATE, "```", "",
           "Each command runs as `python -m tf_sharpcf.COMMAND` in a checkout, or as",
           "`tf-sharpcf COMMAND` once the package is installed. Examples are in the",
           "[README](../README.md#the-commands).", "",
           "## `tf-sharpcf`", "", "```text", usage(), "```", ""]
    with fixed_width():
        for title, parser in parsers():
            text = parser.format_help().rstrip("\n")
            out += [f"## `{title}`", "", "```text", text, "```", ""]
    return "\n".join(out)


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    tf_sharpcf.quiet_native_logs()      # before TensorFlow is imported (export's parser imports it)
    sys.exit(main())
