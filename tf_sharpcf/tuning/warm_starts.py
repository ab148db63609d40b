"""The tuner's shared warm starts: one BPR warm-up per key, reused by every trial.

Epochs [0, E_start) of an APR or SharpCF run (a method whose
`methods.Method.warm_start` is set) are the bare loss (BPR in the paper):
they depend on everything but the method's own fields and the epoch count
(`warmup.sharing_key`, the runner's key too) and, here, on the training
data's fingerprint instead of where it was read from. `WarmStarts` trains
them once per such key into `<directory>/warmup/<key>/` (meta.json and
checkpoint/) and hands each trial the checkpoint to start from. The warm-up
is the runner's (`warmup.warmup_config`): for a method with a
`methods.Recording` it records W epochs of state in its checkpoint (SharpCF's
table, slot e mod W), and a trial starts from `warmup.continue_from` (its
window-E table re-slotted). A warm-up cached by an older version, with that
state in trajectory.npy beside its checkpoint, is an error that names its
folder: delete it to train it again.
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

from tf_sharpcf.training import checkpointing, train, warmup
from tf_sharpcf import methods
from tf_sharpcf.atomic import atomic_write_text
from tf_sharpcf.training.callbacks import EpochCounter, EpochTimer
from tf_sharpcf.config import Config
from tf_sharpcf.data.interactions import Interactions
from tf_sharpcf.errors import ConfigError, DataError
from tf_sharpcf.training.warmup import sharing_key

# Warm-ups record at least this many epochs of scores, so one warm-up serves
# every E in the paper's range 1..7.
MIN_RECORDED_WINDOW = 7


def warm_starts(method: str) -> bool:
    """The method's trials share a BPR warm start (`methods.Method.warm_start`)."""
    return methods.get(method).warm_start


def _records(method: str) -> bool:
    """Its warm start records state for the trial (`methods.Method.recording`)."""
    return methods.get(method).recording is not None


def data_fingerprint(data: Interactions) -> str:
    """sha1 of the training table: which interactions a warm-up was trained on."""
    h = hashlib.sha1()
    h.update(np.asarray([data.num_users, data.num_items], np.int64).tobytes())
    h.update(np.ascontiguousarray(data.train_users, np.int32).tobytes())
    h.update(np.ascontiguousarray(data.train_items, np.int32).tobytes())
    return h.hexdigest()


# Train fields added after warm-ups were first cached, with the value every
# older warm-up trained at: left out of the key at that value, so those
# caches keep their keys (method_lr is always 0 in a warm-up: a method field).
_ADDED_LATER = {"method_lr": 0.0, "initial_accumulator": 0.1}


class WarmStarts:
    """Trains and caches the BPR warm-up shared by trials (`<root>/<key>/`).

    `data` is what the trials train on (the validation split's training part).
    `window` is W, the number of epochs of state a recording warm-up keeps
    (SharpCF's scores; `methods.Recording`).
    """

    def __init__(self, root: Path, data: Interactions, window: int = MIN_RECORDED_WINDOW):
        self.root, self.data, self.window = Path(root), data, int(window)
        self.fingerprint = data_fingerprint(data)

    def key_fields(self, config: Config) -> Dict[str, Any]:
        """What the warm-up of `config` trains: `warmup.sharing_key`'s model and
        train fields (a warm-up does not evaluate, and is trained on
        `data`, named by its fingerprint), and the recorded window."""
        key = sharing_key(config).replace(train={"checkpoint_every": 1})
        train = {k: v for k, v in dataclasses.asdict(key.train).items()
                 if k not in _ADDED_LATER or v != _ADDED_LATER[k]}
        return {"data": self.fingerprint, "model": dataclasses.asdict(key.model), "train": train,
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

    def warmup_config(self, config: Config) -> Config:
        """The warm-up of `config` (`warmup.warmup_config`): the bare loss, or
        its method's recording objective keeping W = `window` epochs of state
        (gradients the bare loss's exactly: SharpCF with λ = 0). ConfigError
        if a run of `config` reads more epochs of it than W."""
        recording = methods.get(config.train.method).recording
        if recording is not None and recording.needs(config.train) > self.window:
            raise ConfigError(f"invalid {recording.span.flag}: {recording.needs(config.train)} exceeds the "
                              f"{self.window} epochs the warm-up recorded")
        return warmup.warmup_config([config], self.window)

    def _train(self, config: Config, folder: Path) -> Dict[str, Any]:
        t = config.train
        tf.keras.utils.set_random_seed(t.seed)
        # Same initial embeddings and optimizer as the trial's own model; the
        # recording objective's state is the model's, so the checkpoint holds it.
        model, objective, optimizer = train.build_model(self.warmup_config(config), self.data)
        start = time.perf_counter()
        train.fit_phase(model, objective, optimizer, self.data, t, 0, t.warmup_epochs,
                        [EpochCounter(), EpochTimer()])
        seconds = time.perf_counter() - start
        meta = {"key": folder.name, "epochs": t.warmup_epochs, "seconds": seconds,
                "recorded_window": self.window if _records(t.method) else 0, **self.key_fields(config)}
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / "meta.json", json.dumps(meta, indent=2))
        # Written last: its presence marks a complete warm-up.
        checkpointing.write(folder / "checkpoint", model, optimizer, meta)
        return meta

    def checkpoint(self, config: Config, scratch: Path) -> Tuple[Optional[Path], Dict[str, Any]]:
        """The checkpoint a trial of `config` starts from, and how it was got.

        -> (folder for `train.Start.branch(folder, epoch)` or None when
        the method has no warm-up, info {"key", "reused", "seconds", "epochs"}).
        For a method with a `methods.Recording` (SharpCF) the folder is
        written under `scratch`: `warmup.continue_from` the warm-up, e.g. its
        model and optimizer with a window-E table.
        """
        info = self.info(config)
        if info["key"] is None:
            return None, info
        folder = self.folder(config)
        found = checkpointing.find(folder / "checkpoint")
        recording = methods.get(config.train.method).recording
        if recording is None:
            return found, info
        try:
            model, optimizer, meta = warmup.continue_from(found, self.warmup_config(config), config, self.data)
        except DataError as e:
            legacy = sorted(p.name for p in folder.glob("*.npy"))     # how older versions kept the state
            if not legacy:
                raise
            raise DataError(f"{e}; {folder} is a warm-up cached by an older version (its recorded state in "
                            f"{', '.join(legacy)}, not in its checkpoint): delete that folder to train it "
                            "again") from None
        return checkpointing.write(Path(scratch), model, optimizer, meta), info
