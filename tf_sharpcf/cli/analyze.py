"""`python -m tf_sharpcf.analyze`: the paper's analysis figures from `fit` run directories.

    python -m tf_sharpcf.analyze curves      --runs RUN ... --out docs/figures/curves_ml-1m.png
    python -m tf_sharpcf.analyze landscape   --runs RUN ... --out docs/figures/landscape_ml-1m.png
    python -m tf_sharpcf.analyze longtail    --runs RUN ... --out docs/figures/longtail_ml-1m.png
    python -m tf_sharpcf.analyze sensitivity --runs RUN ... --param lam --out docs/figures/lambda.png
    python -m tf_sharpcf.analyze splits      --dataset gowalla

Each figure command writes the PNG and, beside it, the CSV it was drawn from
(same name, `.csv`); `landscape` also writes `<name>_flatness.csv`. `splits`
prints how popular the test and validation splits' held-out items are
(`analysis/splits.py`), and with `--out` writes that table as CSV.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np

import tf_sharpcf  # noqa: F401  (sets the Keras-2 switch first)
if __name__ == "__main__":
    tf_sharpcf.quiet_native_logs()      # before TensorFlow is imported
from tf_sharpcf.cli import exits
from tf_sharpcf.errors import ConfigError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tf_sharpcf.analyze", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    def command(name, help):
        c = sub.add_parser(name, help=help, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        c.add_argument("--runs", nargs="+", required=True, help="fit output directories")
        c.add_argument("--out", required=True, help="the PNG to write (the CSV goes beside it)")
        return c

    c = command("curves", "Recall@K per evaluated epoch, warm-up boundary marked (Fig. 2)")
    c.add_argument("--metric", default="recall@20", help="a history.csv column")
    for name, help in (("landscape", "1-D loss landscape along a random direction (Fig. 3)"),
                       ("longtail", "Recall@K per item-degree group (Fig. 4)")):
        c = command(name, help)
        c.add_argument("--data-dir", help="data directory (default: each run's config.data.data_dir)")
    c = sub.choices["landscape"]
    c.add_argument("--triples", type=int, default=200_000, help="training triples the loss is averaged over")
    c.add_argument("--points", type=int, default=41, help="grid points t in [-t_max, t_max]")
    c.add_argument("--t-max", type=float, default=2.0)
    c.add_argument("--seed", type=int, default=0, help="seed of the direction and of the triples")
    c = sub.choices["longtail"]
    c.add_argument("--k", type=int, default=20)
    c.add_argument("--edges", type=int, nargs="+", default=[0, 100, 200, 300],
                   help="degree bin edges: groups [e0, e1), [e1, e2), ...")
    c = command("sensitivity", "final Recall@20 / NDCG@20 against λ or E (Figs. 5, 6)")
    c.add_argument("--param", choices=("lam", "window"), required=True, help="config.train field")
    c = sub.add_parser("splits", help="item popularity of the test and validation splits' held-out interactions",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    c.add_argument("--dataset", required=True, help="a registered dataset or a folder")
    c.add_argument("--data-dir", help="data directory (default: $TF_SHARPCF_DATA, else ~/.cache/tf_sharpcf)")
    c.add_argument("--val-fraction", type=float, default=0.1, help="the validation split's fraction, as tune's")
    c.add_argument("--seed", type=int, default=0, help="the validation split's seed, as tune's")
    c.add_argument("--top", type=float, default=0.01, help="the fraction of items, by training degree, called top")
    c.add_argument("--out", help="also write the table to this CSV")
    return p


def splits(args) -> int:
    """`analyze splits`: the table of `analysis.splits.split_rows`."""
    import pandas as pd
    from tf_sharpcf.analysis import splits as splits_lib
    from tf_sharpcf.data import registry
    splits_lib.check_top(args.top)                      # before the data loads
    data = registry.load_dataset(args.dataset, args.data_dir)
    table = pd.DataFrame(splits_lib.split_rows(data, args.val_fraction, args.seed, args.top))
    print(table.to_string(index=False, float_format="%.3f"))
    if args.out:
        from tf_sharpcf.atomic import atomic_write_text
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(args.out), table.to_csv(index=False))
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "splits":
        return exits.run(lambda: splits(args))
    from tf_sharpcf.analysis import plots, runs as runs_lib  # TensorFlow is imported only once the flags parse
    out = Path(args.out)
    csv = out.with_suffix(".csv")

    def run() -> int:
        runs = runs_lib.load_runs(args.runs)
        if args.command == "curves":
            table = plots.curves_table(runs, args.metric)
            plots.plot_curves(table, out, args.metric)
        elif args.command == "landscape":
            if args.points < 3 or not args.t_max >= 1:
                raise ConfigError("invalid --points/--t-max: need at least 3 points and t_max >= 1 "
                                  "(the flatness is read at |t| = 0.5 and 1)")
            ts = np.round(np.linspace(-args.t_max, args.t_max, args.points), 10)
            data = runs_lib.load_run_data(runs, args.data_dir)
            table, flat = plots.landscape_tables(runs, data, ts, args.triples, args.seed, args.seed)
            plots.plot_landscape(table, out)
            flat_csv = out.with_name(out.stem + "_flatness.csv")
            flat.to_csv(flat_csv, index=False)
            print(flat.drop(columns="run").to_string(index=False, float_format="%.5f"))
            print(f"wrote {flat_csv}", file=sys.stderr)
        elif args.command == "longtail":
            data = runs_lib.load_run_data(runs, args.data_dir)
            table = plots.longtail_table(runs, data, args.k, args.edges)
            plots.plot_longtail(table, out, args.k)
            print(table.drop(columns="run").to_string(index=False, float_format="%.4f"))
        else:
            table = plots.sensitivity_table(runs, args.param)
            plots.plot_sensitivity(table, args.param, out)
        table.to_csv(csv, index=False)
        print(f"wrote {out} and {csv}", file=sys.stderr)
        return 0
    return exits.run(run)


if __name__ == "__main__":
    sys.exit(main())
