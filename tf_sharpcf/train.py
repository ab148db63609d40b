"""`train_and_evaluate(config, workdir)`: orchestration only.

Loads the data, builds the model, objective and optimizer, runs `fit` in two
phases (the objective's warm-up for epochs [0, E_start), then the objective),
and writes the run's files into `workdir`:

  config.json, history.csv, metrics.json, tensorboard/,
  checkpoints/best/ (tf.train checkpoint of the best evaluated epoch),
  user_embeddings.npy, item_embeddings.npy (best epoch).
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Dict, Optional

import tensorflow as tf

from tf_sharpcf import checkpointing
from tf_sharpcf.callbacks import (BestCheckpoint, EpochCounter, EpochTimer, Evaluate, History,
                                  atomic_write_text)
from tf_sharpcf.config import Config
from tf_sharpcf.datasets import Interactions, load_dataset
from tf_sharpcf.evaluation import Evaluator
from tf_sharpcf.input_pipeline import chunks_per_epoch, training_dataset
from tf_sharpcf.model import MatrixFactorization
from tf_sharpcf.objectives import APR, SharpCF, make_objective
from tf_sharpcf.optimizers import make_optimizer

# Batches trained per call into the compiled graph when the config says 0:
# enough that the tables stay in place under XLA for most of an epoch.
DEFAULT_BATCHES_PER_CHUNK = 128
HISTORY_COLUMNS = ("loss", "bpr_loss", "reg_loss", "trajectory_loss", "adversarial_loss", "seconds")


def load_data(config: Config) -> Interactions:
    return load_dataset(config.data.dataset, config.data.data_dir, config.data.download)


def build_model(config: Config, data: Interactions):
    """-> (model, objective, optimizer); the model is not compiled yet."""
    objective = make_objective(config.train, data.num_train)
    model = MatrixFactorization(data.num_users, data.num_items, config.model.dim,
                                config.model.init_std, seed=config.train.seed)
    if isinstance(objective, SharpCF):
        model.trajectory = objective.table      # tracked, so checkpoints carry the table
    optimizer = make_optimizer(config.train.optimizer, config.train.lr)
    return model, objective, optimizer


def phases(objective, warmup_epochs: int, epochs: int):
    """[(start, end, objective)] with the warm-up objective first when it differs."""
    warm = objective.warmup()
    if warm is objective or warmup_epochs <= 0:
        return [(0, epochs, objective)]
    split = min(warmup_epochs, epochs)
    out = [(0, split, warm)]
    if split < epochs:
        out.append((split, epochs, objective))
    return out


def train_and_evaluate(config: Config, workdir: Path, data: Optional[Interactions] = None,
                       verbose: int = 1, init_checkpoint: Optional[Path] = None,
                       start_epoch: int = 0) -> Dict:
    """Trains `config` and writes the run into `workdir` (created if missing).

    With `init_checkpoint` (a folder written by `checkpointing.write`), the
    model and optimizer state are restored from it first and training starts
    at `start_epoch` (0-based), e.g. after a shared warm-up. Returns the
    contents of metrics.json.
    """
    config.validate()
    data = data if data is not None else load_data(config)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(workdir / "config.json", config.to_json())

    t, e = config.train, config.eval
    tf.keras.utils.set_random_seed(t.seed)
    model, objective, optimizer = build_model(config, data)
    if init_checkpoint is not None:
        checkpointing.restore(init_checkpoint, model, optimizer)
    evaluator = Evaluator(data, e.ks, e.user_batch)
    metric_names = [f"{m}@{k}" for k in evaluator.ks for m in ("recall", "ndcg")]
    history = History(workdir / "history.csv", [*HISTORY_COLUMNS, *metric_names, "eval_seconds"],
                      workdir / "tensorboard", verbose=verbose)
    best = BestCheckpoint(workdir, monitor=f"recall@{evaluator.ks[-1]}")
    k = t.steps_per_execution or DEFAULT_BATCHES_PER_CHUNK
    callbacks = [EpochCounter(), EpochTimer(), Evaluate(evaluator, e.eval_every, t.epochs), history, best]

    for start, end, phase_objective in phases(objective, t.warmup_epochs, t.epochs):
        start = max(start, start_epoch)
        if start >= end:
            continue
        model.set_objective(phase_objective)
        model.compile(optimizer=optimizer, jit_compile=t.jit_compile)
        model.fit(training_dataset(data, t.batch_size, t.seed, start, end, batches_per_chunk=k),
                  initial_epoch=start, epochs=end,
                  steps_per_epoch=chunks_per_epoch(data.num_train, t.batch_size, k),
                  callbacks=callbacks, verbose=1 if verbose > 1 else 0)

    final_row = history.rows[-1]
    metrics = {
        "method": t.method,
        "dataset": data.name,
        "best": best.best,
        "final": {"epoch": final_row["epoch"], **{m: final_row[m] for m in metric_names}},
        "seconds_per_epoch": statistics.median(r["seconds"] for r in history.rows),
        "eval_seconds": statistics.median(r["eval_seconds"] for r in history.rows if "eval_seconds" in r),
        "epochs": t.epochs,
        "num_users": data.num_users,
        "num_items": data.num_items,
        "num_train": data.num_train,
    }
    atomic_write_text(workdir / "metrics.json", json.dumps(metrics, indent=2))
    return metrics
