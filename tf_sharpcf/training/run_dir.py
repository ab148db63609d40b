"""The run's output folder: its layout, atomic writes, and what it holds.

A run folder (`fit --output-dir`) holds

  config.json, history.csv, metrics.json, tensorboard/,
  checkpoints/best/ (the best evaluated epoch), checkpoints/last/ (the
  training state to resume from), user_embeddings.npy, item_embeddings.npy.

config.json names the data directory the run was given relative to the run
folder (`write_config`), so a run folder and its data can move together;
`read_config` turns it back into a path.

Every file is written under a temporary name beside its target and renamed
into place (`atomic.atomic_write`), so a killed process or a full disk
leaves the previous version of each file intact. metrics.json is written last:
its presence marks a finished run.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

from tf_sharpcf.atomic import (WriteError, atomic_save_npy, atomic_write, atomic_write_text,  # noqa: F401
                               fsync_path, fsync_tree, remove)
from tf_sharpcf.config import Config
from tf_sharpcf.errors import ConfigError, DataError

CONFIG = "config.json"
HISTORY = "history.csv"
METRICS = "metrics.json"
TENSORBOARD = "tensorboard"
CHECKPOINTS = "checkpoints"
BEST = f"{CHECKPOINTS}/best"
LAST = f"{CHECKPOINTS}/last"
EMBEDDINGS = ("user_embeddings.npy", "item_embeddings.npy")
LOCK = ".lock"          # held by the process training the run (`run_lock`)
# In the order `clear` removes them: metrics.json first (the run no longer looks
# finished), config.json last (until then it still looks like a run).
OUTPUTS = (METRICS, CHECKPOINTS, TENSORBOARD, HISTORY, *EMBEDDINGS, CONFIG)


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
    from tf_sharpcf.training import checkpointing     # TensorFlow is imported only when needed
    folder = checkpointing.find(Path(path) / LAST)
    return int(checkpointing.read_meta(folder).get("epoch", 0)) if folder else 0


# ---------------------------------------------------------------------------
# config.json and its data directory

# A config.json data_dir that starts with this is relative to the folder of the
# config.json. One without it was written before the mark existed and means
# what fit was given: relative to the working directory of that fit (the
# committed results/*/runs/*/config.json hold "../shared/data" from the
# repository's root), or absolute.
RUN_RELATIVE = "run:"


def relative_path(path: Optional[str], folder: Path) -> Optional[str]:
    """`path` (relative to the working directory, or absolute) relative to
    `folder`, so a file in `folder` names no machine's absolute path and stays
    true when it and `path` move together; absolute where no relative path
    exists (another drive). None stays None.

    e.g. "../shared/data" seen from /w/main, folder /w/main/runs/bpr
    -> "../../../shared/data".
    """
    if path is None:
        return None
    target = os.path.abspath(path)
    try:
        return os.path.relpath(target, os.path.abspath(folder))
    except ValueError:
        return target


def write_config(path: Path, config: Config) -> None:
    """Writes `path`/config.json, its data_dir relative to `path` (`RUN_RELATIVE`)."""
    stored = relative_path(config.data.data_dir, path)
    if stored is not None and not os.path.isabs(stored):
        stored = RUN_RELATIVE + stored
    atomic_write_text(Path(path) / CONFIG, config.replace(data={"data_dir": stored}).to_json())


def stored_data_dir(data_dir: Optional[str], path: Path) -> Optional[str]:
    """A config.json data_dir in `path` as a path from the working directory:
    absolute for one relative to the run (`RUN_RELATIVE`); an older one
    unchanged (relative to the working directory, or absolute)."""
    if data_dir is None or not data_dir.startswith(RUN_RELATIVE):
        return data_dir
    # normpath, not resolve: ".." must undo the folder names the path was made
    # from, as relpath wrote it, even across a symbolic link.
    return os.path.normpath(os.path.join(os.path.abspath(path), data_dir[len(RUN_RELATIVE):]))


def read_config(path: Path) -> Config:
    """The Config of `path`/config.json (`Config.from_stored`), its data_dir a
    path from the working directory (`stored_data_dir`); ConfigError naming the
    file if it is missing or invalid."""
    config = Config.from_stored_file(Path(path) / CONFIG)
    return config.replace(data={"data_dir": stored_data_dir(config.data.data_dir, path)})


def stored_config(path: Path, flag: str = "--resume") -> Config:
    """The run's config.json (`read_config`); ConfigError if `path` holds no run."""
    file = Path(path) / CONFIG
    if not Path(path).is_dir():
        raise ConfigError(f"invalid {flag}: {path} is not a directory")
    if not file.exists():
        raise ConfigError(f"invalid {flag}: {path} holds no run ({CONFIG} missing)")
    try:
        config = read_config(path)
    except ConfigError as e:
        raise ConfigError(f"invalid {flag}: {e}") from None
    try:
        return config.validate()
    except ConfigError as e:
        raise ConfigError(f"invalid {flag}: {file}: {e}") from None


