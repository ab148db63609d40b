"""Finished `fit` run folders as the analysis reads them: a `Run` (config, history,
metrics) per folder, labelled by its method, and the data sets they were trained on."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from tf_sharpcf import methods
from tf_sharpcf.config import Config
from tf_sharpcf.data.interactions import Interactions
from tf_sharpcf.data.registry import load_dataset
from tf_sharpcf.errors import ConfigError, DataError
from tf_sharpcf.training import run_dir


def warm_starts(method: str) -> bool:
    return method in methods.names() and methods.get(method).warm_start


@dataclasses.dataclass(frozen=True)
class Run:
    """A `fit` output directory: config.json, history.csv, metrics.json (once
    finished), user_embeddings.npy / item_embeddings.npy (best epoch)."""

    path: Path
    config: Config
    history: pd.DataFrame
    metrics: Optional[dict]
    label: str = ""

    @property
    def method(self) -> str:
        return self.config.train.method

    @property
    def dataset(self) -> str:
        return self.config.data.dataset

    @property
    def embedding_epoch(self) -> Optional[int]:
        """The epoch the saved embeddings are from (metrics.json's best epoch)."""
        return int(self.metrics["best"]["epoch"]) if self.metrics else None

    @property
    def model_label(self) -> str:
        """The label with the saved model's epoch; a best epoch inside the
        warm-up means the saved model was trained with BPR only, and says so."""
        epoch = self.embedding_epoch
        if epoch is None:
            return self.label
        if warm_starts(self.method) and epoch <= self.config.train.warmup_epochs:
            return f"{self.label} (epoch {epoch}: still the BPR warm-up model)"
        return f"{self.label} (epoch {epoch})"

    def embeddings(self) -> Tuple[np.ndarray, np.ndarray]:
        """([num_users, dim], [num_items, dim]) float32 of the best epoch."""
        return run_dir.load_embeddings(self.path)     # a DataError naming a missing file


def load_run(path) -> Run:
    """The run in folder `path`; its config's data_dir a path from the working
    directory (`run_dir.read_config`)."""
    path = Path(path)
    for name in (run_dir.CONFIG, run_dir.HISTORY):
        if not (path / name).is_file():
            raise DataError(f"{path}: not a run directory (no {name})")
    try:
        config = run_dir.read_config(path)
    except ConfigError as e:
        raise DataError(str(e)) from None
    return Run(path, config, pd.read_csv(path / run_dir.HISTORY), run_dir.read_metrics(path))


def load_runs(paths: Sequence) -> List[Run]:
    """Loads runs and labels each by its method, adding the directory name when
    two runs of a dataset share a method."""
    runs = [load_run(p) for p in paths]
    seen: Dict[Tuple[str, str], int] = {}
    for r in runs:
        seen[(r.dataset, r.method)] = seen.get((r.dataset, r.method), 0) + 1
    out = []
    for r in runs:
        name = methods.label(r.method)
        if seen[(r.dataset, r.method)] > 1:
            name = f"{name} ({r.path.name})"
        out.append(dataclasses.replace(r, label=name))
    return out


def load_run_data(runs: Sequence[Run], data_dir: Optional[str] = None) -> Dict[str, Interactions]:
    """{dataset: Interactions} for the runs' datasets, read once each (never downloaded).

    data_dir overrides the runs' config.data.data_dir (`load_run` reads it as
    a path from the working directory)."""
    out = {}
    for r in runs:
        if r.dataset not in out:
            out[r.dataset] = load_dataset(r.dataset, data_dir or r.config.data.data_dir, allow_download=False)
    return out
