"""`python -m tf_sharpcf.pipeline pipelines/table2_gowalla.toml`: run an experiment.

Runs every method x seed of the definition into
`<results-dir>/<name>/runs/<method>-seed<seed>/`, skipping runs that already
have metrics.json and continuing an interrupted run from its last checkpoint, then
writes `<results-dir>/<name>/table.md` and `table.csv`.

The methods of one seed share their first E_start (BPR) epochs: they are
trained once, as `runs/warmup-seed<seed>/`, and every method's run branches
from its last checkpoint (`tf_sharpcf.warmup`).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import sys
from pathlib import Path
from typing import List, Optional

import tf_sharpcf  # noqa: F401
if __name__ == "__main__":
    tf_sharpcf.quiet_native_logs()      # before TensorFlow is imported
from tf_sharpcf import methods, run_dir
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
    lock = None
    try:
        exp = load_experiment(Path(args.experiment))
        runs = plan(exp, args.data_dir, args.epochs)
        root = Path(args.results_dir) / exp.name
        warm_of = _warmups(runs, root)
        if not args.table_only:
            lock = run_dir.FolderLock(root / run_dir.LOCK, root, "experiment")   # one process per experiment
            lock.__enter__()
        results = {}
        data = None
        verbose = 0 if args.quiet else 1
        # Seed after seed (all methods of seed 0 first), APR (two passes a step,
        # the costliest) last within a seed: an experiment cut short leaves
        # whole seeds, and the cheaper runs of a seed finished.
        order = sorted(range(len(runs)), key=lambda i: (exp.seeds.index(runs[i].seed),
                                                        runs[i].method == "apr", i))
        for i in order:
            run = runs[i]
            out = root / "runs" / run.label
            finished = run_dir.read_metrics(out)
            if finished is not None:
                results[run.label] = finished
                continue
            if args.table_only:
                continue
            from tf_sharpcf import train
            if data is None:
                data = train.load_data(run.config)
            resume = _same_run(out, run.config)
            if out.exists() and not resume:
                shutil.rmtree(out)
            if not resume and i in warm_of:
                from tf_sharpcf import warmup
                warm, warm_dir = warm_of[i]
                _train(exp.name, warm, warm_dir, data, verbose)
                warmup.branch(warm_dir, run.config, out, data)
                print(f"[{exp.name}] {run.label}: from {warm_dir.name} at epoch {warm.train.epochs}",
                      file=sys.stderr, flush=True)
                resume = True
            results[run.label] = _train(exp.name, run.config, out, data, verbose, resume)
        summary = summarize(exp, results)
        root.mkdir(parents=True, exist_ok=True)
        run_dir.atomic_write_text(root / "table.md", table_markdown(exp, summary, results))
        rows = table_csv_rows(exp, summary)
        if rows:
            out = io.StringIO()
            w = csv.DictWriter(out, fieldnames=sorted({k for r in rows for k in r}, key=lambda k: (k != "method", k)),
                               lineterminator="\n")
            w.writeheader()
            w.writerows(rows)
            run_dir.atomic_write_text(root / "table.csv", out.getvalue())
    except TfSharpCFError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if lock is not None:
            lock.__exit__(None, None, None)
    print((root / "table.md").read_text())
    return 0


def _same_run(out: Path, config: Config) -> bool:
    """An interrupted run continues from its last checkpoint when its config is
    unchanged (`_what_counts`); a run of an edited definition starts over."""
    if not (out / run_dir.CONFIG).exists():
        return False
    stored = Config.from_stored(json.loads((out / run_dir.CONFIG).read_text()))
    return _what_counts(stored) == _what_counts(config)


def _unused(method: str):
    """Fields `method`'s training never reads (the other methods' own fields):
    a change of their defaults must not make the runner start a finished
    warm-up or an interrupted run over."""
    own = methods.get(method).fields if method in methods.names() else ()
    return tuple(f for f in methods.method_fields() if f not in own)


def _what_counts(config: Config) -> Config:
    """`config` without what does not change the run: where the data lives
    (`data_dir`, this machine's), how often it is checkpointed, and the fields
    its method does not use."""
    neutral = Config().train
    unused = {f: getattr(neutral, f) for f in _unused(config.train.method)}
    return config.replace(data={"data_dir": None}, train={"checkpoint_every": 1, **unused})


def _train(name: str, config: Config, out: Path, data, verbose: int, resume: Optional[bool] = None):
    """Trains (or continues, or finds finished) the run of `config` in `out`."""
    from tf_sharpcf import train
    if (out / run_dir.METRICS).exists() and _same_run(out, config):
        return run_dir.read_metrics(out)
    if resume is None:
        resume = _same_run(out, config)
        if out.exists() and not resume:
            shutil.rmtree(out)
    print(f"[{name}] {out.name}{' (resumed)' if resume else ''}", file=sys.stderr, flush=True)
    return train.train_and_evaluate(config, out, data, verbose=verbose, start=train.Start.resuming(resume))


def _warmups(runs, root: Path):
    """{run index: (warm-up config, its folder)} for the runs that share a warm-up."""
    from tf_sharpcf.warmup import shared_warmups
    out, used = {}, {}
    for warm, members in shared_warmups([r.config for r in runs]):
        if warm is None:
            continue
        seed = warm.train.seed
        used[seed] = used.get(seed, 0) + 1
        folder = root / "runs" / (f"warmup-seed{seed}" + ("" if used[seed] == 1 else f"-{used[seed]}"))
        out.update({i: (warm, folder) for i in members})
    return out


if __name__ == "__main__":
    sys.exit(main())
