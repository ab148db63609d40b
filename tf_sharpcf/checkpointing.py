"""Training-state checkpoints written atomically.

A training checkpoint holds the model (embeddings, the `epoch` counter and,
for SharpCF, the trajectory table) and the optimizer (its slots and step
count). It is written into a temporary folder beside the target and renamed
into place, so a crash during a save leaves the previous checkpoint usable.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Dict, Optional

import tensorflow as tf

from tf_sharpcf.errors import DataError

PREFIX = "ckpt"


def training_checkpoint(model, optimizer=None) -> tf.train.Checkpoint:
    parts = {"model": model}
    if optimizer is not None:
        parts["optimizer"] = optimizer
    return tf.train.Checkpoint(**parts)


def write(folder: Path, model, optimizer=None, meta: Optional[Dict] = None) -> Path:
    """Writes the checkpoint (+ `meta.json`) to `folder`, replacing it atomically."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp")
    old = folder.with_name(f".{folder.name}.old")
    for stale in (tmp, old):
        if stale.exists():
            shutil.rmtree(stale)
    training_checkpoint(model, optimizer).write(str(tmp / PREFIX))
    (tmp / "meta.json").write_text(json.dumps(meta or {}, indent=2))
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    if old.exists():
        shutil.rmtree(old)
    return folder


def read_meta(folder: Path) -> Dict:
    path = Path(folder) / "meta.json"
    if not path.exists():
        raise DataError(f"{folder}: not a tf_sharpcf checkpoint (no meta.json)")
    return json.loads(path.read_text())


def restore(folder: Path, model, optimizer=None) -> Dict:
    """Restores `folder` into model (and optimizer); returns its meta.

    Optimizer slots that do not exist yet are restored when first created.
    """
    folder = Path(folder)
    if not (folder / f"{PREFIX}.index").exists():
        raise DataError(f"{folder}: no checkpoint found ({PREFIX}.index missing)")
    training_checkpoint(model, optimizer).read(str(folder / PREFIX)).expect_partial()
    return read_meta(folder)
