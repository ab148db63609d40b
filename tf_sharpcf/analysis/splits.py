"""How popular a split's held-out items are, against its training interactions.

A validation split carved at random out of the training data holds out items
about as popular as the training interactions' own. A published test split
need not: where it leans to popular items, a model that ranks popular items
higher gains on test more than on validation, and one that pushes them down
(hard negatives are more often popular items than uniform draws are) gains less. `analyze splits`
prints both splits' figures side by side.

NumPy only, no TensorFlow.
"""
from __future__ import annotations

import math
from typing import Dict, List

import numpy as np

from tf_sharpcf.data.interactions import Interactions, split_validation
from tf_sharpcf.errors import ConfigError, DataError


def check_top(top: float) -> None:
    """`top`, the fraction of items called top, must be in (0, 1]."""
    if not 0 < top <= 1:
        raise ConfigError(f"invalid --top: must be in (0, 1], got {top}")


def top_items(degree: np.ndarray, top: float) -> np.ndarray:
    """[T] int64 ids of the ceil(top * num_items) items of highest `degree`
    ([num_items]), ties broken by the lower id."""
    check_top(top)
    count = math.ceil(top * degree.shape[0])
    return np.lexsort((np.arange(degree.shape[0]), -degree))[:count]


def heldout_popularity(train_items: np.ndarray, heldout_items: np.ndarray, num_items: int,
                       top: float = 0.01, name: str = "held-out") -> Dict[str, float]:
    """Popularity of the held-out interactions' items, on the training degrees.

    Args:
      train_items: [N] int, the item of each training interaction.
      heldout_items: [M] int, the item of each held-out interaction.
      num_items: size of the item id space.
      top: the fraction of items, by training degree, counted as "top".
      name: the split, for error messages.
    Returns:
      mean_degree: the mean training degree of the held-out items;
      degree_ratio: that, over the mean leave-one-out training degree of the
        training interactions' items (each one's degree without itself, as a
        held-out interaction is not in its item's degree): 1 in expectation
        for a uniformly random hold-out, above 1 for one that leans to
        popular items;
      top_share: the share of held-out interactions on a top item;
      train_top_share: the same share among the training interactions.
    """
    for what, items in (("training", train_items), (name, heldout_items)):
        if items.shape[0] == 0:
            raise DataError(f"the {name} split has no {what} interactions")
        bad = items[(items < 0) | (items >= num_items)]
        if bad.size:
            raise DataError(f"the {name} split's {what} interactions have item ids outside [0, {num_items}): "
                            f"{', '.join(map(str, np.unique(bad)[:5]))}")
    degree = np.bincount(train_items, minlength=num_items).astype(np.float64)
    top_set = np.zeros(num_items, bool)
    top_set[top_items(degree, top)] = True
    held_mean, train_mean = float(degree[heldout_items].mean()), float((degree[train_items] - 1).mean())
    if train_mean == 0:
        raise DataError(f"the {name} split's training items each occur once: no popularity to compare")
    return {"mean_degree": held_mean,
            "degree_ratio": held_mean / train_mean,
            "top_share": float(top_set[heldout_items].mean()),
            "train_top_share": float(top_set[train_items].mean())}


def split_rows(data: Interactions, fraction: float = 0.1, seed: int = 0, top: float = 0.01) -> List[Dict]:
    """One row per split: the test split on the full training data, and the
    validation split (`split_validation(data, fraction, seed)`, the tuner's)
    on the rest of the training data."""
    valid = split_validation(data, fraction, seed)
    rows = []
    for name, split in (("test", data), (f"validation ({fraction:g} of train, seed {seed})", valid)):
        rows.append({"split": name, "train": split.num_train, "held_out": split.num_test,
                     **heldout_popularity(split.train_items, split.test_items, split.num_items, top, name)})
    return rows
