"""Seconds per `checkpoints/last/` save (model + LazyAdam slots + SharpCF's
trajectory table) on Gowalla-sized tables, against the seconds of an epoch.

    python -m benchmarks.checkpoint_cost                      # tables only
    python -m benchmarks.checkpoint_cost --dataset gowalla --data-dir ../shared/data --epochs 3

Without --dataset the tables have Gowalla's sizes (29,858 users, 40,981
items, dim 128, trajectory [810,128, 3]) and no training is timed. With
--dataset, SharpCF trains --epochs epochs first (XLA, as `fit` does) and the
median epoch (the first, which compiles, excluded) is the denominator. Saves
go to a folder beside the repository (--dir), as a run's would, and replace
the previous save each time, as in training. Prints JSON.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import tf_sharpcf  # noqa: F401

from benchmarks.common import add_data_flags, compiled_model
from tf_sharpcf.training import checkpointing
from tf_sharpcf.training.callbacks import EpochCounter, EpochTimer
from tf_sharpcf.data.input_pipeline import chunks_per_epoch, training_dataset
from tf_sharpcf.model import MatrixFactorization
from tf_sharpcf.optim.optimizers import make_optimizer
from tf_sharpcf.training.train import DEFAULT_BATCHES_PER_CHUNK
from tf_sharpcf.objectives.trajectory import TrajectoryTable

GOWALLA = {"num_users": 29_858, "num_items": 40_981, "num_train": 810_128}


def synthetic_state(dim: int, window: int):
    model = MatrixFactorization(GOWALLA["num_users"], GOWALLA["num_items"], dim)
    model.trajectory = TrajectoryTable(window, GOWALLA["num_train"])
    optimizer = make_optimizer("lazyadam", 5e-3)
    optimizer.build(model.trainable_variables)
    return model, optimizer, None


def trained_state(args):
    from tf_sharpcf.data.registry import load_dataset
    data = load_dataset(args.dataset, args.data_dir, False)
    model, config = compiled_model(data, "sharpcf", args.dim, window=args.window)
    optimizer = model.optimizer
    k, b = DEFAULT_BATCHES_PER_CHUNK, config.train.batch_size
    history = model.fit(training_dataset(data, b, 0, 0, args.epochs, batches_per_chunk=k), epochs=args.epochs,
                        steps_per_epoch=chunks_per_epoch(data.num_train, b, k),
                        callbacks=[EpochCounter(), EpochTimer()], verbose=0)
    return model, optimizer, history.history["seconds"]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_flags(p, dataset=None, window=3)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--saves", type=int, default=8)
    p.add_argument("--dir", default=str(Path(__file__).resolve().parents[2]))
    args = p.parse_args()
    model, optimizer, epoch_seconds = trained_state(args) if args.dataset else synthetic_state(args.dim, args.window)
    root = Path(tempfile.mkdtemp(prefix="checkpoint-cost-", dir=args.dir))
    try:
        seconds = []
        for i in range(args.saves):
            t = time.perf_counter()
            checkpointing.write(root / "last", model, optimizer, meta={"epoch": i})
            seconds.append(time.perf_counter() - t)
        size = sum(f.stat().st_size for f in (root / "last").iterdir())
        t = time.perf_counter()
        checkpointing.restore(root / "last", model, optimizer)
        restore = time.perf_counter() - t
    finally:
        shutil.rmtree(root)
    out = {"megabytes": round(size / 1e6, 1), "save_seconds": [round(s, 3) for s in seconds],
           "save_median": round(statistics.median(seconds[1:]), 3), "restore_seconds": round(restore, 3)}
    if epoch_seconds:
        epoch = statistics.median(epoch_seconds[1:])
        out.update(epoch_seconds=[round(s, 3) for s in epoch_seconds], epoch_median=round(epoch, 3),
                   save_over_epoch=round(out["save_median"] / epoch, 3))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