def clear(path: Path) -> None:
    """Removes a previous run's outputs from `path` (for --overwrite); other files stay."""
    for name in OUTPUTS:
        remove(Path(path) / name)
    for stale in Path(path).glob(".*.tmp*"):
        remove(stale)


# ---------------------------------------------------------------------------
# One process per folder


class FolderLock:
    """An advisory lock (`fcntl.flock`) on `lock_file`, held while the block runs.

    Guards a run folder (fit), a search project (tune) or an experiment's
    results (pipeline) against a second process: it gets a ConfigError (exit 2)
    "FOLDER is in use by process PID on HOST since TIME". The lock file holds
    its owner's pid, host and start time; the kernel drops the lock when its
    process dies, so a lock file left by a dead process is taken over, with a
    warning that names it. On a normal exit the file is emptied (and stays).
    """

    def __init__(self, lock_file: Path, folder: Path, flag: str):
        self.path, self.folder, self.flag = Path(lock_file), Path(folder), flag
        self._fd = None

    def __enter__(self) -> "FolderLock":
        import fcntl
        import socket
        import time
        import warnings
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise ConfigError(f"invalid {self.flag}: cannot lock {self.folder}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_owner(fd)
            os.close(fd)
            raise ConfigError(f"invalid {self.flag}: {self.folder} is in use by process {owner.get('pid', '?')} "
                              f"on {owner.get('host', '?')} since {owner.get('since', '?')}") from None
        previous = _read_owner(fd)
        if previous:
            warnings.warn(f"{self.folder}: taking over the lock left by process {previous.get('pid', '?')} on "
                          f"{previous.get('host', '?')} (since {previous.get('since', '?')}), which no longer "
                          "holds it", stacklevel=2)
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "since": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime())}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            # Emptied, not removed: removing a lock file races with a process
            # that has it open and is about to lock it.
            try:
                os.ftruncate(self._fd, 0)
            except OSError:
                pass
            os.close(self._fd)
            self._fd = None


def _read_owner(fd: int) -> dict:
    try:
        raw = os.pread(fd, 4096, 0)
        return json.loads(raw.decode()) if raw.strip() else {}
    except (OSError, ValueError):
        return {}


def run_lock(folder: Path, flag: str = "--output-dir") -> FolderLock:
    """The lock of a run folder (its `.lock` file)."""
    return FolderLock(Path(folder) / LOCK, folder, flag)


# ---------------------------------------------------------------------------
# Reading a run


def read_metrics(path: Path) -> Optional[dict]:
    """metrics.json of the run in `path`, or None while it is unfinished."""
    file = Path(path) / METRICS
    return json.loads(file.read_text()) if file.exists() else None


def load_embeddings(run_dir: Path) -> tuple:
    """-> ([num_users, dim], [num_items, dim]) float32 from a fit run folder
    (a DataError naming the file if one is missing or not a 2-D float array)."""
    run_dir, out = Path(run_dir), []
    for name in EMBEDDINGS:
        path = run_dir / name
        try:
            array = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise DataError(f"{path}: file not found (is {run_dir} a finished fit run?)") from None
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: not a .npy array ({e})") from None
        if array.ndim != 2 or not np.issubdtype(array.dtype, np.floating):
            raise DataError(f"{path}: expected a 2-D float array, got {array.dtype} {array.shape}")
        out.append(array.astype(np.float32))
    if out[0].shape[1] != out[1].shape[1]:
        raise DataError(f"{run_dir}: user and item embeddings differ in size "
                        f"({out[0].shape[1]} vs {out[1].shape[1]})")
    return out[0], out[1]


def load_config(run_dir: Path) -> Config:
    """The run's config.json (`read_config`; a DataError if missing or invalid)."""
    path = Path(run_dir) / CONFIG
    if not path.exists():
        raise DataError(f"{path}: file not found (is {run_dir} a fit run?)")
    try:
        return read_config(run_dir)
    except ConfigError as e:
        raise DataError(str(e)) from None
