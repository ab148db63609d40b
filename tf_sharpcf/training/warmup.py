"""The BPR warm-up that BPR, APR and SharpCF runs share, and branching from it.

For one seed, the first E_start epochs of BPR, APR and SharpCF are the same
BPR epochs: APR's warm-up objective is BPR, SharpCF's trajectory term is off
before E_start, and every epoch's batches are a pure function of
(seed, epoch). The experiment runner therefore trains them once, as a run of
its own (`warmup_config`: SharpCF with λ = 0, whose gradients are BPR's and
which records the positive scores of its last W epochs), and starts each
method's run from that run's last checkpoint (`branch`). The branched run
folder holds the warm-up's history rows, best-so-far and best checkpoint, and
a training checkpoint at epoch E_start carrying the model, the optimizer
state and, for SharpCF, the E-slot trajectory (`trajectory.reslot`); the
ordinary resume (`train_and_evaluate(start=Start.resuming())`) continues it.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from tf_sharpcf.training import checkpointing, run_dir
from tf_sharpcf import losses, methods, samplers
from tf_sharpcf.config import Config
from tf_sharpcf.data.interactions import Interactions
from tf_sharpcf.objectives.trajectory import TrajectoryTable, reslot

_NEUTRAL = Config().train


def method_fields():
    """Train fields that only act after the warm-up (or only name the run):
    the method, the epoch count and every registered method's own fields.
    Runs that differ only in these share their first E_start epochs."""
    return ("method", "epochs", *methods.method_fields())


def sharing_key(config: Config) -> Config:
    """`config` with the method-only fields reset, and the fields of other
    losses and samplers than its own: equal keys, equal warm-ups. The one definition of
    what a warm-up trains (the tuner's `WarmStarts.key` reads it too)."""
    reset = (*method_fields(), *losses.unused_fields(config.train.loss),
             *samplers.unused_fields(config.train.sampler))
    return config.replace(train={f: getattr(_NEUTRAL, f) for f in reset})


def can_branch(config: Config) -> bool:
    """True when `config`'s first E_start epochs are the shared BPR warm-up:
    a method that starts from one (`methods.Method.warm_start`), or BPR
    itself, with a warm-up shorter than the run."""
    t = config.train
    method = methods.get(t.method)
    return (method.warm_start or method.name == methods.WARMUP_METHOD) and 0 < t.warmup_epochs < t.epochs


def warmup_config(configs: Sequence[Config]) -> Config:
    """The warm-up run shared by `configs` (all `can_branch`, one `sharing_key`).

    SharpCF with λ = 0 and E_start = its epochs when any of them is SharpCF
    (it records W = the largest window of the SharpCF runs), else BPR.
    """
    keys = {sharing_key(c) for c in configs}
    if len(keys) != 1 or not all(can_branch(c) for c in configs):
        raise ValueError("these runs do not share one warm-up")
    base, warm = configs[0], configs[0].train.warmup_epochs
    windows = [c.train.window for c in configs if methods.get(c.train.method).records_trajectory]
    if windows:
        return base.replace(train={"method": "sharpcf", "epochs": warm, "lam": 0.0, "window": max(windows)})
    return base.replace(train={"method": methods.WARMUP_METHOD, "epochs": warm})


def branch(warm_dir: Path, config: Config, out: Path, data: Interactions) -> None:
    """Makes `out` a run of `config` that has trained `warm_dir`'s epochs.

    `warm_dir` is a finished run of the `warmup_config` of `config`'s group. `out` is written
    in a temporary folder and renamed into place, so it is either complete or
    absent. Then `train.train_and_evaluate(config, out, data, start=train.Start.resuming())`
    trains its remaining epochs.
    """
    from tf_sharpcf.training import train
    warm_dir, out = Path(warm_dir), Path(out)
    found = checkpointing.find(warm_dir / run_dir.LAST)
    if found is None or not run_dir.is_finished(warm_dir):
        raise ValueError(f"{warm_dir}: the warm-up run has not finished")
    tmp = out.with_name(f".{out.name}.branch")
    run_dir.remove(tmp)
    tmp.mkdir(parents=True)
    best = warm_dir / run_dir.BEST
    if checkpointing.find(best) is not None:
        shutil.copytree(checkpointing.find(best), tmp / run_dir.BEST)
    for name in run_dir.EMBEDDINGS:
        if (warm_dir / name).exists():
            shutil.copy2(warm_dir / name, tmp / name)

    # The embeddings, epoch counter and optimizer state, without the warm-up's
    # W-slot table (a BPR model of the same config has the same variables).
    model, _, optimizer = train.build_model(config.replace(train={"method": methods.WARMUP_METHOD}), data)
    meta = checkpointing.restore(found, model, optimizer)
    if methods.get(config.train.method).records_trajectory:
        recorded = _recorded_trajectory(found)
        model.trajectory = TrajectoryTable(config.train.window, data.num_train)
        model.trajectory.scores.assign(reslot(recorded, meta["epoch"], config.train.window))
    rows = meta["history"]
    if not methods.get(config.train.method).records_trajectory:   # the recording is not this method's log
        rows = [{k: v for k, v in r.items() if k != "trajectory_loss"} for r in rows]
    checkpointing.write(tmp / run_dir.LAST, model, optimizer, {**meta, "history": rows})
    run_dir.write_config(tmp, config)        # tmp is out's sibling: the same relative data_dir
    run_dir.remove(out)
    os.replace(tmp, out)


def _recorded_trajectory(folder: Path) -> np.ndarray:
    """[N, W] float32: the trajectory table stored in checkpoint `folder`."""
    reader = tf.train.load_checkpoint(str(Path(folder) / checkpointing.PREFIX))
    keys = [k for k in reader.get_variable_to_shape_map() if k.startswith("model/trajectory/scores/")
            and "OPTIMIZER_SLOT" not in k]
    if len(keys) != 1:
        raise ValueError(f"{folder}: no trajectory table in the warm-up checkpoint")
    return reader.get_tensor(keys[0])


def shared_warmups(configs: Sequence[Config]) -> "list[tuple[Optional[Config], list[int]]]":
    """Groups `configs` by the warm-up they can share.

    -> [(warm-up config or None, indices into `configs`)]: runs that branch
    from one warm-up (two or more with one `sharing_key`), then each run that
    trains alone (warm-up None).
    """
    groups = {}
    for i, c in enumerate(configs):
        groups.setdefault(sharing_key(c) if can_branch(c) else ("alone", i), []).append(i)
    out = []
    for key, members in groups.items():
        if isinstance(key, Config) and len(members) > 1:
            out.append((warmup_config([configs[i] for i in members]), members))
        else:
            out.extend((None, [i]) for i in members)
    return out
