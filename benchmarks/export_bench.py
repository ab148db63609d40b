"""ScaNN against brute force as exported for TF Serving: recall@k and latency.

    python -m benchmarks.export_bench --run runs/gowalla --data-dir ../shared/data
    python -m benchmarks.export_bench --data-dir ../shared/data   # random embeddings, Gowalla's shape

Trains nothing. Builds both retrievers with `tf_sharpcf.serving.retriever` (seen items
excluded, as exported), saves them as SavedModels into a temporary folder and
loads them back, as a server would. Prints

  recall@k = mean over users u of |top-k_ScaNN(u) ∩ top-k_BruteForce(u)| / k

over --eval-users random known users, and the median wall time of one
`serving_default` call at batch 1 and 256 (and per query). Without --run the
embeddings are random normal of the run's size, with the real training data
for the seen items; random embeddings have no cluster structure, so ScaNN's
recall on them is a pessimistic figure.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import tf_sharpcf  # noqa: F401  (sets the Keras-2 switch before TensorFlow is imported)
import tensorflow as tf  # noqa: E402

from tf_sharpcf.serving import layout, retriever as retrievers
from tf_sharpcf.training import run_dir
from tf_sharpcf.data.registry import load_dataset


def median_ms(fn, batch, calls: int) -> float:
    fn(user_id=batch)  # warm-up
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn(user_id=batch)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def top_ids(fn, user_ids, batch: int = 256) -> np.ndarray:
    return np.concatenate([fn(user_id=tf.constant(user_ids[i:i + batch]))["item_ids"].numpy()
                           for i in range(0, len(user_ids), batch)])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", help="a fit run folder (default: random embeddings)")
    p.add_argument("--dataset", default="gowalla")
    p.add_argument("--data-dir", help="data directory (default: the run's, else $TF_SHARPCF_DATA)")
    p.add_argument("--dim", type=int, default=64, help="size of random embeddings")
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--eval-users", type=int, default=4096)
    p.add_argument("--num-leaves", type=int)
    p.add_argument("--leaves-to-search", type=int, nargs="+", default=[None],
                   help="one ScaNN export per value (default: derived)")
    p.add_argument("--reorder", type=int, help="num_reordering_candidates (default: derived)")
    p.add_argument("--calls", type=int, default=200, help="timed calls at batch 1 (batch 256: calls / 10)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    if args.run:
        config = run_dir.load_config(Path(args.run))
        data = load_dataset(config.data.dataset, args.data_dir or config.data.data_dir, allow_download=False)
        users, items = run_dir.load_embeddings(Path(args.run))
        source = f"run {args.run}"
    else:
        data = load_dataset(args.dataset, args.data_dir, allow_download=False)
        users = rng.normal(0, 0.1, (data.num_users, args.dim)).astype(np.float32)
        items = rng.normal(0, 0.1, (data.num_items, args.dim)).astype(np.float32)
        source = f"random normal embeddings, dim {args.dim}"
    print(f"{data.describe()}; {source}; k={args.k}")

    api_users = np.asarray(retrievers.api_ids(data.user_ids, data.num_users), dtype=object)
    eval_users = api_users[rng.choice(data.num_users, min(args.eval_users, data.num_users), replace=False)]
    batch_1 = tf.constant(eval_users[:1])
    batch_256 = tf.constant(eval_users[:256])
    calls = {"1": args.calls, "256": max(5, args.calls // 10)}

    with tempfile.TemporaryDirectory() as tmp:
        def build_and_load(index, name, scann=None):
            start = time.perf_counter()
            retriever = retrievers.build_retriever(data, users, items, index, args.k, scann=scann)
            built = time.perf_counter() - start
            path = layout.save_retriever(retriever, Path(tmp), name)
            if index == "scann":
                import scann  # noqa: F401  (registers the ops for loading)
            fn = tf.saved_model.load(str(path)).signatures["serving_default"]
            return fn, built, retriever.retrieve_max

        bf, bf_build, retrieve_max = build_and_load("brute-force", "bf")
        reference = top_ids(bf, eval_users)
        rows = [{"index": "brute-force", "build_s": round(bf_build, 1), "recall": 1.0,
                 **{f"ms@{b}": median_ms(bf, x, calls[b]) for b, x in (("1", batch_1), ("256", batch_256))}}]
        for search in args.leaves_to_search:
            settings = retrievers.ScannSettings(num_leaves=args.num_leaves, num_leaves_to_search=search,
                                            num_reordering_candidates=args.reorder)
            resolved = settings.resolve(data.num_items, retrieve_max)
            fn, build, _ = build_and_load("scann", f"scann{search}", settings)
            got = top_ids(fn, eval_users)
            recall = np.mean([len(set(a) & set(b)) / args.k for a, b in zip(got, reference)])
            rows.append({"index": (f"scann leaves={resolved.num_leaves} search={resolved.num_leaves_to_search} "
                                   f"reorder={resolved.num_reordering_candidates}"),
                         "build_s": round(build, 1), "recall": float(recall),
                         **{f"ms@{b}": median_ms(fn, x, calls[b]) for b, x in (("1", batch_1), ("256", batch_256))}})

    print(f"recall@{args.k} against brute force over {len(eval_users)} users; "
          f"median latency per call (per query) over {calls['1']} / {calls['256']} calls; "
          f"R_max = k + most seen items = {retrieve_max}")
    for r in rows:
        print(f"{r['index']:<44} recall@{args.k} {r['recall']:.4f}  "
              f"batch 1: {r['ms@1']:7.2f} ms  batch 256: {r['ms@256']:8.2f} ms "
              f"({1000 * r['ms@256'] / 256:6.1f} us/query)  build {r['build_s']} s")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
