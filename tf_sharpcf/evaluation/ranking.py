"""Full-ranking evaluation: Recall@K and NDCG@K with training items excluded.

For every user with at least one test item, all items are scored (a batched
user x item matmul), the user's training items are excluded, and the top
K_max items are taken exactly (`grouped_top_k`: a two-stage top-k that reads
the [users, items] score matrix once). With T_u the user's test items and
hit_r = 1 if the item at rank r (0-based) is in T_u:

  Recall@K = Σ_{r<K} hit_r / |T_u|
  NDCG@K   = Σ_{r<K} hit_r / log2(r + 2)  /  Σ_{r<min(|T_u|, K)} 1 / log2(r + 2)

each averaged over those users.
"""
from __future__ import annotations

import time
from typing import Dict, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tf_sharpcf.data.interactions import Interactions
from tf_sharpcf.evaluation.metrics import metrics_from_hits, recall_by_group


def _pairs_by_user_batch(users: np.ndarray, items: np.ndarray, eval_users: np.ndarray,
                         batch: int):
    """Splits (user, item) pairs into per-batch [n, 2] (row in batch, item) arrays."""
    pos = np.full(int(max(users.max(initial=0), eval_users.max(initial=0))) + 1, -1, np.int64)
    pos[eval_users] = np.arange(eval_users.size)
    row = pos[users]
    keep = row >= 0
    row, items = row[keep], items[keep]
    order = np.argsort(row, kind="stable")
    row, items = row[order], items[order]
    bounds = np.searchsorted(row, np.arange(0, eval_users.size + batch, batch))
    out = []
    for b in range(len(bounds) - 1):
        lo, hi = bounds[b], bounds[b + 1]
        out.append(np.stack([row[lo:hi] - b * batch, items[lo:hi]], 1).astype(np.int32))
    return out


# Sorted key lists end with this sentinel, so a search never runs off the end.
_SENTINEL = np.iinfo(np.int64).max


class _BatchMasks(NamedTuple):
    """One user batch's precomputed masks (built once per Evaluator).

    With I_pad = the item count padded to a multiple of the group size; a key
    is row * I_pad + item, i.e. the flat index into the batch's [rows, I_pad]
    score matrix.
      masked_keys: [n_m] int64, sorted keys of the rows' training items and of
                   the padding columns (set to -inf before the top-k); numpy
                   for the 'blas' scorer, a tensor for 'tf'.
      test_keys:   [n_test + 1] int64 tensor, sorted keys of the rows' test
                   items, then the sentinel.
    """
    masked_keys: np.ndarray
    test_keys: tf.Tensor


def _batch_masks(train_pairs: np.ndarray, test_pairs: np.ndarray, rows: int, num_items: int,
                 padded: int) -> _BatchMasks:
    pad_items = np.arange(num_items, padded)
    row = np.concatenate([train_pairs[:, 0], np.repeat(np.arange(rows), pad_items.size)]).astype(np.int64)
    item = np.concatenate([train_pairs[:, 1], np.tile(pad_items, rows)]).astype(np.int64)
    test_keys = np.unique(test_pairs[:, 0].astype(np.int64) * padded + test_pairs[:, 1])
    return _BatchMasks(np.unique(row * padded + item), tf.constant(np.append(test_keys, _SENTINEL)))


def _row_keys(columns, width):
    """[b, n] int column indices -> [b, n] int64 keys row * width + column
    (the keys `_batch_masks` sorts, with width = I_pad)."""
    rows = tf.range(tf.shape(columns)[0], dtype=tf.int64)[:, None]
    return rows * tf.cast(width, tf.int64) + tf.cast(columns, tf.int64)


def _contains(sorted_keys, keys):
    """[n] sorted int64 (last = sentinel), [...] int64 -> [...] bool membership."""
    flat = tf.reshape(keys, [1, -1])
    pos = tf.searchsorted(sorted_keys[None, :], flat, side="left")[0]
    return tf.reshape(tf.gather(sorted_keys, pos) == flat[0], tf.shape(keys))


