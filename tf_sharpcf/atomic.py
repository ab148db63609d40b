"""Atomic, durable writes: a temporary name beside the target, fsync, rename.

A leaf module (nothing of tf_sharpcf but its errors): the run folder
(`run_dir`), checkpoints, exports and the tuner all write through it, so a
killed process or a full disk leaves the previous version of a file intact,
and a crash of the machine does not leave a name pointing at unwritten bytes.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from tf_sharpcf.errors import TrainingError


class WriteError(TrainingError):
    """A file of the run could not be written (disk full, permissions).

    `error` is an OSError, or a `tf.errors.OpError` from TensorFlow's own
    writers (checkpoints, TensorBoard).
    """

    def __init__(self, path: Path, error: Exception):
        reason = getattr(error, "strerror", None) or getattr(error, "message", None) or str(error)
        # TensorFlow's own: "{{function_node ...}} <file>; File too large [Op:SaveV2]" -> "<file>; File too large"
        reason = re.sub(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\]$", "", reason.strip())
        super().__init__(f"could not write {path}: {reason}; its previous version, if any, is unchanged")


def atomic_write(path: Path, write: Callable[[Path], None], suffix: str = ".tmp") -> None:
    """Calls `write(tmp)` for a temporary file beside `path`, then renames it to `path`.

    On an OSError (e.g. ENOSPC) the temporary file is removed, `path` keeps
    its previous contents, and a `WriteError` naming `path` is raised.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}{suffix}")
    try:
        write(tmp)
        fsync_path(tmp)                  # the bytes on disk before the name points at them
        os.replace(tmp, path)
        fsync_path(path.parent, files=False)     # and the rename itself
    except OSError as e:
        remove(tmp)
        raise WriteError(path, e) from None


def fsync_path(path: Path, files: bool = True) -> None:
    """fsync a file, or a folder's entries (with `files`, each file directly
    in it first), so that what was written survives a crash of the machine,
    not only of the process."""
    path = Path(path)
    if path.is_dir() and files:
        for child in path.iterdir():
            if child.is_file():
                fsync_path(child)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """fsync every file and folder under `folder`, deepest first."""
    for root, dirs, files in os.walk(folder, topdown=False):
        for name in files:
            fsync_path(Path(root) / name)
        fsync_path(Path(root), files=False)


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
