"""Command-line flags shared by the benchmark scripts."""
from __future__ import annotations

import argparse
from typing import Optional


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
