"""Training-state checkpoints written atomically.

A training checkpoint holds the model (embeddings, the `epoch` counter and
the objective's state, e.g. SharpCF's trajectory table) and the optimizer (its slots and step
count), plus a `meta.json`. It is written into a temporary folder beside the
target and renamed into place, so a crash or a full disk during a save leaves
the previous checkpoint usable:

  write .last.tmp/  ->  rename last/ to .last.old/  ->  rename .last.tmp/ to last/

`.last.old/`, the previous checkpoint, stays until the next save. `meta.json`
records each file's size and CRC-32; a checkpoint that is incomplete, fails
them or does not load is passed over for the previous one, with a warning
naming both (`restore`), or is a clear error if there is none. A process
killed between the two renames leaves only `.last.old/`; `find` falls back to
it and the next `write` puts it back first.
"""
from __future__ import annotations

import json
import os
import warnings
import zlib
from pathlib import Path
from typing import Dict, Optional, Tuple

import tensorflow as tf

from tf_sharpcf.errors import DataError
from tf_sharpcf.atomic import WriteError, fsync_path, remove
from tf_sharpcf.optim.sparse import is_sharded

PREFIX = "ckpt"
# What reading variables held by another process raises when that process is
# gone (ParameterServerStrategy). For such a model, `write` and `restore` raise
# these as they are (the cluster lost a task; not a failed write, not a bad
# checkpoint), and `cluster.is_server_loss` recognises them (`is_lost_peer`).
LOST_PEER = (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError)
# ... and what gRPC says when it cannot reach the process at all, which
# TensorFlow may raise as another error class (UnknownError "failed to connect
# to all addresses; last error: UNKNOWN: ... Connection refused").
_LOST_PEER_TEXT = ("failed to connect to all addresses", "Connection refused", "Connection reset by peer",
                   "Socket closed")
SHARDS = "table_shards"     # meta.json: how many parameter servers the tables were split across


def is_lost_peer(err: BaseException) -> bool:
    """True for an error that says a process holding variables is gone
    (`LOST_PEER`, or gRPC's words for an unreachable server in any TensorFlow
    error), not that a read or a write failed."""
    if isinstance(err, LOST_PEER):
        return True
    return isinstance(err, tf.errors.OpError) and any(t in (err.message or "") for t in _LOST_PEER_TEXT)


def _remote(model) -> bool:
    """The model's tables live on parameter servers: split across several
    (a `ShardedVariable`), or whole on one (a variable placed on a ps task)."""
    table = getattr(model, "user_embedding", None)
    return is_sharded(table) or "/job:ps/" in (getattr(table, "device", None) or "")


def _shards(model) -> int:
    """How many parameter servers hold the tables (of a `_remote` model)."""
    return len(model.user_embedding.variables) if is_sharded(model.user_embedding) else 1


def training_checkpoint(model, optimizer=None) -> tf.train.Checkpoint:
    parts = {"model": model}
    if optimizer is not None:
        parts["optimizer"] = optimizer
    return tf.train.Checkpoint(**parts)


def _siblings(folder: Path):
    return folder.with_name(f".{folder.name}.tmp"), folder.with_name(f".{folder.name}.old")


def _complete(folder: Path) -> bool:
    return (folder / f"{PREFIX}.index").exists() and (folder / "meta.json").exists()


FILES = "files"     # meta.json: {file name: [size, crc32]} of the checkpoint's other files


def _digest(path: Path) -> Tuple[int, int]:
    crc, size = 0, 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            crc, size = zlib.crc32(chunk, crc), size + len(chunk)
    return size, crc


def problem(folder: Path) -> Optional[str]:
    """Why the checkpoint in `folder` cannot be used, or None: files missing,
    truncated or changed (size and CRC-32 against meta.json)."""
    folder = Path(folder)
    if not _complete(folder):
        return f"incomplete ({PREFIX}.index or meta.json missing)"
    try:
        files = json.loads((folder / "meta.json").read_text()).get(FILES, {})
    except (OSError, ValueError, AttributeError):
        return "meta.json unreadable"
    for name, (size, crc) in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} missing"
        got_size, got_crc = _digest(path)
        if got_size != size:
            return f"{name} truncated ({got_size} of {size} bytes)"
        if got_crc != crc:
            return f"{name} fails its checksum"
    return None


def exists(folder: Path) -> bool:
    """True when a checkpoint was written at `folder` (usable or not)."""
    return any(p.is_dir() for p in (Path(folder), _siblings(Path(folder))[1]))


def find(folder: Path) -> Optional[Path]:
    """The usable checkpoint at `folder`: the folder itself, else the previous
    one (`.<name>.old`); None if neither passes `problem`."""
    folder = Path(folder)
    old = _siblings(folder)[1]
    for candidate in (folder, old):
        if problem(candidate) is None:
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
        remove(tmp)
        training_checkpoint(model, optimizer).write(str(tmp / PREFIX))
        files = {p.name: list(_digest(p)) for p in sorted(tmp.iterdir()) if p.is_file()}
        shards = {SHARDS: _shards(model)} if _remote(model) else {}
        (tmp / "meta.json").write_text(json.dumps({**(meta or {}), **shards, FILES: files}, indent=2))
        fsync_path(tmp)                       # its files and entries, before the renames
        if folder.exists():
            remove(old)
            os.replace(folder, old)           # the previous checkpoint, kept until the next save
        os.replace(tmp, folder)
        fsync_path(folder.parent, files=False)
    except (OSError, tf.errors.OpError) as e:
        remove(tmp)
        if is_lost_peer(e) and _remote(model):
            raise              # not the disk: a parameter server holding the variables is gone
        raise WriteError(folder, e) from None
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
    folder = Path(folder)
    if optimizer is not None:
        optimizer.build(model.trainable_variables)
    passed = []
    for candidate in (folder, _siblings(folder)[1]):
        if not candidate.is_dir():
            continue
        why = problem(candidate)
        if why is None and _remote(model):
            written, now = read_meta(candidate).get(SHARDS, 1), _shards(model)
            if written != now:
                raise DataError(f"{candidate}: its tables were split across {written} parameter server(s), "
                                f"this cluster has {now}; the optimizer's slots are saved per shard, so "
                                f"resume with {written} ps tasks")
        if why is None:
            try:
                training_checkpoint(model, optimizer).read(str(candidate / PREFIX)).expect_partial()
            except (tf.errors.OpError, ValueError, AssertionError) as e:
                if is_lost_peer(e) and _remote(model):
                    raise
                why = f"does not load ({str(e).splitlines()[0][:200]})"
            else:
                if passed:
                    warnings.warn(f"checkpoint {'; '.join(passed)}: using the previous one, {candidate}",
                                  stacklevel=2)
                return read_meta(candidate)
        passed.append(f"{candidate} {why}")
    raise DataError(f"{folder}: no usable checkpoint" + (f" ({'; '.join(passed)})" if passed else " found"))


def model_attributes(folder: Path) -> set:
    """The names of the model's attributes whose variables the checkpoint in
    `folder` holds (`model/<name>/...`: the embeddings, `epoch`, an objective's
    state attached by `train.attach_state`)."""
    reader = tf.train.load_checkpoint(str(Path(folder) / PREFIX))
    return {key.split("/")[1] for key in reader.get_variable_to_shape_map() if key.startswith("model/")}
