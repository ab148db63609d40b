"""Metrics from ranked hits: Recall@k and NDCG@k by name, and per item-degree group.

`NAMES` is the metric set: `metrics_from_hits` computes each of them at every
cut-off K, and the history columns, the best-epoch checkpoint and the logs
read the set from here (`column_names`, `is_metric`).
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np

NAMES = ("recall", "ndcg")


def column_names(ks: Sequence[int]) -> List[str]:
    """['recall@10', 'ndcg@10', 'recall@20', ...]: every metric at every K, K-major."""
    return [f"{m}@{k}" for k in ks for m in NAMES]


def is_metric(column: str) -> bool:
    """True for a metric column ('ndcg@20'), False for a loss or a time."""
    name, at, k = column.partition("@")
    return bool(at) and name in NAMES and k.isdigit()


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
