"""The tuner's shared warm starts: one BPR warm-up per key, reused by every trial.

Epochs [0, E_start) of an APR or SharpCF run (a method whose
`methods.Method.warm_start` is set) are the bare loss (BPR in the paper):
they depend on everything but the method's own fields and the epoch count
(`warmup.sharing_key`, the runner's key too) and, here, on the training
data's fingerprint instead of where it was read from. `WarmStarts` trains them once per such key into
`<directory>/warmup/<key>/` (meta.json, checkpoint/, and for a method that
`records_trajectory`, trajectory.npy: the last W epochs of scores, slot
e mod W) and hands each trial the checkpoint to start from, with its
window-E table re-slotted (`trajectory.reslot`) for SharpCF.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
import tensorflow as tf

from tf_sharpcf.training import checkpointing, train
from tf_sharpcf import methods
from tf_sharpcf.atomic import atomic_save_npy, atomic_write_text
from tf_sharpcf.training.callbacks import EpochCounter, EpochTimer
from tf_sharpcf.config import Config
from tf_sharpcf.data.interactions import Interactions
from tf_sharpcf.errors import ConfigError
from tf_sharpcf.objectives.trajectory import reslot
from tf_sharpcf.training.warmup import sharing_key

# Warm-ups record at least this many epochs of scores, so one warm-up serves
# every E in the paper's range 1..7.
MIN_RECORDED_WINDOW = 7


def warm_starts(method: str) -> bool:
    """The method's trials share a BPR warm start (`methods.Method.warm_start`)."""
    return methods.get(method).warm_start


def _records(method: str) -> bool:
    """Its warm start records a trajectory table (`methods.Method.records_trajectory`)."""
    return methods.get(method).records_trajectory


def data_fingerprint(data: Interactions) -> str:
    """sha1 of the training table: which interactions a warm-up was trained on."""
    h = hashlib.sha1()
    h.update(np.asarray([data.num_users, data.num_items], np.int64).tobytes())
    h.update(np.ascontiguousarray(data.train_users, np.int32).tobytes())
    h.update(np.ascontiguousarray(data.train_items, np.int32).tobytes())
    return h.hexdigest()