def grouped_top_k(scores, k: int, group: int) -> tf.Tensor:
    """Exact top-k of each row of `scores`, in two stages.

    scores: [b, I_pad] float32, I_pad a multiple of `group` (g), masked
    entries already -inf. Returns [b, k] int32 column indices in rank order,
    ties broken towards the lower index as `tf.math.top_k` (and a stable
    argsort) does.

    (1) The maximum of each group of g consecutive columns; the top-k elements
    lie in the k groups with the largest maxima (an element outside them has k
    group maxima at least as large above it, each from a lower-ranked group or
    a tie broken towards the lower index). (2) top-k over those k·g candidates,
    taken in column order. Only the reduction in (1) reads the whole matrix;
    a single `top_k` over I_pad columns costs several times as much (README,
    Benchmarks: design measurements).
    """
    b, i_pad = tf.shape(scores)[0], tf.shape(scores)[1]
    grouped = tf.reshape(scores, [b, i_pad // group, group])                 # [b, G, g]
    group_max = tf.reduce_max(grouped, axis=2)                               # [b, G]
    groups = tf.sort(tf.math.top_k(group_max, k).indices, axis=1)            # [b, k], ascending
    candidates = tf.reshape(tf.gather(grouped, groups, batch_dims=1), [b, k * group])
    columns = tf.reshape(groups[:, :, None] * group + tf.range(group)[None, None, :], [b, k * group])
    best = tf.math.top_k(candidates, k).indices                              # [b, k]
    return tf.gather(columns, best, batch_dims=1)


def mask_scores(scores, masked_keys) -> tf.Tensor:
    """[b, I_pad] scores, [n] int64 flat keys -> the scores with those entries -inf."""
    flat = tf.reshape(scores, [-1])
    flat = tf.tensor_scatter_nd_update(flat, masked_keys[:, None],
                                       tf.fill(tf.shape(masked_keys), tf.constant(-np.inf, scores.dtype)))
    return tf.reshape(flat, tf.shape(scores))


def _aligned_empty(shape, align: int = 64) -> np.ndarray:
    """An uninitialised float32 array whose data starts on an `align`-byte
    boundary, as TensorFlow needs to wrap it through DLPack without a copy."""
    n = int(np.prod(shape))
    raw = np.empty(n + align // 4, np.float32)
    offset = (-raw.ctypes.data % align) // 4
    return raw[offset:offset + n].reshape(shape)


def default_scorer() -> str:
    """'blas' on a CPU-only machine, 'tf' when TensorFlow sees a GPU."""
    return "tf" if tf.config.list_logical_devices("GPU") else "blas"


class Evaluator:
    """Ranks every item for every test user of `data`.

    Args:
      data: the split; `data.test_*` are the targets, `data.train_*` are masked.
      ks: cut-offs K (K_max = max(ks) items are retrieved).
      user_batch: users scored per matmul ([user_batch, num_items] floats).
      group_size: columns per group in the two-stage top-k (`grouped_top_k`).
      scorer: how the [user_batch, I_pad] score matrix is made and masked.
        'blas': numpy's matmul (OpenBLAS) into one aligned buffer per call,
        masked in place with `np.put` and handed to TensorFlow through DLPack
        without a copy. On a CPU OpenBLAS's sgemm runs faster there than
        TensorFlow's (oneDNN or XLA), and the matmul is most of a full-ranking
        evaluation (README, Benchmarks: design measurements). 'tf': `tf.matmul` and
        `mask_scores` on TensorFlow's device (a GPU if there is one).
        Default: `default_scorer()`.
    """

    def __init__(self, data: Interactions, ks: Sequence[int] = (10, 20), user_batch: int = 2048,
                 group_size: int = 64, scorer: Optional[str] = None):
        self.ks = tuple(sorted(set(int(k) for k in ks)))
        self.k_max = min(self.ks[-1], data.num_items)
        self.num_items = data.num_items
        self.scorer = scorer or default_scorer()
        if self.scorer not in ("blas", "tf"):
            raise ValueError(f"invalid scorer {self.scorer!r}: expected 'blas' or 'tf'")
        # Groups never larger than the catalogue, and k_max groups must exist.
        self.group = max(1, min(int(group_size), data.num_items // self.k_max))
        self.padded_items = -(-self.num_items // self.group) * self.group
        self.users = np.unique(data.test_users).astype(np.int32)           # [U_eval]
        self.num_test = np.bincount(data.test_users, minlength=data.num_users)[self.users]
        self.user_batch = int(user_batch)
        train = _pairs_by_user_batch(data.train_users, data.train_items, self.users, self.user_batch)
        test = _pairs_by_user_batch(data.test_users, data.test_items, self.users, self.user_batch)
        self._masks = []
        for b, (train_pairs, test_pairs) in enumerate(zip(train, test)):
            rows = min(self.user_batch, self.users.size - b * self.user_batch)
            masks = _batch_masks(train_pairs, test_pairs, rows, self.num_items, self.padded_items)
            if self.scorer == "tf":
                masks = masks._replace(masked_keys=tf.constant(masks.masked_keys))
            self._masks.append(masks)
        self._test_items = data.test_items
        self._test_users = data.test_users
        matrix, keys = tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None], tf.int64)
        self._top_k_fn = tf.function(self._masked_top_k, input_signature=[matrix, keys])
        self._tf_fn = tf.function(self._tf_top_k, input_signature=[matrix, matrix, keys, keys])

    def _masked_top_k(self, scores, test_keys):
        """[b, I_pad] masked scores -> ([b, K] ids, [b, K] hits)."""
        top = grouped_top_k(scores, self.k_max, self.group)
        return top, _contains(test_keys, _row_keys(top, self.padded_items))

    def _tf_top_k(self, user_emb, item_emb_t, masked_keys, test_keys):
        """[b, d] users, [d, I_pad] items (padding columns zero) -> ([b, K] ids, [b, K] hits)."""
        scores = mask_scores(tf.matmul(user_emb, item_emb_t), masked_keys)   # [b, I_pad]
        return self._masked_top_k(scores, test_keys)

    def top_k(self, user_embeddings, item_embeddings) -> Tuple[np.ndarray, np.ndarray]:
        """-> ([U_eval, K_max] int32 ranked item ids, [U_eval, K_max] bool hits)."""
        # Items as [d, I_pad], padding columns zero.
        if self.scorer == "tf":                     # stays on TensorFlow's device
            item_emb = tf.convert_to_tensor(item_embeddings, tf.float32)
            item_emb_t = tf.transpose(tf.pad(item_emb, [[0, self.padded_items - self.num_items], [0, 0]]))
            user_emb = tf.convert_to_tensor(user_embeddings, tf.float32)
        else:
            item_emb = np.asarray(item_embeddings, np.float32)
            item_emb_t = np.zeros((item_emb.shape[1], self.padded_items), np.float32)
            item_emb_t[:, :self.num_items] = item_emb.T
            user_emb = np.asarray(user_embeddings, np.float32)
            # One [user_batch, I_pad] buffer per call, freed on return.
            buffer = _aligned_empty((min(self.user_batch, self.users.size), self.padded_items))
        tops, hits = [], []
        for b, masks in enumerate(self._masks):
            users = self.users[b * self.user_batch:(b + 1) * self.user_batch]
            if self.scorer == "tf":
                top, hit = self._tf_fn(tf.gather(user_emb, users), item_emb_t, masks.masked_keys,
                                       masks.test_keys)
            else:
                scores = buffer[:users.size]
                np.matmul(user_emb[users], item_emb_t, out=scores)
                np.put(scores, masks.masked_keys, -np.inf)
                # The tensor aliases the buffer: its results are read (numpy())
                # before the next batch overwrites it.
                top, hit = self._top_k_fn(tf.experimental.dlpack.from_dlpack(scores.__dlpack__()),
                                          masks.test_keys)
            tops.append(top.numpy())
            hits.append(hit.numpy())
        return np.concatenate(tops), np.concatenate(hits)

    def evaluate(self, user_embeddings, item_embeddings) -> Dict[str, float]:
        """-> {'recall@K': ..., 'ndcg@K': ... for each K, 'eval_seconds': ...}."""
        start = time.perf_counter()
        _, hits = self.top_k(user_embeddings, item_embeddings)
        metrics = metrics_from_hits(hits, self.num_test, self.ks)
        metrics["eval_seconds"] = time.perf_counter() - start
        return metrics

    def recall_by_item_group(self, user_embeddings, item_embeddings, item_group: np.ndarray,
                             k: int = 20) -> Dict[int, Tuple[float, int]]:
        """Recall@k restricted to each item group (e.g. item-degree bins).

        item_group: [num_items] int group of each item (-1: in no group). For
        group g and user u with test items T_u^g = T_u ∩ g (non-empty):
        recall_g(u) = |top-k(u) ∩ T_u^g| / |T_u^g|; averaged over such users.
        Returns {g: (mean recall, number of users)}.
        """
        top, _ = self.top_k(user_embeddings, item_embeddings)
        return recall_by_group(top[:, :k], self.users, self._test_users, self._test_items, item_group)
