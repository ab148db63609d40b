"""Training-state checkpoints written atomically.

A training checkpoint holds the model (embeddings, the `epoch` counter and,
for SharpCF, the trajectory table) and the optimizer (its slots and step
count), plus a `meta.json`. It is written into a temporary folder beside the
target and renamed into place, so a crash or a full disk during a save leaves
the previous checkpoint usable:

  write .last.tmp/  ->  rename last/ to .last.old/  ->  rename .last.tmp/ to last/

A process killed between the two renames leaves only `.last.old/`; `find`
falls back to it and the next `write` puts it back first.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Optional

import tensorflow as tf

from tf_sharpcf.errors import DataError
from tf_sharpcf.run_dir import WriteError, fsync_path, remove

PREFIX = "ckpt"


def training_checkpoint(model, optimizer=None) -> tf.train.Checkpoint:
    parts = {"model": model}
    if optimizer is not None:
        parts["optimizer"] = optimizer
    return tf.train.Checkpoint(**parts)


def _siblings(folder: Path):
    return folder.with_name(f".{folder.name}.tmp"), folder.with_name(f".{folder.name}.old")


def _complete(folder: Path) -> bool:
    return (folder / f"{PREFIX}.index").exists() and (folder / "meta.json").exists()


def find(folder: Path) -> Optional[Path]:
    """The usable checkpoint at `folder`: the folder itself, else the previous
    one left as `.<name>.old` by a save that was cut short; None if neither."""
    folder = Path(folder)
    old = _siblings(folder)[1]
    for candidate in (folder, old):
        if _complete(candidate):
            return candidate
    return None


def write(folder: Path, model, optimizer=None, meta: Optional[Dict] = None) -> Path:
    """Writes the checkpoint (+ `meta.json`) to `folder`, replacing it atomically.

    Raises `WriteError` (the previous checkpoint intact) if the disk is full
    or the folder is not writable.
    """
    folder = Path(folder)
    tmp, old = _siblings(folder)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        if not folder.exists() and _complete(old):
            os.replace(old, folder)          # a save was cut short between its renames
        for stale in (tmp, old):
            remove(stale)
        training_checkpoint(model, optimizer).write(str(tmp / PREFIX))
        (tmp / "meta.json").write_text(json.dumps(meta or {}, indent=2))
        fsync_path(tmp)                       # its files and entries, before the renames
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
        fsync_path(folder.parent, files=False)
    except (OSError, tf.errors.OpError) as e:
        remove(tmp)
        raise WriteError(folder, e) from None
    remove(old)
    return folder


def read_meta(folder: Path) -> Dict:
    path = Path(folder) / "meta.json"
    if not path.exists():
        raise DataError(f"{folder}: not a tf_sharpcf checkpoint (no meta.json)")
    return json.loads(path.read_text())


def restore(folder: Path, model, optimizer=None) -> Dict:
    """Restores `folder` (or its `.old` fallback, see `find`) into model (and
    optimizer); returns its meta.

    The optimizer's slots are created first (`build`), so they are restored
    now rather than deferred to the first step.
    """
    found = find(folder)
    if found is None:
        raise DataError(f"{folder}: no checkpoint found ({PREFIX}.index or meta.json missing)")
    if optimizer is not None:
        optimizer.build(model.trainable_variables)
    training_checkpoint(model, optimizer).read(str(found / PREFIX)).expect_partial()
    return read_meta(found)
