"""`python -m tf_sharpcf.pipeline pipelines/table2_gowalla.toml`: run an experiment.

Runs every method x seed of the definition into
`<results-dir>/<name>/runs/<method>-seed<seed>/`, skipping runs that already
have metrics.json and continuing an interrupted run from its last checkpoint, then
writes `<results-dir>/<name>/table.md` and `table.csv`. The methods of one
seed share their first E_start (BPR) epochs (`tf_sharpcf.training.runner`).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

import tf_sharpcf  # noqa: F401
if __name__ == "__main__":
    tf_sharpcf.quiet_native_logs()      # before TensorFlow is imported
from tf_sharpcf.cli import exits


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tf_sharpcf.pipeline", description=__doc__.split("\n\n")[0])
    p.add_argument("experiment", help="a pipelines/*.toml definition")
    p.add_argument("--data-dir", help="data directory (default: the definition's, else $TF_SHARPCF_DATA)")
    p.add_argument("--results-dir", default="results")
    p.add_argument("--epochs", type=int, help="override every run's epochs (smoke tests)")
    p.add_argument("--table-only", action="store_true", help="only rebuild the tables from finished runs")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)

    def run() -> int:
        from tf_sharpcf.analysis.experiments import load_experiment
        from tf_sharpcf.training.runner import run_experiment
        exp = load_experiment(Path(args.experiment))
        table = run_experiment(exp, Path(args.results_dir) / exp.name, args.data_dir, args.epochs,
                               table_only=args.table_only, verbose=0 if args.quiet else 1)
        print(table.read_text())
        return 0
    return exits.run(run)


if __name__ == "__main__":
    sys.exit(main())