class WarmStarts:
    """Trains and caches the BPR warm-up shared by trials (`<root>/<key>/`).

    `data` is what the trials train on (the validation split's training part).
    `window` is W, the number of epochs of scores a SharpCF warm-up records.
    """

    def __init__(self, root: Path, data: Interactions, window: int = MIN_RECORDED_WINDOW):
        self.root, self.data, self.window = Path(root), data, int(window)
        self.fingerprint = data_fingerprint(data)

    def key_fields(self, config: Config) -> Dict[str, Any]:
        """What the warm-up of `config` trains: `warmup.sharing_key`'s model and
        train fields (a warm-up does not evaluate, and is trained on
        `data`, named by its fingerprint), and the recorded window."""
        key = sharing_key(config).replace(train={"checkpoint_every": 1})
        return {"data": self.fingerprint, "model": dataclasses.asdict(key.model),
                "train": dataclasses.asdict(key.train),
                "recorded_window": self.window if _records(config.train.method) else 0}

    def key(self, config: Config) -> str:
        text = json.dumps(self.key_fields(config), sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    def applies(self, config: Config) -> bool:
        t = config.train
        return warm_starts(t.method) and 0 < t.warmup_epochs < t.epochs

    def folder(self, config: Config) -> Path:
        return self.root / self.key(config)

    def ensure(self, config: Config) -> Tuple[Dict[str, Any], bool]:
        """Trains the warm-up of `config` unless cached; -> (its meta, trained now)."""
        folder = self.folder(config)
        if checkpointing.find(folder / "checkpoint") is not None:
            return checkpointing.read_meta(checkpointing.find(folder / "checkpoint")), False
        return self._train(config, folder), True

    def info(self, config: Config, train_missing: bool = True) -> Dict[str, Any]:
        """{"key", "reused", "seconds", "epochs"} of `config`'s warm-up, trained
        if missing; with train_missing=False (a trial that goes on from its own
        checkpoint, e.g. one whose warm-up was cached under an older key) a
        missing warm-up is reported as not reused, 0 s, and not trained."""
        if not self.applies(config):
            return {"key": None, "reused": False, "seconds": 0.0, "epochs": 0}
        if not train_missing and checkpointing.find(self.folder(config) / "checkpoint") is None:
            return {"key": self.key(config), "reused": False, "seconds": 0.0, "epochs": config.train.warmup_epochs}
        meta, trained = self.ensure(config)
        return {"key": meta["key"], "reused": not trained, "seconds": meta["seconds"], "epochs": meta["epochs"]}

    def _train(self, config: Config, folder: Path) -> Dict[str, Any]:
        t = config.train
        tf.keras.utils.set_random_seed(t.seed)
        # The BPR model of `config`: same initial embeddings and optimizer as the
        # trial's own model, without the trial's table (its shape depends on E).
        model, _, optimizer = train.build_model(config.replace(train={"method": methods.WARMUP_METHOD}), self.data)
        # A recording method with λ = 0 and a W-epoch table: its gradients are
        # the bare loss's exactly (the term is off before E_start, and λ = 0).
        warm = (config.replace(train={"lam": 0.0, "window": self.window}) if _records(t.method)
                else config.replace(train={"method": methods.WARMUP_METHOD}))
        objective = methods.make_objective(warm.train, self.data.num_train)
        table = getattr(objective, "table", None) if _records(t.method) else None
        start = time.perf_counter()
        train.fit_phase(model, objective, optimizer, self.data, t, 0, t.warmup_epochs,
                        [EpochCounter(), EpochTimer()])
        seconds = time.perf_counter() - start
        meta = {"key": folder.name, "epochs": t.warmup_epochs, "seconds": seconds,
                "recorded_window": self.window if table is not None else 0, **self.key_fields(config)}
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / "meta.json", json.dumps(meta, indent=2))
        if table is not None:
            atomic_save_npy(folder / "trajectory.npy", table.scores.numpy())
        # Written last: its presence marks a complete warm-up.
        checkpointing.write(folder / "checkpoint", model, optimizer, meta)
        return meta

    def checkpoint(self, config: Config, scratch: Path) -> Tuple[Optional[Path], Dict[str, Any]]:
        """The checkpoint a trial of `config` starts from, and how it was got.

        -> (folder for `train.Start.branch(folder, epoch)` or None when
        the method has no warm-up, info {"key", "reused", "seconds", "epochs"}).
        For SharpCF the folder is written under `scratch`: the warm-up's model
        and optimizer with a window-E table (see the module docstring).
        """
        info = self.info(config)
        if info["key"] is None:
            return None, info
        folder = self.folder(config)
        if not _records(config.train.method):
            return checkpointing.find(folder / "checkpoint"), info
        return self._with_window(config, folder, Path(scratch)), info

    def _with_window(self, config: Config, folder: Path, out: Path) -> Path:
        t = config.train
        model, _, optimizer = train.build_model(config, self.data)
        meta = checkpointing.restore(checkpointing.find(folder / "checkpoint"), model, optimizer)
        # The optimizer's slots are restored when created; create them now so
        # that the checkpoint written below carries them.
        optimizer.build(model.trainable_variables)
        recorded = np.load(folder / "trajectory.npy")                    # [N, W], slot e mod W
        if t.window > recorded.shape[1]:
            raise ConfigError(f"invalid --window: {t.window} exceeds the {recorded.shape[1]} epochs "
                              "the warm-up recorded")
        model.trajectory.scores.assign(reslot(recorded, t.warmup_epochs, t.window))
        return checkpointing.write(out, model, optimizer, meta)
