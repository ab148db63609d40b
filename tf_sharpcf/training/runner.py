"""The experiment runner: every method x seed of a definition, resumable, then its tables.

Runs go to `<root>/runs/<method>-seed<seed>/`; a run that has metrics.json is
skipped, an interrupted one continues from its last checkpoint when its config
is unchanged (`same_run`) and starts over otherwise. The methods of one seed
share their first E_start (BPR) epochs: they are trained once, as
`runs/warmup-seed<seed>/`, and every method's run branches from its last
checkpoint (`warmup.py`). Then `<root>/table.md` and `table.csv` are written
(atomically) from the finished runs.
"""
from __future__ import annotations

import contextlib
import csv
import io
import shutil
import sys
from pathlib import Path
from typing import Dict, Optional

from tf_sharpcf import losses, methods, samplers
from tf_sharpcf.analysis.experiments import (Experiment, cost_line, history_seconds, plan, summarize, table_csv_rows,
                                             table_markdown)
from tf_sharpcf.config import Config
from tf_sharpcf.errors import Stopped
from tf_sharpcf.training import run_dir, signals

# How an experiment stopped by SIGTERM or SIGINT (`signals`) goes on.
CONTINUE = "finished runs are kept: the same pipeline command continues the experiment"


@signals.deferring("the experiment")     # SIGTERM/SIGINT: stop after the current chunk (preemption.py)
def run_experiment(exp: Experiment, root: Path, data_dir: Optional[str] = None, epochs: Optional[int] = None,
                   table_only: bool = False, verbose: int = 1) -> Path:
    """Trains the definition's unfinished runs into `root` (none if
    `table_only`) and writes its tables; -> the table.md path. One process per
    experiment folder (its lock file) while it trains."""
    runs = plan(exp, data_dir, epochs)
    warm_of = _warmups(runs, root)
    results: Dict[str, dict] = {}
    data = None
    lock = contextlib.nullcontext() if table_only else run_dir.FolderLock(root / run_dir.LOCK, root, "experiment")
    with lock:
        # Seed after seed (all methods of seed 0 first), the costliest methods
        # (most passes a step, `methods.Method.passes`: APR) last within a seed:
        # an experiment cut short leaves whole seeds, and the cheaper runs of a seed finished.
        order = sorted(range(len(runs)), key=lambda i: (exp.seeds.index(runs[i].seed),
                                                        methods.get(runs[i].method).passes, i))
        for i in order:
            run = runs[i]
            out = root / "runs" / run.label
            finished = run_dir.read_metrics(out)
            if finished is not None:
                results[run.label] = finished
                continue
            if table_only:
                continue
            signals.stop_if_requested(f"before run {run.label}", CONTINUE)
            from tf_sharpcf.training import train
            if data is None:
                data = train.load_data(run.config)
            resume = same_run(out, run.config)
            if out.exists() and not resume:
                shutil.rmtree(out)
            if not resume and i in warm_of:
                from tf_sharpcf.training import warmup
                warm, warm_dir = warm_of[i]
                _train(exp.name, warm, warm_dir, data, verbose)
                warmup.branch(warm_dir, run.config, out, data)
                print(f"[{exp.name}] {run.label}: from {warm_dir.name} at epoch {warm.train.epochs}",
                      file=sys.stderr, flush=True)
                resume = True
            results[run.label] = _train(exp.name, run.config, out, data, verbose, resume)
        return write_tables(exp, root, results, _cost(runs, warm_of, root, results))


def write_tables(exp: Experiment, root: Path, results: Dict[str, dict], cost: Optional[str] = None) -> Path:
    """table.md and table.csv of the finished runs' metrics (`results`, by run label)."""
    summary = summarize(exp, results)
    root.mkdir(parents=True, exist_ok=True)
    run_dir.atomic_write_text(root / "table.md", table_markdown(exp, summary, results, cost))
    rows = table_csv_rows(exp, summary)
    if rows:
        out = io.StringIO()
        w = csv.DictWriter(out, fieldnames=sorted({k for r in rows for k in r}, key=lambda k: (k != "method", k)),
                           lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        run_dir.atomic_write_text(root / "table.csv", out.getvalue())
    return root / "table.md"


def _cost(runs, warm_of, root: Path, results: Dict[str, dict]) -> Optional[str]:
    """table.md's cost line: the finished runs' own epochs and their shared warm-ups, once each."""
    train_s = eval_s = 0.0
    warm_dirs = set()
    for i, run in enumerate(runs):
        history = root / "runs" / run.label / run_dir.HISTORY
        if run.label not in results or not history.exists():
            continue
        after = 0
        if i in warm_of and (warm_of[i][1] / run_dir.HISTORY).exists():
            after = warm_of[i][0].train.epochs
            warm_dirs.add(warm_of[i][1])
        t, e = history_seconds(_rows(history), after)
        train_s, eval_s = train_s + t, eval_s + e
    for folder in warm_dirs:
        t, e = history_seconds(_rows(folder / run_dir.HISTORY))
        train_s, eval_s = train_s + t, eval_s + e
    return cost_line(train_s, eval_s, len(results), len(warm_dirs)) if results else None


def _rows(path: Path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def same_run(out: Path, config: Config) -> bool:
    """An interrupted run continues from its last checkpoint when its config is
    unchanged (`_what_counts`); a run of an edited definition starts over."""
    if not (out / run_dir.CONFIG).exists():
        return False
    stored = run_dir.read_config(out)
    return _what_counts(stored) == _what_counts(config)


def _unused(train) -> tuple:
    """Fields the run's training never reads: the other methods', losses' and
    samplers' own fields (τ for a BPR run). A change of their defaults must
    not make the runner start a finished warm-up or an interrupted run over."""
    return (*methods.PARTS.unused_fields(train.method), *losses.unused_fields(train.loss),
            *samplers.unused_fields(train.sampler))


def _what_counts(config: Config) -> Config:
    """`config` without what does not change the run: where the data lives
    (`data_dir`, this machine's), how often it is checkpointed, and the fields
    its method does not use."""
    neutral = Config().train
    unused = {f: getattr(neutral, f) for f in _unused(config.train)}
    return config.replace(data={"data_dir": None}, train={"checkpoint_every": 1, **unused})


def _train(name: str, config: Config, out: Path, data, verbose: int, resume: Optional[bool] = None):
    """Trains (or continues, or finds finished) the run of `config` in `out`."""
    from tf_sharpcf.training import train
    if (out / run_dir.METRICS).exists() and same_run(out, config):
        return run_dir.read_metrics(out)
    if resume is None:
        resume = same_run(out, config)
        if out.exists() and not resume:
            shutil.rmtree(out)
    print(f"[{name}] {out.name}{' (resumed)' if resume else ''}", file=sys.stderr, flush=True)
    try:
        return train.train_and_evaluate(config, out, data, verbose=verbose, start=train.Start.resuming(resume))
    except Stopped as e:
        raise Stopped(e.signum, f"in run {out.name}: {e.where}", CONTINUE) from None


def _warmups(runs, root: Path):
    """{run index: (warm-up config, its folder)} for the runs that share a warm-up."""
    from tf_sharpcf.training.warmup import shared_warmups
    out, used = {}, {}
    for warm, members in shared_warmups([r.config for r in runs]):
        if warm is None:
            continue
        seed = warm.train.seed
        used[seed] = used.get(seed, 0) + 1
        folder = root / "runs" / (f"warmup-seed{seed}" + ("" if used[seed] == 1 else f"-{used[seed]}"))
        out.update({i: (warm, folder) for i in members})
    return out
