"""Seconds per epoch against K: the fused K-negative kernel against the all-XLA step.

    python -m benchmarks.negatives --dataset gowalla --data-dir ../shared/data \\
        --negatives 1 4 16 64 256 --batch-sizes 256 8192 --optimizers sgd lazyadam --json out.json

For every (optimizer, batch, K) it builds each of `--methods` twice (a method,
or METHOD+LOSS[+cosine], e.g. bpr+softmax+cosine: `fit --method METHOD
--loss LOSS --similarity cosine`; softmax at τ 0.1), scoring
through the fused kernel ("fused") and through gathered rows in the XLA step
("xla"), with `--shared` also against one pool of K negatives per batch
(`--sampler shared`, "shared": one [B, d] x [d, K] matmul), and times
`--fraction` of an epoch of each, all of them interleaved
(the machine is shared, so ratios are taken within one run), after one untimed warm-up stretch that includes the
compilation. Seconds per epoch are extrapolated from the timed stretch (best
of `--repeats`). Also the process's peak RSS. The sampler runs in the
pipeline as in `fit` and its time is included.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time

import tf_sharpcf  # noqa: F401
import tensorflow as tf

from benchmarks.common import add_data_flags, compiled_model
from tf_sharpcf import samplers
from tf_sharpcf.data.input_pipeline import training_dataset
from tf_sharpcf.data.registry import load_dataset
from tf_sharpcf.training.callbacks import EpochCounter

CHUNK = 8        # batches per call into the graph


def variant(text: str) -> dict:
    """'sharpcf+softmax+cosine' -> {method, loss, similarity} for `compiled_model`."""
    method, loss, similarity = (text.split("+") + ["bpr", "dot"])[:3]
    return {"method": method, "loss": loss, "similarity": similarity}


def _runner(data, method, args, batch, k, optimizer, kind):
    """kind: "fused", "xla" or "shared" -> (model, run: () -> seconds per epoch)."""
    fused = kind == "fused"
    model, config = compiled_model(data, dim=args.dim, batch_size=batch, optimizer=optimizer, negatives=k,
                                   lr=args.lr[optimizer], pair_kernel=fused,
                                   sampler="shared" if kind == "shared" else "uniform", **variant(method))
    draws = samplers.draws(config.train)
    if fused and not model.pair_kernel:
        raise SystemExit("the fused K-negative kernel is unavailable here (kernels.gather_dot_op)")
    chunks = max(1, round(args.fraction * data.num_train / (batch * CHUNK)))
    positives = chunks * CHUNK * batch
    epoch = [0]

    def run() -> float:
        epoch[0] += 1
        ds = training_dataset(data, batch, 0, epoch[0], epoch[0] + 1, batches_per_chunk=CHUNK,
                              negatives=draws).take(chunks).cache()
        for _ in ds:        # sample before the clock starts
            pass
        start = time.perf_counter()
        model.fit(ds, initial_epoch=epoch[0], epochs=epoch[0] + 1, steps_per_epoch=chunks,
                  callbacks=[EpochCounter()], verbose=0)
        return (time.perf_counter() - start) * data.num_train / positives

    return model, run


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_flags(p, methods=True, batch_size=8192)
    p.add_argument("--negatives", type=int, nargs="+", default=[1, 4, 16, 64, 256])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 8192])
    p.add_argument("--optimizers", nargs="+", default=["sgd", "lazyadam"])
    p.add_argument("--fraction", type=float, default=0.05, help="share of an epoch timed per repeat")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--xla-max-negatives", type=int, default=64,
                   help="skip the all-XLA step above this K ([B, K, d] tensors: slow and large)")
    p.add_argument("--shared", action="store_true", help="also time a shared pool of K negatives per batch")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    args.lr = {"sgd": 12.8, "lazyadam": 5e-3, "adagrad": 0.05}
    data = load_dataset(args.dataset, args.data_dir)
    rows = []
    for optimizer in args.optimizers:
        for batch in args.batch_sizes:
            for k in args.negatives:
                # every method and kind of this (optimizer, batch, K), interleaved
                kinds = (["fused"] + (["xla"] if k <= args.xla_max_negatives else [])
                         + (["shared"] if args.shared else []))
                runners = {(method, name): _runner(data, method, args, batch, k, optimizer, name)
                           for method in args.methods.split(",") for name in kinds}
                for _, run in runners.values():
                    run()                                   # compile, warm up
                times = {key: [] for key in runners}
                for _ in range(args.repeats):
                    for key, (_, run) in runners.items():
                        times[key].append(run())
                for method in args.methods.split(","):
                    row = {"optimizer": optimizer, "batch_size": batch, "negatives": k, "method": method,
                           **{f"{n}_s_per_epoch": round(min(times[method, n]), 3) for n in kinds},
                           "row_kernel": runners[method, "fused"][0].row_kernel}
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
    base = {(r["optimizer"], r["batch_size"], r["method"]): r["fused_s_per_epoch"] for r in rows
            if r["negatives"] == min(args.negatives)}
    for r in rows:
        r["fused_vs_fused_k_min"] = round(r["fused_s_per_epoch"] / base[r["optimizer"], r["batch_size"],
                                                                          r["method"]], 2)
        for n in ("xla", "shared"):
            if f"{n}_s_per_epoch" in r:
                r[f"{n}_vs_fused"] = round(r[f"{n}_s_per_epoch"] / r["fused_s_per_epoch"], 2)
    out = {"dataset": args.dataset, "dim": args.dim, "fraction": args.fraction, "repeats": args.repeats,
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
           "host": platform.node(), "cpus": len(tf.config.list_logical_devices("CPU")),
           "date": time.strftime("%Y-%m-%d"), "rows": rows}
    print(f"{'opt':9} {'batch':>5} {'K':>4} {'method':8} {'fused s/ep':>10} {'xla s/ep':>9} {'xla/fused':>9} "
          f"{'vs K_min':>8} {'shared s/ep':>11} {'shared/fused':>12}")
    for r in rows:
        print(f"{r['optimizer']:9} {r['batch_size']:5d} {r['negatives']:4d} {r['method']:8} "
              f"{r['fused_s_per_epoch']:10.2f} {r.get('xla_s_per_epoch', float('nan')):9.2f} "
              f"{r.get('xla_vs_fused', float('nan')):9.2f} {r['fused_vs_fused_k_min']:8.2f} "
              f"{r.get('shared_s_per_epoch', float('nan')):11.2f} {r.get('shared_vs_fused', float('nan')):12.2f}")
    print(f"peak RSS {out['peak_rss_mb']} MB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
