"""The run's output folder: its layout, atomic writes, and what it holds.

A run folder (`fit --output-dir`) holds

  config.json, history.csv, metrics.json, tensorboard/,
  checkpoints/best/ (the best evaluated epoch), checkpoints/last/ (the
  training state to resume from), user_embeddings.npy, item_embeddings.npy.

Every file is written under a temporary name beside its target and renamed
into place (`os.replace`, atomic on POSIX), so a killed process or a full disk
leaves the previous version of each file intact. metrics.json is written last:
its presence marks a finished run.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from tf_sharpcf.config import Config
from tf_sharpcf.errors import ConfigError, TrainingError

CONFIG = "config.json"
HISTORY = "history.csv"
METRICS = "metrics.json"
TENSORBOARD = "tensorboard"
CHECKPOINTS = "checkpoints"
BEST = f"{CHECKPOINTS}/best"
LAST = f"{CHECKPOINTS}/last"
EMBEDDINGS = ("user_embeddings.npy", "item_embeddings.npy")
# In the order `clear` removes them: metrics.json first (the run no longer looks
# finished), config.json last (until then it still looks like a run).
OUTPUTS = (METRICS, CHECKPOINTS, TENSORBOARD, HISTORY, *EMBEDDINGS, CONFIG)


class WriteError(TrainingError):
    """A file of the run could not be written (disk full, permissions).

    `error` is an OSError, or a `tf.errors.OpError` from TensorFlow's own
    writers (checkpoints, TensorBoard).
    """

    def __init__(self, path: Path, error: Exception):
        reason = getattr(error, "strerror", None) or getattr(error, "message", None) or str(error)
        super().__init__(f"could not write {path}: {reason}; its previous version, if any, is unchanged")


# ---------------------------------------------------------------------------
# Atomic writes


def atomic_write(path: Path, write: Callable[[Path], None], suffix: str = ".tmp") -> None:
    """Calls `write(tmp)` for a temporary file beside `path`, then renames it to `path`.

    On an OSError (e.g. ENOSPC) the temporary file is removed, `path` keeps
    its previous contents, and a `WriteError` naming `path` is raised.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}{suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        remove(tmp)
        raise WriteError(path, e) from None


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    # np.save appends ".npy" to a name that does not end with it.
    atomic_write(path, lambda tmp: np.save(tmp, array), suffix=".tmp.npy")


def remove(path: Path) -> None:
    """Removes a file or folder if it exists; never raises."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


# ---------------------------------------------------------------------------
# What a folder holds


def check_writable(path: Path, flag: str = "--output-dir", make_parents: bool = False) -> None:
    """Raises ConfigError unless a run can be written to `path`.

    `path` must be a folder, or not exist with its parent folder existing
    (any missing ancestors are allowed with `make_parents`). Writability is
    tested by creating and removing a probe file in `path`, or in the nearest
    existing ancestor when `path` does not exist yet; nothing is left behind.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"invalid {flag}: {path} exists and is not a directory")
    target = path
    while not target.exists():
        if target.parent == target:
            break
        if target is not path and not make_parents:
            raise ConfigError(f"invalid {flag}: {path}: its parent folder {target} does not exist "
                              "(create it first)")
        target = target.parent
    if not target.is_dir():
        raise ConfigError(f"invalid {flag}: {path}: {target} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=target)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        where = f"{path}: " if target != path else ""
        raise ConfigError(f"invalid {flag}: {where}{target} is not writable: {e.strerror or e}") from None


def is_finished(path: Path) -> bool:
    return (Path(path) / METRICS).exists()


def is_started(path: Path) -> bool:
    """True when `path` holds a run, finished or not (its config.json exists)."""
    return (Path(path) / CONFIG).exists()


def completed_epochs(path: Path) -> int:
    """Epochs saved in `path`'s last training checkpoint (0 when there is none)."""
    from tf_sharpcf import checkpointing     # TensorFlow is imported only when needed
    folder = checkpointing.find(Path(path) / LAST)
    return int(checkpointing.read_meta(folder).get("epoch", 0)) if folder else 0


def stored_config(path: Path, flag: str = "--resume") -> Config:
    """The run's config.json; ConfigError if `path` holds no run."""
    file = Path(path) / CONFIG
    if not Path(path).is_dir():
        raise ConfigError(f"invalid {flag}: {path} is not a directory")
    if not file.exists():
        raise ConfigError(f"invalid {flag}: {path} holds no run ({CONFIG} missing)")
    try:
        return Config.from_stored(json.loads(file.read_text())).validate()
    except json.JSONDecodeError as e:
        raise ConfigError(f"invalid {flag}: {file}:{e.lineno}: {e.msg}") from None
    except (TypeError, ConfigError) as e:
        raise ConfigError(f"invalid {flag}: {file}: {e}") from None


def clear(path: Path) -> None:
    """Removes a previous run's outputs from `path` (for --overwrite); other files stay."""
    for name in OUTPUTS:
        remove(Path(path) / name)
    for stale in Path(path).glob(".*.tmp*"):
        remove(stale)
