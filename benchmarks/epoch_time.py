"""Seconds per epoch of BPR, APR and SharpCF in one process, and full-ranking
evaluation time; implicit's BPR at the same dimension when it is installed.

    python -m benchmarks.epoch_time --dataset gowalla --data-dir ../shared/data

Prints a table and writes JSON (--json). Medians over the timed epochs (the
first epoch, which includes XLA compilation, is not timed). The methods' epochs
are interleaved (epoch e of each method in turn) and ratios are taken within
this one run, since the machine is shared and noisy. `--compare-xla` adds each
method with the row update inside XLA too ("bpr-xla", ...: no fused lazy-Adam
kernel), interleaved with the others. `--negatives K` times every method at
K negatives per positive; `--baseline-negatives K0` adds BPR at K0 ("bpr@k1"),
interleaved, for the ratio of a K-negative epoch to a K0-negative one.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time

import tf_sharpcf  # noqa: F401
import numpy as np
import tensorflow as tf

from benchmarks.common import add_data_flags, compiled_model
from tf_sharpcf.training.callbacks import EpochCounter, EpochTimer
from tf_sharpcf.config import Config
from tf_sharpcf.data.registry import load_dataset
from tf_sharpcf.evaluation.ranking import Evaluator
from tf_sharpcf.data.input_pipeline import chunks_per_epoch, training_dataset
from tf_sharpcf.training.train import DEFAULT_BATCHES_PER_CHUNK


def build(data, method: str, args, row_kernel=None, negatives=None):
    """-> (compiled model, epoch -> that epoch's dataset of chunks, chunks per epoch)."""
    negatives = args.negatives if negatives is None else negatives
    model, _ = compiled_model(data, method, args.dim, jit_compile=not args.no_jit, row_kernel=row_kernel,
                              batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                              negatives=negatives)
    k = DEFAULT_BATCHES_PER_CHUNK
    def batches(epoch):
        return training_dataset(data, args.batch_size, 0, epoch, epoch + 1, batches_per_chunk=k,
                                negatives=negatives)
    return model, batches, chunks_per_epoch(data.num_train, args.batch_size, k)


def time_methods(data, methods, args) -> dict:
    """Epoch e of every method, then epoch e + 1 of every method, ...

    Interleaving puts each method's epochs in the same stretches of time, so
    the machine's drift (shared cores) falls on all of them alike; the first
    epoch (XLA compilation) is not timed.
    """
    def one(m):       # "apr", "apr-xla" (no fused kernel), "bpr@k1" (K = 1)
        name, _, k = m.partition("@k")
        return build(data, name.removesuffix("-xla"), args, row_kernel=False if name.endswith("-xla") else None,
                     negatives=int(k) if k else None)
    runs = {m: one(m) for m in methods}
    seconds = {m: [] for m in methods}
    for epoch in range(args.epochs + 1):
        for m, (model, batches, steps) in runs.items():
            history = model.fit(batches(epoch), initial_epoch=epoch, epochs=epoch + 1, steps_per_epoch=steps,
                                callbacks=[EpochCounter(), EpochTimer()], verbose=0)
            seconds[m] += history.history["seconds"]
            print(f"  epoch {epoch} {m}: {seconds[m][-1]:.2f} s", file=sys.stderr, flush=True)
    return {m: {"seconds": s, "median": statistics.median(s[1:]), "row_kernel": runs[m][0].row_kernel,
                "model": runs[m][0]} for m, s in seconds.items()}


def time_implicit(data, args):
    try:
        import implicit
        from scipy.sparse import csr_matrix
    except ImportError:
        return None
    matrix = csr_matrix((np.ones(data.num_train, np.float32), (data.train_users, data.train_items)),
                        shape=(data.num_users, data.num_items))
    from implicit.cpu.bpr import BayesianPersonalizedRanking
    # implicit adds a bias column to the factors: dim - 1 + 1 = dim floats per row
    warm = BayesianPersonalizedRanking(factors=args.dim - 1, iterations=1, random_state=0)
    warm.fit(matrix, show_progress=False)
    model = BayesianPersonalizedRanking(factors=args.dim - 1, iterations=args.epochs, random_state=0)
    start = time.perf_counter()
    model.fit(matrix, show_progress=False)
    return {"median": (time.perf_counter() - start) / args.epochs, "version": implicit.__version__,
            "note": "mean over iterations of one fit call"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_flags(p, methods=True, batch_size=Config().train.batch_size)
    p.add_argument("--epochs", type=int, default=3, help="timed epochs (after one untimed)")
    p.add_argument("--optimizer", default=Config().train.optimizer)
    p.add_argument("--lr", type=float, default=Config().train.lr)
    p.add_argument("--no-jit", action="store_true")
    p.add_argument("--negatives", type=int, default=Config().train.negatives, help="K per positive")
    p.add_argument("--baseline-negatives", type=int, default=None,
                   help="also time BPR at this K, interleaved (e.g. 1)")
    p.add_argument("--compare-xla", action="store_true",
                   help="also time each method with the whole step in XLA (no fused row kernel)")
    p.add_argument("--no-implicit", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    data = load_dataset(args.dataset, args.data_dir, allow_download=False)
    print(data.describe(), file=sys.stderr)
    results = {"dataset": data.name, "dim": args.dim, "batch_size": args.batch_size, "negatives": args.negatives,
               "optimizer": args.optimizer, "jit": not args.no_jit, "epochs_timed": args.epochs,
               "machine": f"{platform.processor() or platform.machine()}, {tf.config.threading.get_intra_op_parallelism_threads() or 'all'} threads",
               "methods": {}}
    last_model = None
    methods = args.methods.split(",")
    if args.compare_xla:
        methods += [f"{m}-xla" for m in methods]
    if args.baseline_negatives is not None:
        methods.append(f"bpr@k{args.baseline_negatives}")
    for method, r in time_methods(data, methods, args).items():
        last_model = r.pop("model")
        results["methods"][method] = r
        print(f"{method:11s} median {r['median']:.3f} s/epoch  ({', '.join(f'{s:.2f}' for s in r['seconds'])})",
              file=sys.stderr, flush=True)
    evaluator = Evaluator(data, (10, 20))
    evaluator.evaluate(last_model.user_embedding, last_model.item_embedding)  # compiles
    results["eval_seconds"] = statistics.median(
        evaluator.evaluate(last_model.user_embedding, last_model.item_embedding)["eval_seconds"]
        for _ in range(2))
    if not args.no_implicit:
        results["implicit"] = time_implicit(data, args)
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    m = results["methods"]
    bpr = m.get("bpr", {}).get("median")
    lines = ["| measure | value |", "|---|---|"]
    for method, r in m.items():
        lines.append(f"| {method} s/epoch (median) | {r['median']:.3f} |")
    for suffix in ("", "-xla"):
        base = m.get(f"bpr{suffix}", {}).get("median")
        for method in (f"sharpcf{suffix}", f"apr{suffix}"):
            if base and method in m:
                results[f"{method}/bpr{suffix}"] = m[method]["median"] / base
                lines.append(f"| {method} / bpr{suffix} | {results[f'{method}/bpr{suffix}']:.3f} |")
    for method in ("bpr", "sharpcf", "apr"):
        if method in m and f"{method}-xla" in m:
            results[f"{method}-xla/{method}"] = m[f"{method}-xla"]["median"] / m[method]["median"]
            lines.append(f"| {method}-xla / {method} (kernel speed-up) | {results[f'{method}-xla/{method}']:.2f} |")
    k0 = f"bpr@k{args.baseline_negatives}"
    if bpr and k0 in m:
        results[f"bpr/{k0}"] = bpr / m[k0]["median"]
        lines.append(f"| bpr (K = {args.negatives}) / {k0} | {results[f'bpr/{k0}']:.2f} |")
    lines.append(f"| full-ranking eval s ({len(evaluator.users):,} users) | {results['eval_seconds']:.2f} |")
    if results.get("implicit"):
        lines.append(f"| implicit {results['implicit']['version']} BPR s/epoch | {results['implicit']['median']:.3f} |")
        if bpr:
            results["bpr/implicit"] = bpr / results["implicit"]["median"]
            lines.append(f"| our bpr / implicit | {results['bpr/implicit']:.2f} |")
    lines.append(f"| peak RSS MB | {results['peak_rss_mb']:.0f} |")
    print("\n".join(lines))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
