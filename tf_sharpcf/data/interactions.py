"""The one interaction type every dataset becomes, and its checks.

An `Interactions` holds a canonical training table (one row per (user, item)
interaction, in file order; the row index is the interaction's `element_id`,
stable across runs and machines for the same files) and a test table. Readers
(`readers.py`) differ per format; everything after `Interactions` is shared.
"""
from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Optional

import numpy as np

from tf_sharpcf.errors import DataError


# Ids are stored as int32 and index embedding tables.
MAX_ID = 2**31 - 2
_MAX_ID_DIGITS = len(str(MAX_ID))


@dataclasses.dataclass(frozen=True)
class Interactions:
    """A dataset's train/test split.

    Attributes:
      name: a label for logs and outputs.
      num_users, num_items: sizes of the id spaces (max id + 1).
      train_users, train_items: [N] int32, the canonical training table; row r
        is the interaction with element_id r.
      test_users, test_items: [M] int32 held-out interactions.
      user_ids, item_ids: optional [num_users] / [num_items] original ids (str)
        of each index, from `user_list.txt` / `item_list.txt` or `ratings.dat`.
      cold_test_users, cold_test_items: distinct test users / items the
        source had with no training interaction; their test interactions
        were left out of test (`without_cold_test`).
    """

    name: str
    num_users: int
    num_items: int
    train_users: np.ndarray
    train_items: np.ndarray
    test_users: np.ndarray
    test_items: np.ndarray
    user_ids: Optional[np.ndarray] = None
    item_ids: Optional[np.ndarray] = None
    cold_test_users: int = 0
    cold_test_items: int = 0

    @property
    def num_train(self) -> int:
        return int(self.train_users.shape[0])

    @property
    def num_test(self) -> int:
        return int(self.test_users.shape[0])

    def item_degree(self) -> np.ndarray:
        """[num_items] int64: training interactions per item."""
        return np.bincount(self.train_items, minlength=self.num_items)

    def user_degree(self) -> np.ndarray:
        """[num_users] int64: training interactions per user."""
        return np.bincount(self.train_users, minlength=self.num_users)

    def train_keys(self) -> np.ndarray:
        """[N] int64 sorted `user * num_items + item`, for membership tests."""
        return np.sort(self.train_users.astype(np.int64) * self.num_items + self.train_items)

    def describe(self) -> str:
        density = (self.num_train + self.num_test) / max(1, self.num_users * self.num_items)
        return (f"{self.name}: {self.num_users:,} users, {self.num_items:,} items, "
                f"{self.num_train:,} train, {self.num_test:,} test, density {density:.3%}")


def without_cold_test(data: Interactions, path: Path) -> Interactions:
    """Leaves out the test interactions of users and items with no training
    interaction (they cannot be ranked from training data), with a warning
    that counts them; the counts go on the result (`cold_test_users`,
    `cold_test_items`). DataError if no test interaction is left."""
    has_user = data.user_degree() > 0
    has_item = data.item_degree() > 0
    cold_users = np.unique(data.test_users[~has_user[data.test_users]])
    cold_items = np.unique(data.test_items[~has_item[data.test_items]])
    if not cold_users.size and not cold_items.size:
        return data
    keep = has_user[data.test_users] & has_item[data.test_items]
    parts = []
    for kind, ids in (("user", cold_users), ("item", cold_items)):
        if ids.size:
            shown = ", ".join(str(int(i)) for i in ids[:5]) + (", ..." if ids.size > 5 else "")
            parts.append(f"{ids.size} test {kind}(s) with no training interaction (ids {shown})")
    if not keep.any():
        raise DataError(f"{path}: no test interaction left to evaluate: {'; '.join(parts)}")
    warnings.warn(f"{path}: {'; '.join(parts)}: their {int((~keep).sum())} test interaction(s) are left "
                  "out of Recall/NDCG", stacklevel=2)
    return dataclasses.replace(data, test_users=data.test_users[keep], test_items=data.test_items[keep],
                               cold_test_users=int(cold_users.size), cold_test_items=int(cold_items.size))


def check_negatives_exist(data: Interactions, path: Path) -> None:
    """Uniform negative sampling needs an item each user has not interacted with."""
    full = np.flatnonzero(data.user_degree() >= data.num_items)
    if full.size:
        raise DataError(f"{path}: user {int(full[0])} has interacted with all {data.num_items} items, "
                        "so no negative item can be sampled for them")


def split_validation(data: Interactions, fraction: float = 0.1, seed: int = 0) -> Interactions:
    """Holds out a seeded fraction of each user's training interactions.

    Returns an `Interactions` whose train is the rest (canonical order kept) and
    whose test is the held-out part; the original test set is not used at all.
    A user with one training interaction keeps it in train.
    """
    if not 0 < fraction < 1:
        raise DataError(f"validation fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    order = np.argsort(data.train_users, kind="stable")
    counts = data.user_degree()
    starts = np.concatenate([[0], np.cumsum(counts)])
    held = np.zeros(data.num_train, bool)
    for user in np.flatnonzero(counts > 1):
        n = int(counts[user])
        k = min(n - 1, max(1, int(round(fraction * n))))
        rows = order[starts[user]:starts[user + 1]]
        held[rows[rng.permutation(n)[:k]]] = True
    return dataclasses.replace(
        data, name=f"{data.name}-validation",
        train_users=data.train_users[~held], train_items=data.train_items[~held],
        test_users=data.train_users[held], test_items=data.train_items[held])
