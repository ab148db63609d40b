"""Memory of the tables one replica holds: user/item embeddings, LazyAdam's
two slots per table, and SharpCF's trajectory table; docs/scaling.md quotes it.

    python -m benchmarks.table_memory                        # Gowalla's sizes
    python -m benchmarks.table_memory --scale 8              # 8x the rows: linear?
    python -m benchmarks.table_memory --dataset gowalla --data-dir ../shared/data

Builds the model, the optimizer's slots and the trajectory table (dim 128,
E = 3 by default) and prints JSON: bytes per user/item row and per training
interaction from the variables' shapes, and the resident memory (RSS) the
process gained while building them, in MB. With --dataset, one SharpCF epoch
is trained (XLA, chunks of 128 batches, as `fit` does) and the peak RSS over
the build is added: the transient memory of the step (gathered batch rows,
gradients, the input pipeline) on top of the tables.
"""
from __future__ import annotations

import argparse
import json
import resource

import tf_sharpcf  # noqa: F401
import tensorflow as tf

from benchmarks.common import add_data_flags
from tf_sharpcf.training.callbacks import EpochCounter
from tf_sharpcf.config import Config
from tf_sharpcf.training.train import DEFAULT_BATCHES_PER_CHUNK, build_model

GOWALLA = {"num_users": 29_858, "num_items": 40_981, "num_train": 810_128}


def rss_mb() -> float:
    """Current resident set size of this process, MB (from /proc)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 1e6


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


class Sizes:
    """Row counts standing in for a dataset (`build_model` reads only these)."""

    def __init__(self, num_users, num_items, num_train):
        self.num_users, self.num_items, self.num_train = num_users, num_items, num_train


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_flags(p, dataset=None, window=3)
    p.add_argument("--scale", type=int, default=1, help="multiply Gowalla's row counts (without --dataset)")
    args = p.parse_args()
    config = Config().replace(model={"dim": args.dim},
                              train={"method": "sharpcf", "warmup_epochs": 0, "window": args.window})
    if args.dataset:
        from tf_sharpcf.data.registry import load_dataset
        data = load_dataset(args.dataset, args.data_dir, False)
    else:
        data = Sizes(*(args.scale * GOWALLA[k] for k in ("num_users", "num_items", "num_train")))
    tf.zeros([1]).numpy()                       # start the runtime before the baseline
    before = rss_mb()
    model, objective, optimizer = build_model(config, data)
    optimizer.build(model.trainable_variables)
    built = rss_mb()

    def nbytes(variables):
        return sum(v.shape.num_elements() * v.dtype.size for v in variables)

    tables = nbytes(model.trainable_variables)
    slots = nbytes([v for v in optimizer.variables if v.shape.rank == 2])
    trajectory = nbytes([objective.table.scores])
    rows = data.num_users + data.num_items
    out = {
        "num_users": data.num_users, "num_items": data.num_items, "num_train": data.num_train,
        "dim": args.dim, "window": args.window,
        "bytes_per_row": {"embedding": tables / rows, "lazyadam_slots": slots / rows,
                          "total": (tables + slots) / rows},
        "bytes_per_interaction": {"trajectory": trajectory / data.num_train},
        "variables_mb": {name: round(size / 1e6, 1) for name, size in (
            ("embeddings", tables), ("lazyadam_slots", slots), ("trajectory", trajectory),
            ("total", tables + slots + trajectory))},
        "rss_gain_building_mb": round(built - before, 1),
    }
    if args.dataset:
        from tf_sharpcf.data.input_pipeline import chunks_per_epoch, training_dataset
        model.set_objective(objective)
        model.compile(optimizer=optimizer, jit_compile=True)
        k, b = DEFAULT_BATCHES_PER_CHUNK, config.train.batch_size
        model.fit(training_dataset(data, b, 0, 0, 1, batches_per_chunk=k), epochs=1,
                  steps_per_epoch=chunks_per_epoch(data.num_train, b, k), callbacks=[EpochCounter()], verbose=0)
        out["rss_after_epoch_mb"] = round(rss_mb() - before, 1)
        out["peak_rss_mb"] = round(peak_rss_mb(), 1)
        out["rss_baseline_mb"] = round(before, 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
