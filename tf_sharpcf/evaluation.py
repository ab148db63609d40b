"""Full-ranking evaluation: Recall@K and NDCG@K with training items excluded.

For every user with at least one test item, all items are scored (a batched
user x item matmul), the user's training items are set to -inf, and the top
K_max items are taken with `tf.math.top_k`. With T_u the user's test items and
hit_r = 1 if the item at rank r (0-based) is in T_u:

  Recall@K = Σ_{r<K} hit_r / |T_u|
  NDCG@K   = Σ_{r<K} hit_r / log2(r + 2)  /  Σ_{r<min(|T_u|, K)} 1 / log2(r + 2)

each averaged over those users.
"""
from __future__ import annotations

import time
from typing import Dict, Sequence, Tuple

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


class Evaluator:
    """Ranks every item for every test user of `data`.

    Args:
      data: the split; `data.test_*` are the targets, `data.train_*` are masked.
      ks: cut-offs K (K_max = max(ks) items are retrieved).
      user_batch: users scored per matmul ([user_batch, num_items] floats).
    """

    def __init__(self, data: Interactions, ks: Sequence[int] = (10, 20), user_batch: int = 2048):
        self.ks = tuple(sorted(set(int(k) for k in ks)))
        self.k_max = min(self.ks[-1], data.num_items)
        self.num_items = data.num_items
        self.users = np.unique(data.test_users).astype(np.int32)           # [U_eval]
        self.num_test = np.bincount(data.test_users, minlength=data.num_users)[self.users]
        self.user_batch = int(user_batch)
        self._train = _pairs_by_user_batch(data.train_users, data.train_items, self.users, self.user_batch)
        self._test = _pairs_by_user_batch(data.test_users, data.test_items, self.users, self.user_batch)
        self._test_items = data.test_items
        self._test_users = data.test_users
        self._top_k_fn = tf.function(self._top_k, jit_compile=True)
        matrix, pairs = tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None, 2], tf.int32)
        self._batch_fn = tf.function(self._batch_top_k, input_signature=[matrix, matrix, pairs, pairs])

    def _batch_top_k(self, user_emb, item_emb, train_pairs, test_pairs):
        """[b, d] users, [I, d] items, [n, 2] masks -> ([b, K] item ids, [b, K] hits)."""
        scores = tf.matmul(user_emb, item_emb, transpose_b=True)                 # [b, I]
        scores = tf.tensor_scatter_nd_update(
            scores, train_pairs, tf.fill(tf.shape(train_pairs)[:1], -np.inf))
        top = self._top_k_fn(scores)                                             # [b, K]
        is_test = tf.scatter_nd(test_pairs, tf.ones(tf.shape(test_pairs)[:1], tf.bool), tf.shape(scores))
        hits = tf.gather(is_test, top, batch_dims=1)
        return top, hits

    def _top_k(self, scores):
        """[b, I] -> [b, K] indices; XLA's CPU top-k measured ~2x faster than TF's.

        Compiled per distinct b (at most two: full and last user batch)."""
        return tf.math.top_k(scores, k=self.k_max, sorted=True).indices

    def top_k(self, user_embeddings, item_embeddings) -> Tuple[np.ndarray, np.ndarray]:
        """-> ([U_eval, K_max] int32 ranked item ids, [U_eval, K_max] bool hits)."""
        item_emb = tf.convert_to_tensor(item_embeddings)
        user_emb = tf.convert_to_tensor(user_embeddings)
        tops, hits = [], []
        for b, (train_pairs, test_pairs) in enumerate(zip(self._train, self._test)):
            users = self.users[b * self.user_batch:(b + 1) * self.user_batch]
            top, hit = self._batch_fn(tf.gather(user_emb, users), item_emb, train_pairs, test_pairs)
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
