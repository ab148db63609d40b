"""`tf-sharpcf COMMAND ...`: the installed entry point of every command-line tool.

    tf-sharpcf fit --dataset gowalla        (= python -m tf_sharpcf.fit ...)
    tf-sharpcf tune|pipeline|export|analyze ...
"""
from __future__ import annotations

import importlib
import sys
from typing import List, Optional

COMMANDS = {
    "fit": "train BPR, APR or SharpCF and evaluate it",
    "tune": "search hyper-parameters on a validation split",
    "pipeline": "run an experiment definition (pipelines/*.toml)",
    "export": "export a run as a TF Serving retriever",
    "analyze": "figures of finished runs",
}


def usage() -> str:
    lines = ["usage: tf-sharpcf COMMAND [options]   (tf-sharpcf COMMAND --help for its options)", "",
             "commands:"]
    lines += [f"  {name:10s} {doc}" for name, doc in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    import tf_sharpcf
    tf_sharpcf.quiet_native_logs()
    module = importlib.import_module(f"tf_sharpcf.cli.{command}")
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())
