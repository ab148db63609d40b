"""Full-ranking evaluation: Recall@K and NDCG@K with training items excluded.

For every user with at least one test item, all items are scored (a batched
user x item matmul), the user's training items are excluded, and the top
K_max items are taken exactly (`masked_top_k`: a two-stage top-k that never
copies the [users, items] score matrix). With T_u the user's test items and
hit_r = 1 if the item at rank r (0-based) is in T_u:

  Recall@K = Σ_{r<K} hit_r / |T_u|
  NDCG@K   = Σ_{r<K} hit_r / log2(r + 2)  /  Σ_{r<min(|T_u|, K)} 1 / log2(r + 2)

each averaged over those users.
"""
from __future__ import annotations

import time
from typing import Dict, NamedTuple, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tf_sharpcf.datasets import Interactions


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
    """One user batch's precomputed masks (numpy, built once per Evaluator).

    With I_pad = the item count padded to a multiple of the group size g and
    G = I_pad / g groups; a key is row * I_pad + item.
      masked_keys: [n_m + 1] int64 sorted keys of the rows' training items and
                   of the padding columns, then the sentinel.
      touched:     [n_t, 2] int32 (row, group) of every group holding a masked key.
      in_touched:  [n_m, 2] int32 (index into touched, item mod g) of each masked key.
      test_keys:   [n_test + 1] int64 sorted keys of the rows' test items, then the sentinel.
    """
    masked_keys: np.ndarray
    touched: np.ndarray
    in_touched: np.ndarray
    test_keys: np.ndarray


