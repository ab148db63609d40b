"""The servable retriever: raw user id -> top-k unseen item ids, over a TFRS index.

The item index is a tensorflow-recommenders `BruteForce` or `ScaNN` layer over
the run's item embeddings. Seen items are excluded inside the model: for a
batch whose users have at most S training items, the index retrieves
R = min(k + S, num_items) candidates, any candidate whose key
`user * num_items + item` is in the sorted table of training keys is dropped,
and the first k survivors are returned. At most S of the R candidates are a
user's own, so at least k survive whenever R = k + S.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Dict, List, Optional, Sequence

import numpy as np

import tensorflow as tf
import tensorflow_recommenders as tfrs

from tf_sharpcf.data.interactions import Interactions
from tf_sharpcf.errors import ConfigError


INDEXES = ("brute-force", "scann")
# Score of a slot left empty (item id "") when fewer than k unseen items were
# retrieved; finite, because TF Serving's REST API writes JSON.
EMPTY_SCORE = float(np.finfo(np.float32).min)
SCANN_MIN_ITEMS = 16


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")   # a model name: a folder under the serving base directory


def check_settings(index: str, name: Optional[str] = None, k: int = 20) -> None:
    """Rejects a bad index, name (None: not chosen yet) or k before anything is built or written."""
    if index not in INDEXES:
        raise ConfigError(f"invalid --index: must be one of {', '.join(INDEXES)}, got {index!r}")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ConfigError(f"invalid --k: must be an integer >= 1, got {k!r}")
    if name is not None and not _NAME.match(name):
        raise ConfigError(f"invalid model name {name!r}: use letters, digits, '_', '.' or '-', "
                          "starting with a letter or digit")
    if index == "scann":
        try:
            import scann  # noqa: F401
        except ImportError:
            raise ConfigError("the scann index needs the `scann` package (pip install scann==1.4.2)") from None


@dataclasses.dataclass(frozen=True)
class ScannSettings:
    """ScaNN tree + asymmetric-hashing settings; None means "derive from the catalogue".

    Defaults (tuned on Gowalla, 40,981 items; see benchmarks/export_bench.py):
    num_leaves = round(sqrt(num_items)), num_leaves_to_search = ceil(leaf_fraction
    * num_leaves), and num_reordering_candidates = max(reorder, R_max) where R_max
    = k + the most training items of any user (capped at num_items), so every
    retrieved candidate is rescored exactly.
    """

    num_leaves: Optional[int] = None
    num_leaves_to_search: Optional[int] = None
    num_reordering_candidates: Optional[int] = None
    leaf_fraction: float = 0.1
    reorder: int = 250
    training_iterations: int = 12
    dimensions_per_block: int = 2

    def resolve(self, num_items: int, retrieve_max: int) -> "ScannSettings":
        if num_items < SCANN_MIN_ITEMS:
            raise ConfigError(f"invalid --index: scann needs at least {SCANN_MIN_ITEMS} items "
                              f"(its hashing trains 16 centres per block), got {num_items}; use brute-force")
        leaves = self.num_leaves or max(1, min(num_items, round(math.sqrt(num_items))))
        search = self.num_leaves_to_search or max(1, math.ceil(self.leaf_fraction * leaves))
        reorder = self.num_reordering_candidates or min(num_items, max(self.reorder, retrieve_max))
        if not 1 <= search <= leaves <= num_items:
            raise ConfigError(f"invalid ScaNN settings: need 1 <= num_leaves_to_search ({search}) <= "
                              f"num_leaves ({leaves}) <= num_items ({num_items})")
        if reorder < retrieve_max:
            raise ConfigError(f"invalid ScaNN settings: num_reordering_candidates ({reorder}) must be >= "
                              f"k + the most seen items of a user ({retrieve_max})")
        return dataclasses.replace(self, num_leaves=leaves, num_leaves_to_search=search,
                                   num_reordering_candidates=reorder)


# ---------------------------------------------------------------------------
# The serving model


class SeenItems(tf.Module):
    """Each user's training items, for exclusion inside the graph.

    Args:
      users, items: [N] int the (user, item) pairs to exclude (empty: exclude nothing).
      num_users, num_items: id space sizes.
    """

    def __init__(self, users: np.ndarray, items: np.ndarray, num_users: int, num_items: int):
        super().__init__(name="seen_items")
        keys = np.unique(np.asarray(users, np.int64) * num_items + np.asarray(items, np.int64))
        # A sentinel above every key lets a searchsorted position index the table directly.
        keys = np.append(keys, np.iinfo(np.int64).max)
        self.num_items = tf.constant(num_items, tf.int64)
        self.keys = tf.Variable(keys, trainable=False, name="keys")                     # [N + 1] int64
        self.count = tf.Variable(np.bincount(np.asarray(users, np.int64), minlength=num_users)
                                 .astype(np.int32), trainable=False, name="count")      # [num_users] int32
        self.max_count = int(self.count.numpy().max(initial=0))

    def contains(self, users: tf.Tensor, items: tf.Tensor) -> tf.Tensor:
        """[B] int64 users, [B, R] int items -> [B, R] bool (item in the user's training items)."""
        query = users[:, None] * self.num_items + tf.cast(items, tf.int64)              # [B, R]
        flat = tf.reshape(query, [-1])
        pos = tf.searchsorted(self.keys, flat, side="left")
        return tf.reshape(tf.gather(self.keys, pos) == flat, tf.shape(query))


class Retriever(tf.Module):
    """Raw user ids -> top-k unseen item ids, with an item index from TFRS.

    Args:
      index: a `tfrs.layers.factorized_top_k` layer indexed over the item
        embeddings with identifiers = item indices.
      user_embeddings: [num_users, dim] float32.
      user_ids, item_ids: [num_users] / [num_items] str, the ids the API speaks.
      seen: `SeenItems` to exclude (built from no pairs: exclude nothing).
      popular: [k] int item indices returned to unknown users, with score 0.
      k: items per user.
    """

    def __init__(self, index: tfrs.layers.factorized_top_k.TopK, user_embeddings: np.ndarray,
                 user_ids: Sequence[str], item_ids: Sequence[str], seen: SeenItems,
                 popular: np.ndarray, k: int):
        super().__init__(name="retriever")
        num_items = len(item_ids)
        self.k = int(k)
        self.index = index
        self.seen = seen
        self.user_embeddings = tf.Variable(np.asarray(user_embeddings, np.float32), trainable=False,
                                           name="user_embeddings")
        self.user_index = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(list(user_ids), tf.string),
                                                tf.range(len(user_ids), dtype=tf.int64)),
            default_value=-1)
        self.item_ids = tf.Variable(list(item_ids), dtype=tf.string, trainable=False, name="item_ids")
        self.popular_ids = tf.constant([item_ids[i] for i in popular], tf.string)
        self.num_items = num_items
        self.retrieve_max = min(self.k + seen.max_count, num_items)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_id")])
    def serve(self, user_id: tf.Tensor) -> Dict[str, tf.Tensor]:
        """[B] string user ids -> item_ids [B, k] string, scores [B, k] float32, known_user [B] bool.

        Unknown ids (including bytes that are not UTF-8) get the k most popular
        training items with score 0. Slots left without an unseen item hold "" and
        `EMPTY_SCORE`.
        """
        k = self.k
        row = self.user_index.lookup(user_id)                                   # [B] int64, -1: unknown
        known = row >= 0
        users = tf.where(known, row, tf.zeros_like(row))
        seen_count = tf.where(known, tf.gather(self.seen.count, users), 0)
        retrieve = tf.minimum(k + tf.reduce_max(tf.concat([seen_count, [0]], 0)), self.num_items)
        queries = tf.gather(self.user_embeddings, users)                        # [B, dim]
        scores, items = self.index(queries, k=retrieve)                         # [B, R'], R' <= R
        items = tf.cast(items, tf.int64)
        # ScaNN pads a short result with NaN scores (and item 0).
        drop = self.seen.contains(users, items) | tf.math.is_nan(scores)
        scores = tf.where(drop, tf.constant(-np.inf, tf.float32), scores)
        short = tf.maximum(k - tf.shape(scores)[1], 0)
        scores = tf.pad(scores, [[0, 0], [0, short]], constant_values=-np.inf)
        items = tf.pad(items, [[0, 0], [0, short]])
        # top_k keeps the index's order among equal scores, so this is "the first k survivors".
        top_scores, pos = tf.math.top_k(scores, k=k)
        top_items = tf.gather(items, pos, batch_dims=1)
        filled = top_scores > -np.inf
        ids = tf.where(filled, tf.gather(self.item_ids, top_items), "")
        top_scores = tf.where(filled, top_scores, EMPTY_SCORE)
        ids = tf.where(known[:, None], ids, self.popular_ids[None, :])
        top_scores = tf.where(known[:, None], top_scores, 0.0)
        return {"item_ids": tf.ensure_shape(ids, [None, k]),
                "scores": tf.ensure_shape(top_scores, [None, k]),
                "known_user": known}


