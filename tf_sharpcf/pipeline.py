"""`python -m tf_sharpcf.pipeline pipelines/table2_gowalla.toml`: run an experiment.

Runs every method x seed of the definition into
`<results-dir>/<name>/runs/<method>-seed<seed>/`, skipping runs that already
have metrics.json and continuing an interrupted run from its last checkpoint, then
writes `<results-dir>/<name>/table.md` and `table.csv`.
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from pathlib import Path
from typing import List, Optional

import tf_sharpcf  # noqa: F401
from tf_sharpcf.config import Config
from tf_sharpcf.errors import TfSharpCFError
from tf_sharpcf.experiments import load_experiment, plan, summarize, table_csv_rows, table_markdown


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tf_sharpcf.pipeline", description=__doc__.split("\n\n")[0])
    p.add_argument("experiment", help="a pipelines/*.toml definition")
    p.add_argument("--data-dir", help="data directory (default: the definition's, else $TF_SHARPCF_DATA)")
    p.add_argument("--results-dir", default="results")
    p.add_argument("--epochs", type=int, help="override every run's epochs (smoke tests)")
    p.add_argument("--table-only", action="store_true", help="only rebuild the tables from finished runs")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    try:
        exp = load_experiment(Path(args.experiment))
        runs = plan(exp, args.data_dir, args.epochs)
        root = Path(args.results_dir) / exp.name
        results = {}
        data = None
        for run in runs:
            out = root / "runs" / run.label
            if (out / "metrics.json").exists():
                results[run.label] = json.loads((out / "metrics.json").read_text())
                continue
            if args.table_only:
                continue
            from tf_sharpcf import train
            if data is None:
                data = train.load_data(run.config)
            # An interrupted run continues from its last checkpoint when its
            # config is unchanged; a run of an edited definition starts over.
            resume = (out / "config.json").exists() and \
                Config.from_dict(json.loads((out / "config.json").read_text())) == run.config
            if out.exists() and not resume:
                shutil.rmtree(out)
            print(f"[{exp.name}] {run.label}{' (resumed)' if resume else ''}", file=sys.stderr, flush=True)
            results[run.label] = train.train_and_evaluate(run.config, out, data, verbose=0 if args.quiet else 1,
                                                          resume=resume)
        summary = summarize(exp, results)
        root.mkdir(parents=True, exist_ok=True)
        (root / "table.md").write_text(table_markdown(exp, summary, results))
        rows = table_csv_rows(exp, summary)
        if rows:
            with open(root / "table.csv", "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=sorted({k for r in rows for k in r}, key=lambda k: (k != "method", k)))
                w.writeheader()
                w.writerows(rows)
    except TfSharpCFError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print((root / "table.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