def _batch_masks(train_pairs: np.ndarray, test_pairs: np.ndarray, rows: int, num_items: int,
                 group: int) -> _BatchMasks:
    padded = -(-num_items // group) * group
    pad_items = np.arange(num_items, padded)
    row = np.concatenate([train_pairs[:, 0], np.repeat(np.arange(rows), pad_items.size)]).astype(np.int64)
    item = np.concatenate([train_pairs[:, 1], np.tile(pad_items, rows)]).astype(np.int64)
    keys = np.unique(row * padded + item)
    row, item = keys // padded, keys % padded
    touched_keys, which = np.unique(row * (padded // group) + item // group, return_inverse=True)
    touched = np.stack([touched_keys // (padded // group), touched_keys % (padded // group)], 1)
    in_touched = np.stack([which.reshape(-1), item % group], 1)
    test_keys = np.unique(test_pairs[:, 0].astype(np.int64) * padded + test_pairs[:, 1])
    return _BatchMasks(np.append(keys, _SENTINEL), touched.astype(np.int32), in_touched.astype(np.int32),
                       np.append(test_keys, _SENTINEL))


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


def masked_top_k(scores, k: int, group: int, masks) -> tf.Tensor:
    """Exact top-k of each row of `scores` with masked entries excluded.

    scores: [b, I_pad] float32, I_pad a multiple of `group` (g); masks: the
    batch's `_BatchMasks` as tensors. Returns [b, k] int32 column indices in
    rank order, ties broken towards the lower index as `tf.math.top_k` does.

    Two stages instead of one top-k over I_pad columns: (1) the maximum of each
    group of g consecutive columns, corrected for masked entries by re-reducing
    only the groups that hold one; the top-k elements lie in the k groups with
    the largest maxima (any element outside them has k larger group maxima
    above it). (2) top-k over those k·g candidates, masked entries set to -inf.
    Only the matmul's output is touched in full, once, by the reduction.
    """
    masked_keys, touched, in_touched, _ = masks
    b, i_pad = tf.shape(scores)[0], tf.shape(scores)[1]
    grouped = tf.reshape(scores, [b, i_pad // group, group])                 # [b, G, g]
    group_max = tf.reduce_max(grouped, axis=2)                               # [b, G]
    touched_values = tf.gather_nd(grouped, touched)                          # [n_t, g]
    touched_values = tf.tensor_scatter_nd_update(
        touched_values, in_touched, tf.fill(tf.shape(in_touched)[:1], -np.inf))
    group_max = tf.tensor_scatter_nd_update(group_max, touched, tf.reduce_max(touched_values, axis=1))
    groups = tf.sort(tf.math.top_k(group_max, k).indices, axis=1)            # [b, k], ascending
    candidates = tf.reshape(tf.gather(grouped, groups, batch_dims=1), [b, k * group])
    columns = tf.reshape(groups[:, :, None] * group + tf.range(group)[None, None, :], [b, k * group])
    masked = _contains(masked_keys, _row_keys(columns, i_pad))
    candidates = tf.where(masked, tf.constant(-np.inf, scores.dtype), candidates)
    best = tf.math.top_k(candidates, k).indices                              # [b, k]
    return tf.gather(columns, best, batch_dims=1)


class Evaluator:
    """Ranks every item for every test user of `data`.

    Args:
      data: the split; `data.test_*` are the targets, `data.train_*` are masked.
      ks: cut-offs K (K_max = max(ks) items are retrieved).
      user_batch: users scored per matmul ([user_batch, num_items] floats).
      group_size: columns per group in the two-stage top-k (`masked_top_k`).
    """

    def __init__(self, data: Interactions, ks: Sequence[int] = (10, 20), user_batch: int = 2048,
                 group_size: int = 64):
        self.ks = tuple(sorted(set(int(k) for k in ks)))
        self.k_max = min(self.ks[-1], data.num_items)
        self.num_items = data.num_items
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
            self._masks.append(_BatchMasks(*(tf.constant(a) for a in _batch_masks(
                train_pairs, test_pairs, rows, self.num_items, self.group))))
        self._test_items = data.test_items
        self._test_users = data.test_users
        matrix, keys, pairs = (tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None], tf.int64),
                               tf.TensorSpec([None, 2], tf.int32))
        self._batch_fn = tf.function(self._batch_top_k,
                                     input_signature=[matrix, matrix, _BatchMasks(keys, pairs, pairs, keys)])

    def _batch_top_k(self, user_emb, item_emb_t, masks):
        """[b, d] users, [d, I_pad] items (padding columns zero) -> ([b, K] ids, [b, K] hits)."""
        scores = tf.matmul(user_emb, item_emb_t)                                 # [b, I_pad]
        top = masked_top_k(scores, self.k_max, self.group, masks)
        return top, _contains(masks.test_keys, _row_keys(top, self.padded_items))

    def top_k(self, user_embeddings, item_embeddings) -> Tuple[np.ndarray, np.ndarray]:
        """-> ([U_eval, K_max] int32 ranked item ids, [U_eval, K_max] bool hits)."""
        item_emb = tf.convert_to_tensor(item_embeddings, tf.float32)
        item_emb_t = tf.transpose(tf.pad(item_emb, [[0, self.padded_items - self.num_items], [0, 0]]))
        user_emb = tf.convert_to_tensor(user_embeddings, tf.float32)
        tops, hits = [], []
        for b, masks in enumerate(self._masks):
            users = self.users[b * self.user_batch:(b + 1) * self.user_batch]
            top, hit = self._batch_fn(tf.gather(user_emb, users), item_emb_t, masks)
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


def metrics_from_hits(hits: np.ndarray, num_test: np.ndarray, ks: Sequence[int]) -> Dict[str, float]:
    """hits: [U, K_max] bool in rank order; num_test: [U] |T_u| >= 1."""
    hits = hits.astype(np.float64)
    discounts = 1.0 / np.log2(np.arange(2, hits.shape[1] + 2))
    out = {}
    for k in ks:
        kk = min(k, hits.shape[1])
        recall = hits[:, :kk].sum(1) / num_test
        dcg = (hits[:, :kk] * discounts[:kk]).sum(1)
        ideal = np.cumsum(discounts[:kk])[np.minimum(num_test, kk) - 1]
        out[f"recall@{k}"] = float(recall.mean())
        out[f"ndcg@{k}"] = float((dcg / ideal).mean())
    return out


def recall_by_group(top: np.ndarray, eval_users: np.ndarray, test_users: np.ndarray,
                    test_items: np.ndarray, item_group: np.ndarray) -> Dict[int, Tuple[float, int]]:
    """top: [U, k] ranked items of eval_users -> {group: (mean recall, users)}."""
    row_of = {int(u): r for r, u in enumerate(eval_users)}
    groups = item_group[test_items]
    out = {}
    for g in np.unique(groups[groups >= 0]):
        sel = groups == g
        users, items = test_users[sel], test_items[sel]
        rows = np.array([row_of[int(u)] for u in users])
        hit = (top[rows] == items[:, None]).any(1)
        n_u = np.bincount(rows, minlength=top.shape[0])
        h_u = np.bincount(rows, weights=hit, minlength=top.shape[0])
        has = n_u > 0
        out[int(g)] = (float((h_u[has] / n_u[has]).mean()), int(has.sum()))
    return out


def degree_groups(item_degree: np.ndarray, edges: Sequence[int] = (0, 100, 200, 300)) -> np.ndarray:
    """[num_items] group index of each item's degree in [edges[g], edges[g+1]); -1 outside."""
    group = np.searchsorted(np.asarray(edges), item_degree, side="right") - 1
    group[(item_degree < edges[0]) | (item_degree >= edges[-1])] = -1
    return group