def build_index(kind: str, item_embeddings: np.ndarray, retrieve_max: int,
                scann: Optional[ScannSettings] = None) -> tfrs.layers.factorized_top_k.TopK:
    """A TFRS top-k layer over [num_items, dim] float32 embeddings, ids = item indices."""
    candidates = tf.constant(np.asarray(item_embeddings, np.float32))
    if kind == "brute-force":
        return tfrs.layers.factorized_top_k.BruteForce(k=retrieve_max, name="brute_force").index(candidates)
    if kind == "scann":
        s = (scann or ScannSettings()).resolve(candidates.shape[0], retrieve_max)
        layer = tfrs.layers.factorized_top_k.ScaNN(
            k=retrieve_max, num_leaves=s.num_leaves, num_leaves_to_search=s.num_leaves_to_search,
            num_reordering_candidates=s.num_reordering_candidates,
            training_iterations=s.training_iterations, dimensions_per_block=s.dimensions_per_block,
            name="scann")
        return layer.index(candidates)
    raise ConfigError(f"invalid --index: must be one of {', '.join(INDEXES)}, got {kind!r}")


def api_ids(ids: Optional[np.ndarray], n: int) -> List[str]:
    """The ids the API speaks: the dataset's original ids, else the decimal index."""
    return [str(x) for x in ids] if ids is not None else [str(i) for i in range(n)]


def popular_items(data: Interactions, k: int) -> np.ndarray:
    """[k] int item indices by training degree, descending; ties by lower index."""
    return np.argsort(-data.item_degree(), kind="stable")[:k]


def build_retriever(data: Interactions, user_embeddings: np.ndarray, item_embeddings: np.ndarray,
                    index: str, k: int = 20, exclude_seen: bool = True,
                    scann: Optional[ScannSettings] = None) -> Retriever:
    check_settings(index, k=k)
    if k > data.num_items:
        raise ConfigError(f"invalid --k: must be <= the number of items ({data.num_items}), got {k}")
    if exclude_seen:
        seen = SeenItems(data.train_users, data.train_items, data.num_users, data.num_items)
    else:
        seen = SeenItems(np.zeros(0, np.int64), np.zeros(0, np.int64), data.num_users, data.num_items)
    retrieve_max = min(k + seen.max_count, data.num_items)
    return Retriever(build_index(index, item_embeddings, retrieve_max, scann), user_embeddings,
                     api_ids(data.user_ids, data.num_users), api_ids(data.item_ids, data.num_items),
                     seen, popular_items(data, k), k)
