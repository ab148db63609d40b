"""Per-epoch hooks around `fit`: the epoch counter, timing, evaluation, the
history file and TensorBoard scalars, and the best-epoch checkpoint."""
from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from tf_sharpcf import checkpointing
from tf_sharpcf.evaluation import Evaluator


class EpochCounter(tf.keras.callbacks.Callback):
    """Sets `model.epoch` (0-based) before each epoch; SharpCF's slot depends on it."""

    def on_epoch_begin(self, epoch, logs=None):
        self.model.epoch.assign(epoch)


class NonFiniteLoss(RuntimeError):
    pass


class EpochTimer(tf.keras.callbacks.Callback):
    """Adds `seconds` (training time of the epoch, evaluation excluded) to the logs."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs["seconds"] = time.perf_counter() - self._start
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteLoss(f"non-finite loss ({loss}) in epoch {epoch + 1}")


class Evaluate(tf.keras.callbacks.Callback):
    """Full-ranking evaluation every `every` epochs and after the last one."""

    def __init__(self, evaluator: Evaluator, every: int, last_epoch: int):
        super().__init__()
        self.evaluator, self.every, self.last_epoch = evaluator, every, last_epoch

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every == 0 or epoch + 1 == self.last_epoch:
            logs.update(self.evaluator.evaluate(self.model.user_embedding, self.model.item_embedding))


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


class History(tf.keras.callbacks.Callback):
    """Writes `history.csv` (one row per epoch, fixed columns), TensorBoard
    scalars, and a one-line summary per epoch."""

    def __init__(self, path: Path, columns: Sequence[str], tensorboard_dir: Optional[Path] = None,
                 rows: Optional[List[Dict]] = None, verbose: int = 1):
        super().__init__()
        self.path, self.columns, self.verbose = path, ["epoch", *columns], verbose
        self.rows: List[Dict] = list(rows or [])
        self.writer = tf.summary.create_file_writer(str(tensorboard_dir)) if tensorboard_dir else None

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in logs.items() if k in self.columns}}
        self.rows.append(row)
        self.flush()
        if self.writer:
            with self.writer.as_default(step=epoch + 1):
                for k, v in row.items():
                    if k != "epoch":
                        tf.summary.scalar(k, v)
            self.writer.flush()
        if self.verbose:
            parts = [f"epoch {epoch + 1}"] + [f"{k} {row[k]:.4f}" for k in self.columns[1:]
                                              if k in row and k not in ("seconds", "eval_seconds")]
            parts.append(f"{row.get('seconds', 0):.2f}s")
            if "eval_seconds" in row:
                parts.append(f"eval {row['eval_seconds']:.2f}s")
            print(" | ".join(parts), file=sys.stderr, flush=True)

    def flush(self):
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.columns, restval="")
            w.writeheader()
            for row in self.rows:
                w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        os.replace(tmp, self.path)


class BestCheckpoint(tf.keras.callbacks.Callback):
    """Keeps the best evaluated epoch (by `monitor`): a tf.train checkpoint of
    the model, and `user_embeddings.npy` / `item_embeddings.npy`."""

    def __init__(self, workdir: Path, monitor: str = "recall@20", best: Optional[Dict] = None):
        super().__init__()
        self.workdir, self.monitor = workdir, monitor
        self.best: Optional[Dict] = best

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor not in logs:
            return
        if self.best is not None and logs[self.monitor] <= self.best[self.monitor]:
            return
        self.best = {"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()
                                            if k.startswith(("recall@", "ndcg@"))}}
        checkpointing.write(self.workdir / "checkpoints" / "best", self.model, meta=self.best)
        atomic_save_npy(self.workdir / "user_embeddings.npy", self.model.user_embedding.numpy())
        atomic_save_npy(self.workdir / "item_embeddings.npy", self.model.item_embedding.numpy())
