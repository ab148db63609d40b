"""Command-line flags and model set-up shared by the benchmark scripts."""
from __future__ import annotations

import argparse
from typing import Optional

import tensorflow as tf

from tf_sharpcf import samplers
from tf_sharpcf.config import Config
from tf_sharpcf.training.train import build_model


def add_data_flags(p: argparse.ArgumentParser, dataset: Optional[str] = "gowalla", dim: int = 128,
                   window: Optional[int] = None, methods: bool = False,
                   batch_size: Optional[int] = None) -> None:
    """--dataset (default `dataset`), --data-dir, --dim; with `window`, --window;
    with `methods`, --methods (comma-separated); with `batch_size`, --batch-size."""
    p.add_argument("--dataset", default=dataset)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--dim", type=int, default=dim)
    if window is not None:
        p.add_argument("--window", type=int, default=window)
    if methods:
        p.add_argument("--methods", default="bpr,sharpcf,apr", help="comma-separated, timed in this order")
    if batch_size is not None:
        p.add_argument("--batch-size", type=int, default=batch_size)


def compiled_model(data, method: str, dim: int, jit_compile: bool = True, row_kernel=None, pair_kernel=None,
                   similarity: str = "dot", **train):
    """A fresh model (seed 0) training `method` from epoch 0 with no warm-up,
    its objective set and compiled; `train` overrides further TrainConfig
    fields (window defaults to 3). -> (model, config)."""
    config = Config().replace(model={"dim": dim, "similarity": similarity}, train={
        "method": method, "warmup_epochs": 0, "window": 3, "jit_compile": jit_compile, **train})
    tf.keras.utils.set_random_seed(0)
    model, objective, optimizer = build_model(config, data)
    model.set_objective(objective)
    model.compile(optimizer=optimizer, jit_compile=jit_compile, row_kernel=row_kernel, pair_kernel=pair_kernel,
                  negatives=config.train.negatives, batch_size=config.train.batch_size,
                  shared=samplers.shared(config.train))
    return model, config
